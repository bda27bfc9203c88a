"""A deterministic sample of the customers of a book: train on some, score everyone.

A per-customer model does not need every customer of a book of tens of millions to learn:
``training.sample_customers = N`` trains and evaluates on about N of them. The sample is a cut of
a stable 64-bit hash of the canonical customer id, the hash :func:`serving.cluster.customer_bucket`
partitions by (``pd.util.hash_pandas_object`` of the ids as strings, pandas' fixed key): a customer
is kept when its hash is below ``f * 2**64``, with ``f = min(1, N / customers in the book)``. So

- the same book and N give the same customers in every process, machine and run;
- samples are nested: a larger N's sample holds every customer of a smaller N's (same book);
- its size is binomial: about N, with a standard deviation of ``sqrt(N * (1 - f))``;
- a customer keeps all of its rows, in every table, or none.

The customers of the book are the distinct ids of ``transactions`` and of ``customers`` up to the
end of the data (the last transaction day; a ``customers`` row acquired later, or without a
transaction, counts when ``acquired_at`` is missing or on or before that day). A customer seen only
in ``events`` is not counted, but is kept or left out by the same rule.

The functions are pure and work on a part of the book as well: on partitions that hold whole
customers, :func:`book_customer_count` of each partition adds up to that of the book (with the
book's ``data_end``), and :func:`sample_tables` of each partition is the book's sample of it
(:mod:`serving.cluster` samples that way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import Tables

__all__ = [
    "CustomerSample",
    "book_customer_count",
    "customer_hash",
    "data_end",
    "in_sample",
    "sample_customers",
    "sample_tables",
    "sample_threshold",
]

#: Size of the hash space: a customer is kept when its hash is below ``f * HASH_SPACE``.
HASH_SPACE = 2**64


def customer_hash(ids: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """The stable 64-bit hash of each canonical customer id.

    Parameters
    ----------
    ids : array-like of length n
        Customer ids; compared as strings (``"00001"`` stays ``"00001"``).

    Returns
    -------
    numpy.ndarray of uint64, shape (n,)
        The same value for the same id in every table, process and run (pandas' hash with its
        fixed key, as :func:`serving.cluster.customer_bucket`).
    """
    series = ids if isinstance(ids, pd.Series) else pd.Series(np.asarray(ids, dtype=object))
    return pd.util.hash_pandas_object(series.astype("str"), index=False).to_numpy(dtype=np.uint64)


def data_end(tables: Tables) -> pd.Timestamp | None:
    """The last day of the data: midnight of the latest transaction's day, or None without a transaction."""
    tx = tables.transactions
    if tx is None or len(tx) == 0:
        return None
    last = tx["timestamp"].max()
    return None if pd.isna(last) else pd.Timestamp(last).normalize()


def _book_ids(tables: Tables, end: pd.Timestamp | None) -> pd.Index:
    ids = [tables.transactions["customer_id"]] if tables.transactions is not None else []
    cu = tables.customers
    if cu is not None and len(cu):
        rows = cu
        if end is not None and "acquired_at" in cu.columns:
            acquired = pd.to_datetime(cu["acquired_at"])
            rows = cu[acquired.isna() | (acquired < end + pd.Timedelta(days=1))]
        ids.append(rows["customer_id"])
    if not ids:
        return pd.Index([], dtype="str")
    return pd.Index(pd.concat([i.astype("str") for i in ids], ignore_index=True).unique())


def book_customer_count(tables: Tables, *, end: pd.Timestamp | None | str = "auto") -> int:
    """The customers of the book: distinct ids of ``transactions`` and ``customers`` up to the data's end.

    Parameters
    ----------
    tables : Tables
        The book, or a part of it holding whole customers.
    end : Timestamp, None or "auto"
        The last day of the data (:func:`data_end`); ``"auto"``: that of ``tables``. A part of a
        book passes the book's, so that the counts of the parts add up to the book's.

    Returns
    -------
    int
        ``>= 0``.
    """
    if isinstance(end, str) and end == "auto":
        end = data_end(tables)
    return len(_book_ids(tables, end))


def sample_threshold(requested: int, in_book: int) -> int | None:
    """The hash bound of the sample: ``floor(f * 2**64)`` with ``f = requested / in_book``; None keeps everyone.

    Parameters
    ----------
    requested : int
        N, the customers asked for (``>= 1``).
    in_book : int
        The customers of the book (:func:`book_customer_count`, ``>= 0``).

    Returns
    -------
    int or None
        In ``[0, 2**64)``; None when ``requested >= in_book`` (f = 1).

    Raises
    ------
    ValueError
        When ``requested < 1`` or ``in_book < 0``.
    """
    if requested < 1:
        raise ValueError(f"sample_customers must be >= 1, got {requested}")
    if in_book < 0:
        raise ValueError(f"customers in the book must be >= 0, got {in_book}")
    if requested >= in_book:
        return None
    return (int(requested) * HASH_SPACE) // int(in_book)  # exact integer arithmetic: no float rounding at 2**64


def in_sample(ids: pd.Series, threshold: int | None) -> np.ndarray:
    """Whether each row's customer is in the sample of bound ``threshold`` (:func:`sample_threshold`).

    Parameters
    ----------
    ids : pandas.Series of length n
        Customer ids, one per row (repeats are hashed once).
    threshold : int or None
        The bound; None keeps every row.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
    """
    if threshold is None:
        return np.ones(len(ids), dtype=bool)
    codes, uniques = pd.factorize(pd.Series(ids).astype("str"), use_na_sentinel=True)
    kept = customer_hash(pd.Series(uniques)) < np.uint64(threshold)
    return np.where(codes >= 0, kept[np.maximum(codes, 0)], False) if len(codes) else np.zeros(0, dtype=bool)


def sample_tables(tables: Tables, threshold: int | None) -> Tables:
    """Every table cut to the customers of the sample, all of their rows, in their order.

    Parameters
    ----------
    tables : Tables
        Contract tables (``events`` and ``customers`` optional); any other columns kept.
    threshold : int or None
        :func:`sample_threshold`; None returns ``tables`` itself.

    Returns
    -------
    Tables
        Frames of the same columns and dtypes, rows of the sample's customers in input order, a
        fresh ``RangeIndex``.
    """
    if threshold is None:
        return tables

    def cut(frame):
        if frame is None:
            return None
        return frame[in_sample(frame["customer_id"], threshold)].reset_index(drop=True)

    return Tables(cut(tables.transactions), cut(tables.events), cut(tables.customers))


@dataclass(frozen=True)
class CustomerSample:
    """What a training run's sample of customers was.

    Attributes
    ----------
    requested : int
        ``training.sample_customers``: N.
    in_book : int
        Customers of the whole book (:func:`book_customer_count`).
    sampled : int
        Customers of the book in the sample: about ``min(N, in_book)``.
    threshold : int or None
        The hash bound (:func:`sample_threshold`); None: everyone.
    """

    requested: int
    in_book: int
    sampled: int
    threshold: int | None

    def message(self) -> str:
        """``training on a sample of 99,871 of 1,000,000 customers (training.sample_customers = 100000)``."""
        return (f"training on a sample of {self.sampled:,} of {self.in_book:,} customers "
                f"(training.sample_customers = {self.requested})")  # fmt: skip

    def tags(self) -> dict[str, str]:
        """MLflow tags of the run: ``sample_customers``, ``customers_in_book``, ``customers_sampled``."""
        return {"sample_customers": str(self.requested), "customers_in_book": str(self.in_book),
                "customers_sampled": str(self.sampled)}  # fmt: skip


def sample_customers(tables: Tables, requested: int) -> tuple[Tables, CustomerSample]:
    """The book cut to a deterministic sample of about ``requested`` customers, and what it was.

    Parameters
    ----------
    tables : Tables
        The whole book.
    requested : int
        N (``>= 1``); at least the book's customers keeps every row.

    Returns
    -------
    (Tables, CustomerSample)
        :func:`sample_tables` with the bound of N over the book's customers.

    Raises
    ------
    ValueError
        When ``requested < 1``.
    """
    end = data_end(tables)
    in_book = book_customer_count(tables, end=end)
    threshold = sample_threshold(requested, in_book)
    sampled = sample_tables(tables, threshold)
    count = in_book if threshold is None else book_customer_count(sampled, end=end)
    return sampled, CustomerSample(requested=int(requested), in_book=in_book, sampled=count, threshold=threshold)
