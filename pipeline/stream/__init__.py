"""The stream layer: faust topics, agents, tables, timers and HTTP around the core.

Nothing in here decides anything about crimes or incidents; it moves events
to the ledger that owns them and publishes what the ledgers say.
"""
