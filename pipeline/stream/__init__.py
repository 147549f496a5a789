"""The worker: the stream layer around the core (see docs/architecture.md)."""
