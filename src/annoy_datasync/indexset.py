"""`IndexSet`: a set of line indices (non-negative ints) held as one bit each.

The steps that resume or count by line index keep which indices they have seen here:
batched_api_inference.py (the rows already answered, `client.scan_indices`) and the run
report (`report.inference_stats`, a request counted once). A million indices cost 125 kB,
where a Python set of them would take tens of megabytes.
"""

from __future__ import annotations


class IndexSet:
    """A growable set of non-negative ints, one bit each; ``count`` is its size."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, i: int) -> bool:
        """Add `i`; False if it was already in the set."""
        if i < 0:
            raise ValueError(f"an IndexSet holds non-negative ints, not {i}")
        byte, mask = i >> 3, 1 << (i & 7)
        if byte >= len(self.bits):
            # at least double: adding indices in order costs amortised O(1)
            self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
        if self.bits[byte] & mask:
            return False
        self.bits[byte] |= mask
        self.count += 1
        return True

    def __contains__(self, i: int) -> bool:
        byte = i >> 3
        return 0 <= byte < len(self.bits) and bool(self.bits[byte] & (1 << (i & 7)))
