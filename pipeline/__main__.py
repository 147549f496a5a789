from .commands.cli import console_main

console_main()
