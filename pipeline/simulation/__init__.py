"""A simulated force: Kent-like control-room and crime-recording feeds, with
the mess real feeds have (for the demo, the benchmarks, the tests and anyone
without confidential data)."""

from .simulator import SimMessage, Simulator, default_start, generate

__all__ = ["SimMessage", "Simulator", "default_start", "generate"]
