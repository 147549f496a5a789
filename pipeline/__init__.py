"""cdiwatch: live crime-data integrity monitoring.

The decision core (``events``, ``rules``, ``ledger``) is pure and synchronous;
the stream layer (``worker`` and friends) wraps it in faust. Offline commands
import only the core.
"""

__version__ = "0.1.0"
