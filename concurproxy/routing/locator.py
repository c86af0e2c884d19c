"""A prefix locator that prefers exact knowledge over guesses.

``LayeredLocator(exact, approx, is_exact)``: for replicas where ``is_exact(replica)`` is true
(their KV-event stream is live and in sequence) the exact index's match is used, also when
it is 0; for the others the approximate index's. Pure; the predicate is the shell's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from concurproxy.routing.types import PrefixLocator


class LayeredLocator:
    def __init__(self, exact: PrefixLocator, approx: PrefixLocator, is_exact: Callable[[str], bool]) -> None:
        self.exact = exact
        self.approx = approx
        self.is_exact = is_exact

    def match(self, hashes: Sequence[int], now: float) -> Mapping[str, int]:
        out = {r: n for r, n in self.approx.match(hashes, now).items() if not self.is_exact(r)}
        for r, n in self.exact.match(hashes, now).items():
            if self.is_exact(r):
                out[r] = n
        return out
