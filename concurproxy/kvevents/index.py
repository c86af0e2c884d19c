"""Exact per-replica prefix index fed by KV cache events.

Like llm-d, the index does not trust the engine's block hashes as routing keys (they depend
on the engine's hash function, seed, LoRA and salt): it recomputes *our* chained keys
(:func:`concurproxy.routing.prefix.hash_tokens`) from each ``BlockStored``'s ``token_ids``,
continuing the chain from the parent block's keys. An engine block of ``block_size`` tokens
maps to ``block_size / block_tokens`` of our keys, so the engine's block size must be a
multiple of the router's ``block_tokens``. The engine hash is kept only to undo the block
on ``BlockRemoved``.

Dropped (and counted, per reason): blocks stored on another medium than the GPU, in another
KV cache group than 0, unaligned token counts, block sizes that are not a multiple of
``block_tokens``, and *orphans* (a parent block we never saw: we cannot chain it).

Sequence handling (``apply(replica, seq, batch)``): duplicates (``seq <= last``) are ignored;
a publisher restart (``seq == 0`` after a later one) or a gap (``seq > last + 1``, when the
shell could not replay the missing batches) clears the replica's entries — forgetting is
safe (the router falls back to its approximate index), keeping possibly-removed blocks is
not. ``match`` returns the longest run of a request's leading keys each replica holds.
Memory: at most ``max_blocks`` engine blocks per replica (oldest dropped beyond). Pure and
single-threaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from concurproxy.kvevents.decode import AllBlocksCleared, BlockRemoved, BlockStored, EngineHash, KvEventBatch
from concurproxy.routing.prefix import hash_tokens

GPU_MEDIA = frozenset({None, "GPU", "gpu"})


@dataclass(slots=True)
class ReplicaStats:
    last_seq: int | None = None
    batches: int = 0
    stored: int = 0
    removed: int = 0
    cleared: int = 0
    gaps: int = 0
    restarts: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class KvEventIndex:
    def __init__(self, block_tokens: int, max_blocks: int = 1_000_000) -> None:
        if block_tokens < 1 or max_blocks < 1:
            raise ValueError("block_tokens and max_blocks must be >= 1")
        self.block_tokens = block_tokens
        self.max_blocks = max_blocks
        self._blocks: dict[str, dict[EngineHash, tuple[int, ...]]] = {}  # engine hash -> our keys
        self._held: dict[int, dict[str, int]] = {}  # our key -> {replica: refcount}
        self.stats: dict[str, ReplicaStats] = {}

    # --- feeding ---------------------------------------------------------------------------
    def apply(self, replica: str, seq: int | None, batch: KvEventBatch) -> None:
        st = self.stats.setdefault(replica, ReplicaStats())
        if seq is not None and st.last_seq is not None:
            if seq == 0 and st.last_seq > 0:
                st.restarts += 1
                self.clear_replica(replica)
            elif seq <= st.last_seq:
                st.duplicates += 1
                return
            elif seq > st.last_seq + 1:
                st.gaps += 1
                self.clear_replica(replica)
        if seq is not None:
            st.last_seq = seq
        st.batches += 1
        for reason, n in batch.skipped.items():
            st.drop(reason, n)
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                self._stored(replica, ev, st)
            elif isinstance(ev, BlockRemoved):
                self._removed(replica, ev, st)
            elif isinstance(ev, AllBlocksCleared):
                st.cleared += 1
                self.clear_replica(replica)

    def _stored(self, replica: str, ev: BlockStored, st: ReplicaStats) -> None:
        if ev.medium not in GPU_MEDIA or ev.group_idx not in (None, 0):
            st.drop("other_tier_or_group")
            return
        bt = self.block_tokens
        n = len(ev.block_hashes)
        if n == 0 or ev.block_size <= 0 or ev.block_size % bt:
            st.drop("block_size")
            return
        if len(ev.token_ids) != n * ev.block_size:
            st.drop("unaligned")
            return
        blocks = self._blocks.setdefault(replica, {})
        parent_key: int | None = None
        if ev.parent_block_hash is not None:
            parent = blocks.get(ev.parent_block_hash)
            if not parent:
                st.drop("orphan")
                return
            parent_key = parent[-1]
        keys = hash_tokens(ev.token_ids, bt, parent=parent_key)
        per = ev.block_size // bt
        for i, h in enumerate(ev.block_hashes):
            if h in blocks:
                continue  # duplicate store of a block we hold
            own = tuple(keys[i * per : (i + 1) * per])
            blocks[h] = own
            for k in own:
                holders = self._held.setdefault(k, {})
                holders[replica] = holders.get(replica, 0) + 1
            st.stored += 1
        while len(blocks) > self.max_blocks:
            self._forget_block(replica, blocks, next(iter(blocks)))

    def _removed(self, replica: str, ev: BlockRemoved, st: ReplicaStats) -> None:
        if ev.medium not in GPU_MEDIA or ev.group_idx not in (None, 0):
            return
        blocks = self._blocks.get(replica)
        if not blocks:
            return
        for h in ev.block_hashes:
            if h in blocks:
                self._forget_block(replica, blocks, h)
                st.removed += 1

    def _forget_block(self, replica: str, blocks: dict[EngineHash, tuple[int, ...]], h: EngineHash) -> None:
        for k in blocks.pop(h):
            holders = self._held.get(k)
            if holders is None:
                continue
            left = holders.get(replica, 0) - 1
            if left > 0:
                holders[replica] = left
            else:
                holders.pop(replica, None)
                if not holders:
                    del self._held[k]

    def clear_replica(self, replica: str) -> None:
        blocks = self._blocks.pop(replica, None)
        if not blocks:
            return
        for own in blocks.values():
            for k in own:
                holders = self._held.get(k)
                if holders is not None:
                    holders.pop(replica, None)
                    if not holders:
                        del self._held[k]

    # --- querying (PrefixLocator) --------------------------------------------------------
    def match(self, hashes: Sequence[int], now: float) -> dict[str, int]:
        """``{replica: leading blocks held}`` for replicas holding at least the first block."""
        if not hashes:
            return {}
        first = self._held.get(hashes[0])
        if not first:
            return {}
        alive = set(first)
        out: dict[str, int] = {}
        for i in range(1, len(hashes)):
            holders = self._held.get(hashes[i])
            gone = alive if holders is None else {r for r in alive if r not in holders}
            for r in gone:
                out[r] = i
            alive = alive - gone
            if not alive:
                return out
        for r in alive:
            out[r] = len(hashes)
        return out

    def blocks(self, replica: str) -> int:
        return len(self._blocks.get(replica, ()))

    def keys(self) -> int:
        return len(self._held)
