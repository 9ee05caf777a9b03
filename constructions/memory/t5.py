"""T5's bucketed relative position (the paper's Table 1): exact lags first ("lin"), then log-spaced buckets ("log").

T5 (Raffel et al. 2020) maps a key-query distance to one of ``num_buckets`` buckets and learns one scalar bias per
bucket (per head). Its published code (``_relative_position_bucket`` in mesh-tensorflow / Hugging Face) for the
causal case (``bidirectional=False``) computes, for the lag ``n = query - key >= 0``::

    max_exact = num_buckets // 2
    n <  max_exact:  bucket = n
    n >= max_exact:  bucket = min(num_buckets - 1,
                                  max_exact + int(log(n / max_exact) / log(max_distance / max_exact)
                                                  * (num_buckets - max_exact)))

(bidirectional: half the buckets per direction, offset by ``num_buckets // 2`` for keys after the query). Wang & E
read the bucket index ``r(n)`` as an RPE ``-r(n)`` that is lin-type (``-n``) for short lags and log-type
(``~ -log n``) for long ones; their Table 1 tabulates it (notes §2.3, defaults 32 buckets and maximum distance 128).

Here the floor is evaluated **exactly** in integers: ``j <= K log(n/B) / log(D/B)`` iff
``n^K * B^j >= D^j * B^K`` (``B = max_exact``, ``D = max_distance``, ``K = buckets - B``); the float formula of the
published code agrees except possibly at lags where ``K log(n/B)/log(D/B)`` is an integer (rounding of ``log``).
"""

from __future__ import annotations

from typing import NamedTuple

from hmm.errors import HmmtxError


class T5Config(NamedTuple):
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = False


def check_config(num_buckets: int, max_distance: int, bidirectional: bool = False) -> T5Config:
    """Validate (``HmmtxError`` naming the value) and return the config."""
    for name, v in (("num_buckets", num_buckets), ("max_distance", max_distance)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise HmmtxError(f"{name}={v!r} must be an integer")
    per_side = num_buckets // 2 if bidirectional else num_buckets
    if per_side < 2:
        raise HmmtxError(f"num_buckets={num_buckets} too small: need at least {4 if bidirectional else 2}")
    B = per_side // 2
    if max_distance <= B:
        raise HmmtxError(f"max_distance={max_distance} must exceed the exact region's size {B} (num_buckets={num_buckets})")
    return T5Config(int(num_buckets), int(max_distance), bool(bidirectional))


def _log_bucket(n: int, B: int, D: int, K: int) -> int:
    """``B + floor(K log(n/B) / log(D/B))`` for ``n >= B``, exactly (integer comparisons), capped at ``B + K - 1``."""
    lhs = n**K
    j = 0
    # largest j with n^K * B^j >= D^j * B^K, i.e. (n/B)^K >= (D/B)^j; j <= K suffices since the cap is K - 1
    while j + 1 <= K and lhs * B ** (j + 1) >= D ** (j + 1) * B**K:
        j += 1
    return min(B + j, B + K - 1)


def relative_position_bucket(lag: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = False) -> int:
    """T5's bucket of the relative position ``key - query = -lag`` (``lag = query - key``; causal: ``lag >= 0``).

    Causal: negative lags (keys after the query) share bucket 0, as in T5 (``max(n, 0)``).
    """
    cfg = check_config(num_buckets, max_distance, bidirectional)
    if not isinstance(lag, int) or isinstance(lag, bool):
        raise HmmtxError(f"lag={lag!r} must be an integer")
    nb = cfg.num_buckets
    ret = 0
    n = lag
    if cfg.bidirectional:
        nb //= 2
        if n < 0:
            ret += nb
        n = abs(n)
    else:
        n = max(n, 0)
    B = nb // 2
    if n < B:
        return ret + n
    return ret + _log_bucket(n, B, cfg.max_distance, nb - B)


class T5Row(NamedTuple):
    lag: int
    bucket: int
    bias: int  # -r(n), the paper's "-r(t-s)"
    regime: str  # "exact (lin)", "log", "capped"


def t5_table(max_lag: int | None = None, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = False) -> list[T5Row]:
    """One row per lag ``0..max_lag`` (default ``max_distance``): bucket, ``-r(n)`` and the regime."""
    cfg = check_config(num_buckets, max_distance, bidirectional)
    if max_lag is None:
        max_lag = cfg.max_distance
    if not isinstance(max_lag, int) or isinstance(max_lag, bool) or max_lag < 0:
        raise HmmtxError(f"max_lag={max_lag!r} must be a non-negative integer")
    per_side = cfg.num_buckets // 2 if cfg.bidirectional else cfg.num_buckets
    B = per_side // 2
    rows = []
    for n in range(max_lag + 1):
        b = relative_position_bucket(n, cfg.num_buckets, cfg.max_distance, cfg.bidirectional)
        off = b - (cfg.num_buckets // 2 if cfg.bidirectional and n < 0 else 0)
        if n < B:
            regime = "exact (lin)"
        elif off == per_side - 1 and n >= cfg.max_distance:
            regime = "capped"
        else:
            regime = "log"
        rows.append(T5Row(n, b, -b, regime))
    return rows


__all__ = ["T5Config", "T5Row", "check_config", "relative_position_bucket", "t5_table"]
