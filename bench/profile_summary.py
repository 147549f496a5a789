"""Per-thread summary of a py-spy raw profile (``py-spy record -f raw --threads --idle``):
each thread's busy share and the functions its busy samples were in (own and
inclusive). Printed to stderr and written next to the profile as ``.txt``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

IDLE_LEAVES = ("select", "poll", "wait", "sleep", "acquire", "epoll")

__all__ = ["summarize"]


def summarize(folded: Path, top: int = 15) -> str:
    if not folded.exists():
        return f"no profile written ({folded}); is py-spy installed (pip install py-spy)?"
    threads: dict[str, dict] = {}
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in frames[1:]]
        th = threads.setdefault(thread, {"total": 0, "busy": 0, "self": Counter(), "incl": Counter()})
        c = int(count)
        th["total"] += c
        leaf = frames[-1] if frames else "?"
        if any(k in leaf.split(" (")[0].lower() for k in IDLE_LEAVES):
            continue
        th["busy"] += c
        th["self"][leaf] += c
        for f in set(frames):
            th["incl"][f] += c
    lines = [f"py-spy profile ({folded}); % of each thread's samples:"]
    for name, th in sorted(threads.items(), key=lambda kv: -kv[1]["busy"]):
        if not th["busy"]:
            continue
        total = th["total"]
        lines.append(f"thread {name}: busy {100 * th['busy'] / total:.0f}% of {total} samples")
        lines.append("  self (busy samples):")
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in th["self"].most_common(top)]
        lines.append("  inclusive (busy samples):")
        lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in th["incl"].most_common(top + 20)]
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    out = folded.with_suffix(".txt")
    out.write_text(text + "\n")
    return f"per-thread summary on stderr and in {out.name}"
