"""The latency histogram of the rollups: fixed log-spaced buckets whose
counts add up across rows, and the percentile estimated from them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

# --- latency histogram ------------------------------------------------------
#
# Fixed log-spaced buckets, three per doubling (each 26% wider than the last):
# counts add up across rows, so a p95 comes from any set of rollup rows, and
# the estimate always lies in the bucket holding the true nearest-rank p95.
HIST_STEPS = 3  # buckets per doubling
HIST_TOP = 19  # 2^19 ms (8.7 min): the last bucket holds everything above
HIST_BUCKETS = HIST_TOP * HIST_STEPS + 2
HIST_COLS: tuple[str, ...] = tuple(f"l{i:02d}" for i in range(HIST_BUCKETS))
# Lower bounds of buckets 1.. (bucket 0 is below 1 ms). The migration that
# backfills rollups compares with these same literals (`store.rollups.bucket_case`).
EDGES: tuple[float, ...] = tuple(2.0 ** (i / HIST_STEPS) for i in range(HIST_BUCKETS - 1))


def latency_bucket(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds."""
    if not ms >= 1.0:  # also NaN
        return 0
    return bisect.bisect_right(EDGES, ms)


def bucket_bounds(i: int) -> tuple[float, float]:
    """[low, high) of bucket i in milliseconds (high is inf for the last)."""
    low = 0.0 if i == 0 else EDGES[i - 1]
    high = math.inf if i == HIST_BUCKETS - 1 else EDGES[i]
    return low, high


def percentile(hist: Sequence[int | float], q: float = 0.95) -> float | None:
    """The q-quantile (nearest rank) estimated from bucket counts: the bucket
    holding that rank, interpolated geometrically inside it. None if empty."""
    n = sum(hist)
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0.0
    for i, count in enumerate(hist):
        if count <= 0:
            continue
        if seen + count >= rank:
            low, high = bucket_bounds(i)
            frac = (rank - seen - 0.5) / count
            if i == 0:
                return high * frac
            if math.isinf(high):
                return low
            return float(low * (high / low) ** frac)
        seen += count
    return None  # unreachable: the ranks add up to n
