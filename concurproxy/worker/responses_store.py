"""Stored Responses, kept in the worker's memory as vLLM keeps them (a bounded LRU).

vLLM holds every stored response in a dict in the replica's process (and
warns that it never frees them); the worker bounds it: at most ``capacity``
responses, the least recently used one dropped first. A dropped or unknown id
then gets a 404 (in the Responses error shape) from ``previous_response_id``
and ``GET``/``DELETE``/``cancel``. Each entry keeps the Response object as
last written and the conversation it continues into (its input as chat
messages plus its output as an assistant message), which is what a later
``previous_response_id`` prepends.

Concurrency: used only from the server's event loop; no locking.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPACITY = 4096  # one live chain per agent needs one entry; 4096 agents' chains fit


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object (its status is updated in place as the request ends)
    conversation: list[dict[str, Any]]  # chat messages, incl. the output once finished
    req_id: str  # the engine request, for cancel


@dataclass(slots=True)
class ResponseStore:
    capacity: int = DEFAULT_CAPACITY
    _items: OrderedDict[str, StoredResponse] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("the response store needs a capacity of at least 1")

    def __len__(self) -> int:
        return len(self._items)

    def responses(self) -> list[dict[str, Any]]:
        """The stored Response objects, least recently used first (for inspection; no LRU touch)."""
        return [item.response for item in self._items.values()]

    def get(self, resp_id: str) -> StoredResponse | None:
        item = self._items.get(resp_id)
        if item is not None:
            self._items.move_to_end(resp_id)
        return item

    def put(self, resp_id: str, item: StoredResponse) -> None:
        self._items[resp_id] = item
        self._items.move_to_end(resp_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def delete(self, resp_id: str) -> bool:
        return self._items.pop(resp_id, None) is not None
