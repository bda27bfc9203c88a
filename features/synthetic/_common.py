"""Machinery shared by the synthetic generators: the period, acquisition times, ids, Poisson points, time.

Private to :mod:`features.synthetic`: each generator draws its own story, these are the pieces of
arithmetic that are the same in all of them (so the same seed keeps giving the same book).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def validate_period(n_customers, start, end) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The period's first and last day as naive dates; ValueError for a bad size or period."""
    if int(n_customers) != n_customers or n_customers < 1:
        raise ValueError(f"n_customers must be a positive integer, got {n_customers!r}")
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if start_ts != start_ts.normalize() or end_ts != end_ts.normalize():
        raise ValueError(f"start and end must be dates, got {start!r} and {end!r}")
    if start_ts.tz is not None or end_ts.tz is not None:
        raise ValueError("start and end must be naive dates (UTC)")
    if end_ts < start_ts:
        raise ValueError(f"end ({end_ts.date()}) is before start ({start_ts.date()})")
    return start_ts, end_ts


def acquisition_days(rng: np.random.Generator, n: int, period_days: float, growth: float) -> np.ndarray:
    """Sorted acquisition times (days since the start) from a density growing exponentially over the period.

    Inverse CDF of a density on [0, period_days) whose last day sees ``growth`` times the
    acquisitions of the first; sorted, so that ids follow acquisition order.
    """
    g = np.log(growth)
    u = rng.random(n)
    return np.sort(period_days * (np.log1p(u * np.expm1(g)) / g if g != 0 else u))


def points(rng, rate: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Homogeneous Poisson points on [a, b) per customer: the customer index and the times."""
    width = np.maximum(b - a, 0.0)
    counts = rng.poisson(rate * width)
    idx = np.repeat(np.arange(len(rate), dtype=np.int32), counts)
    times = a[idx] + rng.random(len(idx)) * width[idx]
    return idx, times


def customer_ids(n: int) -> pa.Array:
    width = max(7, len(str(n)))
    digits = pa.array(np.arange(1, n + 1)).cast(pa.string())
    return pc.binary_join_element_wise("C", pc.utf8_lpad(digits, width, "0"), "").cast(pa.large_string())


def take_ids(values: pa.Array, index: np.ndarray) -> pd.arrays.ArrowStringArray:
    """``values[index]`` as a pandas string array.

    Casting a dictionary array decodes it in one pass, several times faster than ``take`` for a
    random index.
    """
    decoded = pa.DictionaryArray.from_arrays(pa.array(index), values).cast(pa.large_string())
    return pd.array(decoded, dtype="str")


def whole_seconds(days: np.ndarray, period_days: float | None = None) -> np.ndarray:
    """Days since the start as whole seconds, floored so that a time never moves past a bound.

    With ``period_days``, also kept below the end of the period, which float rounding of a time just
    before it could otherwise reach.
    """
    seconds = np.floor(days * 86_400).astype(np.int64)
    if period_days is not None:
        np.minimum(seconds, round(period_days * 86_400) - 1, out=seconds)
    return seconds


def seconds_to_datetime(seconds: np.ndarray, start_ns: int) -> np.ndarray:
    return (seconds * 1_000_000_000 + start_ns).view("datetime64[ns]")


def time_order(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable time order of the rows and the sorted seconds.

    Sorting the unique key ``seconds * n + row`` gives the stable order by time and is several times
    faster than a stable argsort (numpy sorts plain int64 with SIMD).
    """
    n = len(seconds)
    if n == 0 or int(seconds.max()) >= np.iinfo(np.int64).max // max(n, 1) - 1:
        order = np.argsort(seconds, kind="stable")
        return order, seconds[order]
    key = np.sort(seconds * n + np.arange(n, dtype=np.int64))
    seconds_sorted, order = np.divmod(key, n)
    return order, seconds_sorted


def timed_rows(ids: pa.Array, owner: np.ndarray, secs: np.ndarray, start_ns: int, **columns) -> pd.DataFrame:
    """Rows of customers in time order: ``customer_id``, ``timestamp`` and ``columns``.

    Parameters
    ----------
    ids : pyarrow.Array
        Customer ids, indexed by ``owner``.
    owner : ndarray of int
        Row → customer position.
    secs : ndarray of int64
        Row times, seconds since the start of the period (``start_ns``, epoch nanoseconds).
    **columns : ndarray or (labels, codes)
        Values per row; a ``(labels, codes)`` pair becomes the string ``labels[codes]``.
    """
    order, secs = time_order(secs)
    out = {"customer_id": take_ids(ids, owner[order]), "timestamp": seconds_to_datetime(secs, start_ns)}
    for name, values in columns.items():
        if isinstance(values, tuple):
            labels, codes = values
            out[name] = take_ids(pa.array(labels, type=pa.large_string()), codes[order])
        else:
            out[name] = values[order]
    return pd.DataFrame(out)


def book_settings(n_customers: int, seed: int, start: pd.Timestamp, end: pd.Timestamp, config: dict, **extra) -> dict:
    """The ``settings`` of a generated book: what was asked for, so that it can be made again."""
    return {
        **extra,
        "n_customers": int(n_customers),
        "seed": int(seed),
        "start": str(start.date()),
        "end": str(end.date()),
        "config": config,
    }
