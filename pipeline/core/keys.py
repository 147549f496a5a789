"""The keys the audit counts under: what one incident or crime adds to it.

Their own module, below both the incident state (which holds an incident's
current keys) and the tally (which moves counts between them), so that
neither imports the other for them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Contribution", "DayKey", "CrimeKey"]


class Contribution(NamedTuple):
    """What one incident adds to the audit: status and labels (§4)."""

    status: str
    category: str | None
    district: str | None  # a configured district, or None for any other
    channel: str | None
    reason: str | None    # exemption reason, for exempt incidents


class DayKey(NamedTuple):
    """A required incident's status, on the UTC day (days since 1970) it became required."""

    day: int
    status: str


class CrimeKey(NamedTuple):
    """What one crime adds to ``crimes`` in audit.v1."""

    recorded: bool
    without_incident: bool
    cancelled: bool
    cancelled_without_reason: bool
