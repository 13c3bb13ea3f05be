"""Per-token MiniLM outputs of cached questions, kept in the process for the match verifier.

The verifier aligns the query's word pieces with a candidate's. The query's come free with its
embedding; a cached question's were computed when it was stored (usually by this process), so
they are kept here, float16, bounded by bytes, least recently used out first. A candidate
missing here (stored by another replica, or evicted) is embedded once and then kept.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.float32]


class TokenStates:
    """LRU of text hash -> per-token outputs, at most `max_bytes` of arrays."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, npt.NDArray[np.float16]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Tokens | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found.astype(np.float32)

    def put(self, key: str, tokens: Tokens) -> None:
        compact = tokens.astype(np.float16)
        if compact.nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        self._bytes -= old.nbytes if old is not None else 0
        self._items[key] = compact
        self._bytes += compact.nbytes
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes
