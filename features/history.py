"""A customer's transaction history as of a cutoff, reduced to per-day arrays every feature family reads.

How it computes
---------------
Customer ids are hashed into integer positions (pyarrow ``unique`` / ``index_in``), then the rows
are sorted by customer and day once, so that every feature family is a handful of vectorised numpy
reductions (``bincount``) over the same arrays. The same code serves a million customers in a batch
and one customer in an HTTP request: no per-customer Python loop, and a customer's features do not
depend on which other customers share the batch.

Definitions
-----------
- A customer is *known* at the cutoff when they have at least one purchase in the history. Only
  known customers get a row; customers with only refunds, only events or only a ``customers`` row
  are left out (there is nothing to forecast from).
- A purchase is a transaction with ``amount >= 0``; a refund (``amount < 0``) nets against spend
  but does not make a purchase day. Purchases on one calendar day (UTC) form one *purchase day*,
  whose *value* is the sum of those purchases.
- All day counts are whole calendar days between dates (an event's date and the cutoff date).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import Tables
from features.dates import day_number, day_numbers, parse_cutoff

__all__ = [
    "History",
    "arrow_strings",
    "buyer_ids",
    "customer_blocks",
    "filter_rows",
    "isin_ids",
    "known_customers",
    "lookup",
    "no_customer_error",
    "prepare_history",
    "ratio",
]


def arrow_strings(values) -> pa.Array | pa.ChunkedArray:
    """Arrow view of a string column (zero-copy for the pandas ``str`` dtype)."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array
    arr = pa.array(values)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    return arr


def filter_rows(arr: pa.Array | pa.ChunkedArray, mask: np.ndarray) -> pa.Array | pa.ChunkedArray:
    return arr if mask.all() else pc.filter(arr, pa.array(mask))


def lookup(values: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Position in ``value_set`` of each value, -1 where absent (one hash probe per value)."""
    found = pc.index_in(values, value_set=value_set.cast(values.type))
    return np.asarray(pc.fill_null(found, -1), dtype=np.int64)


def isin_ids(values, candidates) -> np.ndarray:
    """Whether each id of ``values`` is one of ``candidates``, through Arrow's hash set (as :func:`lookup`).

    Why not the libraries' isin: numpy's compares object arrays pair by pair (minutes on 400,000
    events against 20,000 buyers), and pandas' on ``str`` columns builds a Python scalar per
    candidate (minutes at 1,000,000 customers).

    Parameters
    ----------
    values, candidates : array-like of str
        Ids (pandas Series, Index, arrays or lists; missing values never match).

    Returns
    -------
    ndarray of bool, shape (len(values),)
    """
    found = pc.is_in(arrow_strings(values), value_set=arrow_strings(candidates), skip_nulls=True)
    return np.asarray(pc.fill_null(found, False), dtype=bool)


@dataclass(frozen=True, eq=False)
class History:
    """Transactions of the known customers before the end of the cutoff day, reduced to days.

    ``p_*`` arrays describe purchase days sorted by customer then date (``p_orders``: the purchase
    transactions of each, at least 1); ``first``/``last`` index a customer's first and last purchase
    day in them. ``d_*`` arrays describe every history day of a
    customer (purchase days and refund-only days). ``key`` values are positions in ``ids``.
    """

    tables: Tables
    cutoff: dt.date
    cutoff_day: int
    ids: pd.Index
    ids_arrow: pa.Array
    p_key: np.ndarray
    p_ago: np.ndarray
    p_value: np.ndarray
    p_orders: np.ndarray
    first: np.ndarray
    last: np.ndarray
    d_key: np.ndarray
    d_ago: np.ndarray
    d_net: np.ndarray
    purchase_count: np.ndarray
    refund_count: np.ndarray
    refund_amount: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def known_customers(customer_id: pa.Array | pa.ChunkedArray, is_purchase: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Sorted ids of the customers with a purchase among the rows, and each row's position (-1: none)."""
    unique = pc.unique(filter_rows(customer_id, is_purchase))
    if isinstance(unique, pa.ChunkedArray):
        unique = unique.combine_chunks()
    ids = unique.take(pc.sort_indices(unique))
    return ids, lookup(customer_id, ids)


def buyer_ids(transactions: pd.DataFrame, cutoff) -> pa.Array:
    """Sorted ids of the customers with a purchase on or before the ``cutoff`` day: the rows of :func:`prepare_history`."""
    day = day_numbers(transactions["timestamp"], "transactions.timestamp")
    in_history = day <= day_number(parse_cutoff(cutoff))
    customer_id = filter_rows(arrow_strings(transactions["customer_id"]), in_history)
    ids, _ = known_customers(customer_id, transactions["amount"].to_numpy(dtype=np.float64)[in_history] >= 0)
    return ids


def customer_blocks(tables: Tables, ids: pa.Array, size: int, *, min_size: int = 1) -> Iterator[Tables]:
    """The tables cut into blocks of whole customers: block *b* holds every row of ``ids[b*size:(b+1)*size]``.

    Rows keep their input order; rows of customers not in ``ids`` are in no block. A customer's
    features, labels and scores depend on that customer's rows only, so a block gives its customers
    what the whole tables give them, in a memory that follows ``size``, not the book.

    Parameters
    ----------
    tables : Tables
    ids : pyarrow.Array of str
        Customers in block order (e.g. :func:`buyer_ids`).
    size : int
        Customers per block, at least ``min_size``.
    min_size : int
        A last block of fewer customers joins the one before it (when there is one).
    """
    if size < max(min_size, 1):
        raise ValueError(f"customers per block must be at least {max(min_size, 1)}, got {size}")
    frames = [tables.transactions, tables.events, tables.customers]
    n_blocks = -(-len(ids) // size)
    if n_blocks > 1 and 0 < len(ids) % size < min_size:
        n_blocks -= 1
    # Each row's block, computed once (4 bytes a row); -1: not one of ids.
    blocks = []
    for frame in frames:
        if frame is None:
            blocks.append(None)
            continue
        position = lookup(arrow_strings(frame["customer_id"]), ids)
        blocks.append(np.where(position >= 0, np.minimum(position // size, n_blocks - 1), -1).astype(np.int32))
        del position
    for b in range(n_blocks):
        yield Tables(*(
            None if frame is None else frame.iloc[np.flatnonzero(block == b)].reset_index(drop=True)
            for frame, block in zip(frames, blocks, strict=True)
        ))  # fmt: skip


def no_customer_error(transactions: pd.DataFrame, cutoff: dt.date) -> ValueError:
    purchases = transactions.loc[transactions["amount"] >= 0, "timestamp"]
    first = f"the first purchase is on {purchases.min().date()}" if len(purchases) else "there is no purchase at all"
    return ValueError(f"cutoff {cutoff}: no customer has a purchase on or before the cutoff day; {first}")


def prepare_history(tables: Tables, cutoff) -> History:
    """The history of every customer known at ``cutoff``, reduced to the per-day arrays of :class:`History`.

    Parameters
    ----------
    tables : Tables
        Contract tables (normalised dtypes); only ``transactions`` is read here (families read the
        others through ``History.tables``).
    cutoff : date-like
        Last day of history (:func:`features.dates.parse_cutoff`).

    Returns
    -------
    History
        Customers sorted by id; rows after the cutoff day are ignored.

    Raises
    ------
    ValueError
        If the transactions table is empty or no customer has a purchase on or before the cutoff day.
    TypeError
        If a timestamp column is not ``datetime64`` (tables not read through :mod:`features.io`).
    """
    cutoff = parse_cutoff(cutoff)
    cutoff_day = day_number(cutoff)
    tx = tables.transactions
    if tx is None or len(tx) == 0:
        raise ValueError("transactions: rule 'at least one row': the table is empty")
    day = day_numbers(tx["timestamp"], "transactions.timestamp")
    amount = tx["amount"].to_numpy(dtype=np.float64)
    customer_id = arrow_strings(tx["customer_id"])
    in_history = day <= cutoff_day
    if not in_history.all():
        customer_id = filter_rows(customer_id, in_history)
        day, amount = day[in_history], amount[in_history]
    ids_arrow, key = known_customers(customer_id, amount >= 0)
    if len(ids_arrow) == 0:
        raise no_customer_error(tx, cutoff)
    n = len(ids_arrow)
    ids = pd.Index(pd.array(ids_arrow, dtype="str"), name="customer_id")
    known = key >= 0
    if not known.all():
        key, day, amount = key[known], day[known], amount[known]

    # Sort by (customer, day) through one int64 key. Stable, so the rows of a day keep their input
    # order and a customer's sums come out bit-identical whatever else is in the batch.
    day_min = int(day.min())
    span = int(day.max()) - day_min + 1
    if n * span < 2**62:
        composite = key * span + (day - day_min)
        order = np.argsort(composite, kind="stable")
        composite = composite[order]
        is_start = np.r_[True, composite[1:] != composite[:-1]]
        day_start = composite[is_start]
        d_key, d_day = day_start // span, day_start % span + day_min
        del composite, day_start
    else:  # a span of centuries over many customers: slower, but cannot overflow
        order = np.lexsort((day, key))
        key_s, day_s = key[order], day[order]
        is_start = np.r_[True, (key_s[1:] != key_s[:-1]) | (day_s[1:] != day_s[:-1])]
        d_key, d_day = key_s[is_start], day_s[is_start]
    amount_s = amount[order]
    del order
    # Row -> day index; bincount sums each day's rows in order (much faster than reduceat when most
    # days hold one row).
    day_index = np.cumsum(is_start) - 1
    n_days = d_key.size
    is_purchase_s = amount_s >= 0
    d_net = np.bincount(day_index, weights=amount_s, minlength=n_days)
    d_value = np.bincount(day_index, weights=np.where(is_purchase_s, amount_s, 0.0), minlength=n_days)
    d_purchases = np.bincount(day_index[is_purchase_s], minlength=n_days)
    del day_index, amount_s, is_purchase_s

    is_refund = amount < 0
    is_pday = d_purchases > 0
    p_key = d_key[is_pday]
    # Every known customer has at least one purchase day, so the runs of p_key are exactly 0..n-1.
    first = np.flatnonzero(np.r_[True, p_key[1:] != p_key[:-1]])
    last = np.r_[first[1:] - 1, p_key.size - 1]
    return History(
        tables=tables,
        cutoff=cutoff,
        cutoff_day=cutoff_day,
        ids=ids,
        ids_arrow=ids_arrow,
        p_key=p_key,
        p_ago=cutoff_day - d_day[is_pday],
        p_value=d_value[is_pday],
        p_orders=d_purchases[is_pday].astype(np.int64),
        first=first,
        last=last,
        d_key=d_key,
        d_ago=cutoff_day - d_day,
        d_net=d_net,
        purchase_count=np.bincount(d_key, weights=d_purchases, minlength=n).astype(np.int64),
        refund_count=np.bincount(key[is_refund], minlength=n).astype(np.int64),
        refund_amount=-np.bincount(key[is_refund], weights=amount[is_refund], minlength=n) + 0.0,
    )


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out
