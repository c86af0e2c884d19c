"""Paged KV block pool with prefix caching (the vLLM V1 ``BlockPool`` model).

Algorithm
---------
The KV cache is ``num_blocks`` fixed-size blocks. A block is either *in use*
(``ref_count > 0``: some running request's KV lives in it; several requests
can share a cached prefix block) or *free*. Free blocks sit in one LRU queue;
allocation takes from its head. A free block may still hold a *cached* prefix
(it has a hash and is findable through :meth:`lookup`) until allocation
reuses it — that is the eviction. Freed blocks are appended to the tail, so
the blocks freed longest ago are evicted first; callers free a request's
blocks tail-first so that a prefix's later blocks go before its earlier ones
(vLLM does the same). Free blocks with no hash carry nothing worth keeping
and go to the head of the queue.

``usage = 1 - free / num_blocks`` — cached-but-free blocks count as free, as
in vLLM's ``vllm:kv_cache_usage_perc``.

Invariants (checked by the tests): ``in_use + free == num_blocks``; a block is
never both free and referenced; ``cached[h] == b`` implies ``hash(b) == h``;
allocation never hands out a block that is in use.

Concurrency: none; one owner (the engine) calls it from one thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence


class OutOfBlocks(Exception):
    """Raised by :meth:`BlockPool.allocate` when fewer free blocks remain than asked for."""


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError("num_blocks must be positive")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self._ref = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}
        self.evictions = 0  # cached blocks reused for new content
        self.on_evict: Callable[[int], None] | None = None  # told each evicted block's hash (KV events)

    # -- queries -----------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def block_hash(self, block: int) -> int | None:
        return self._hash[block]

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._cached

    def is_free(self, block: int) -> bool:
        return block in self._free

    def lookup(self, hashes: Sequence[int]) -> list[int]:
        """Blocks holding the longest cached prefix of ``hashes`` (chained hashes)."""
        if not self.enable_caching:
            return []
        out: list[int] = []
        for h in hashes:
            b = self._cached.get(h)
            if b is None:
                break
            out.append(b)
        return out

    # -- mutations ---------------------------------------------------------
    def touch(self, blocks: Iterable[int]) -> None:
        """Take a reference on cached blocks (a prefix hit); free ones leave the free queue."""
        for b in blocks:
            if self._ref[b] == 0:
                del self._free[b]
            self._ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` blocks from the head of the free queue, evicting their cached content."""
        if n > len(self._free):
            raise OutOfBlocks(f"need {n} blocks, {len(self._free)} free")
        out: list[int] = []
        for _ in range(n):
            b, _ = self._free.popitem(last=False)
            h = self._hash[b]
            if h is not None:
                if self._cached.get(h) == b:
                    del self._cached[h]
                    if self.on_evict is not None:
                        self.on_evict(h)
                self._hash[b] = None
                self.evictions += 1
            self._ref[b] = 1
            out.append(b)
        return out

    def cache(self, block: int, block_hash: int) -> bool:
        """Register a full, computed block under its chained hash (first writer wins); True if it was new."""
        if not self.enable_caching or self._hash[block] is not None:
            return False
        if block_hash in self._cached:
            return False  # identical content already cached in another block: keep that one
        self._cached[block_hash] = block
        self._hash[block] = block_hash
        return True

    def free(self, blocks: Iterable[int]) -> None:
        """Drop one reference from each block; blocks reaching zero join the free queue.

        Pass a request's blocks in reverse order so its tail is evicted first.
        """
        for b in blocks:
            if self._ref[b] <= 0:
                raise ValueError(f"block {b} freed more often than taken")
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None
                if self._hash[b] is None:
                    self._free.move_to_end(b, last=False)

    def check(self) -> None:
        """Assert the invariants (tests and debugging)."""
        in_use = sum(1 for r in self._ref if r > 0)
        assert in_use + len(self._free) == self.num_blocks, "in-use + free != total"
        for b in self._free:
            assert self._ref[b] == 0, f"free block {b} is referenced"
        for h, b in self._cached.items():
            assert self._hash[b] == h, f"cache map entry {h} -> {b} disagrees with the block"
