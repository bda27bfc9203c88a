"""Who the customers are at a cutoff: every customer the tables know, and of which kind.

The feature rows of :func:`features.build.build_features` cover the *buyers* only (customers with a
purchase, amount >= 0, by the cutoff). The tables know more customers than that: a ``customers``
row acquired before the cutoff who never bought, a customer seen only in ``events``, one whose only
transactions are refunds. :func:`customer_population` names every one of them with its kind, so
that scoring can score or count them and the budget can count their acquisition cost; nobody is
lost between the tables and the outputs.

Kinds (:data:`KINDS`)
---------------------
``buyer``
    At least one purchase (amount >= 0) on or before the cutoff day: has feature rows.
``refund_only``
    Transactions by the cutoff, every one a refund (amount < 0).
``events_only``
    No transaction by the cutoff, at least one event.
``no_activity``
    A ``customers`` row acquired on or before the cutoff day, without transactions or events by then.
``acquired_after_cutoff``
    Acquired after the cutoff day (``customers.acquired_at``, else the first transaction), without
    activity by then: not yet a customer.
``unknown_acquisition``
    A ``customers`` row without ``acquired_at`` and without activity by the cutoff: whether it was a
    customer then cannot be told.

The first four are *known at the cutoff*; the last two are not, and are only counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import day_number, day_numbers, parse_cutoff
from features.history import isin_ids

__all__ = ["KINDS", "KNOWN_KINDS", "PROSPECT_KINDS", "customer_population", "has_buyer"]

#: Every kind of :func:`customer_population`, in report order.
KINDS = ("buyer", "refund_only", "events_only", "no_activity", "acquired_after_cutoff", "unknown_acquisition")
#: Kinds of the customers known at the cutoff (acquired by then): they count in CAC and cohorts.
KNOWN_KINDS = ("buyer", "refund_only", "events_only", "no_activity")
#: Known customers without a purchase: scored as prospects, not by the buyer models.
PROSPECT_KINDS = ("refund_only", "events_only", "no_activity")


def customer_population(
    tables: Tables, *, cutoff, engagement_days: int = 90, undated_known: bool = False
) -> pd.DataFrame:
    """Every customer of the tables at ``cutoff``, with its kind, acquisition and recent engagement.

    Parameters
    ----------
    tables : Tables
        Contract tables (normalised dtypes); ``events`` and ``customers`` optional. Rows after the
        cutoff day are read only to tell ``acquired_after_cutoff`` apart (never for a value).
    cutoff : date-like
        Last day of history (:func:`features.dates.parse_cutoff`).
    engagement_days : int
        Window of ``recent_events``: events in the ``engagement_days`` days up to the end of the
        cutoff day.
    undated_known : bool
        Whether a ``customers`` row without ``acquired_at`` and without any transaction is a
        customer at the cutoff (``no_activity``) rather than ``unknown_acquisition``: true where
        the rows are customers by construction (a ``POST /clv`` request names its customers).

    Returns
    -------
    DataFrame
        Indexed by ``customer_id`` (string, sorted), one row per id found in any table, columns
        ``kind`` (one of :data:`KINDS`), ``acquired_at`` (``datetime64[ns]``, midnight: the
        ``customers`` value, else the first transaction, else the first event, by the cutoff; NaT
        when unknown), ``channel`` (string, missing when unknown) and ``recent_events`` (int, events
        in the engagement window).
    """
    end = pd.Timestamp(parse_cutoff(cutoff)) + pd.Timedelta(days=1)
    tx = tables.transactions
    tx = tx.loc[(tx["timestamp"] < end).to_numpy(), ["customer_id", "timestamp", "amount"]]
    events = tables.events
    if events is not None and len(events):
        events = events.loc[(events["timestamp"] < end).to_numpy(), ["customer_id", "timestamp"]]
    else:
        events = pd.DataFrame({"customer_id": pd.array([], dtype="str"), "timestamp": pd.Series([], dtype="M8[ns]")})
    customers = tables.customers
    if customers is None:
        customers = pd.DataFrame({"customer_id": pd.array([], dtype="str")})

    ids = _all_ids(tables, events, customers)
    tx_by = tx.groupby("customer_id", sort=False, observed=True)
    first_tx = tx_by["timestamp"].min().reindex(ids)
    ev_by = events.groupby("customer_id", sort=False, observed=True)["timestamp"]
    first_event = ev_by.min().reindex(ids)
    recent = events.loc[(events["timestamp"] >= end - pd.Timedelta(days=engagement_days)).to_numpy(), "customer_id"]
    recent_events = recent.value_counts().reindex(ids, fill_value=0).to_numpy(dtype=np.int64)

    by_id = customers.drop_duplicates("customer_id").set_index("customer_id")
    acquired_given = (
        by_id["acquired_at"].reindex(ids).astype("datetime64[ns]")
        if "acquired_at" in by_id.columns
        else pd.Series(pd.NaT, index=ids, dtype="datetime64[ns]")
    )
    channel = (
        by_id["channel"].reindex(ids).astype("str")
        if "channel" in by_id.columns
        else pd.Series(pd.array([None] * len(ids), dtype="str"), index=ids)
    )

    has_tx = first_tx.notna().to_numpy()
    has_events = first_event.notna().to_numpy()
    bought = isin_ids(ids, tx.loc[(tx["amount"] >= 0).to_numpy(), "customer_id"])
    given = acquired_given.notna().to_numpy()
    acquired_by_cutoff = given & (acquired_given < end).to_numpy()
    # Without acquired_at, a first transaction after the cutoff is the acquisition (contract default).
    later = ~given & isin_ids(ids, tables.transactions["customer_id"])
    kind = np.select(
        [
            bought,
            has_tx,
            has_events,
            acquired_by_cutoff | (undated_known & ~given & ~later),
            given | later,
        ],
        ["buyer", "refund_only", "events_only", "no_activity", "acquired_after_cutoff"],
        default="unknown_acquisition",
    )
    acquired = acquired_given.where(given, first_tx.where(has_tx, first_event))
    return pd.DataFrame(
        {
            "kind": kind.astype(object),
            "acquired_at": pd.DatetimeIndex(acquired).normalize(),
            "channel": channel.to_numpy(),
            "recent_events": recent_events,
        },
        index=ids,
    )


def _all_ids(tables: Tables, events: pd.DataFrame, customers: pd.DataFrame) -> pd.Index:
    """Sorted distinct ids of the transactions (all of them), events by the cutoff and customers."""
    parts = [tables.transactions["customer_id"], events["customer_id"], customers["customer_id"]]
    values = pd.concat([p.astype("str") for p in parts], ignore_index=True).dropna().unique()
    return pd.Index(np.sort(np.asarray(values, dtype=object)), dtype="str", name="customer_id")


def has_buyer(tables: Tables, cutoff) -> bool:
    """Whether a customer of these tables has a purchase (amount >= 0) by the end of the cutoff day.

    The features and labels of a cutoff need one; a customer partition of a cluster may have none.
    """
    tx = tables.transactions
    day = day_numbers(tx["timestamp"], "transactions.timestamp")
    return bool(((day <= day_number(parse_cutoff(cutoff))) & (tx["amount"].to_numpy(float) >= 0)).any())
