"""The board index: every incident the cluster says needs attention, ready to page.

``GET /incidents`` must answer a page within a second with 200,000 open
incidents, whichever worker is asked, filtered by status, district and
category. Entries are kept in sorted lists (sortedcontainers: insertion
O(log n), index O(log n)) per status, twice: by (deadline, incident id), the
contract's order, and by harm then deadline, the board's order
(:func:`~pipeline.core.vocabulary.harm_rank`). An unfiltered page is a slice;
a filtered one a walk in order, counting the matches for ``X-Total-Count``.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterator

from sortedcontainers import SortedList

from ..core.incident import BoardEntry
from ..core.vocabulary import harm_rank

__all__ = ["BoardIndex", "BOARD_STATUSES", "SORTS"]

BOARD_STATUSES = ("overdue", "at_risk", "pending", "downgraded")
SORTS = ("deadline", "harm")


def _harm_key(e: BoardEntry) -> tuple:
    return (*harm_rank(e.category, e.flags), e.deadline, e.incident_id)


class BoardIndex:
    """Board entries by incident id, and in order per status (see the module doc)."""

    def __init__(self) -> None:
        self.entries: dict[str, BoardEntry] = {}
        self._by_deadline = {s: SortedList() for s in BOARD_STATUSES}
        self._by_harm = {s: SortedList() for s in BOARD_STATUSES}

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, entry: BoardEntry) -> None:
        if entry.status not in self._by_deadline:
            return
        self.remove(entry.incident_id)
        self.entries[entry.incident_id] = entry
        self._by_deadline[entry.status].add((entry.deadline, entry.incident_id))
        self._by_harm[entry.status].add(_harm_key(entry))

    def remove(self, incident_id: str) -> None:
        old = self.entries.pop(incident_id, None)
        if old is not None:
            self._by_deadline[old.status].discard((old.deadline, incident_id))
            self._by_harm[old.status].discard(_harm_key(old))

    def count(self, status: str) -> int:
        return len(self._by_deadline[status])

    def _ordered(self, statuses: tuple[str, ...], sort: str) -> Iterator[str]:
        """Incident ids in order, status by status."""
        index = self._by_harm if sort == "harm" else self._by_deadline
        if len(statuses) == 1:
            for key in index[statuses[0]]:
                yield key[-1]
            return
        # several statuses: one order across them (a merge of sorted lists)
        import heapq
        yield from (key[-1] for key in heapq.merge(*(index[s] for s in statuses)))

    def page(self, statuses: tuple[str, ...], district: str | None = None, category: str | None = None,
             limit: int = 500, offset: int = 0, sort: str = "deadline") -> tuple[int, list[BoardEntry]]:
        """(total matching, the page) in ``sort`` order."""
        entries = self.entries
        if district is None and category is None:
            total = sum(self.count(s) for s in statuses)
            if len(statuses) == 1:
                index = (self._by_harm if sort == "harm" else self._by_deadline)[statuses[0]]
                keys = index[offset:offset + limit]
                return total, [entries[k[-1]] for k in keys]
            ids = islice(self._ordered(statuses, sort), offset, offset + limit)
            return total, [entries[i] for i in ids]
        total, out = 0, []
        for incident_id in self._ordered(statuses, sort):
            e = entries[incident_id]
            if (district is None or e.district == district) and (category is None or e.category == category):
                if offset <= total < offset + limit:
                    out.append(e)
                total += 1
        return total, out

    def facets(self) -> dict[str, dict[str, int]]:
        """Districts and categories present, with counts (for the board's filters)."""
        districts: dict[str, int] = {}
        categories: dict[str, int] = {}
        for e in self.entries.values():
            if e.district is not None:
                districts[e.district] = districts.get(e.district, 0) + 1
            if e.category is not None:
                categories[e.category] = categories.get(e.category, 0) + 1
        return {"districts": districts, "categories": categories}
