"""Labels over the horizon after a cutoff: churn, spend and purchase days in the label window.

The label window of a cutoff is ``(cutoff, cutoff + horizon_days]``: the dates ``cutoff + 1`` through
``cutoff + horizon_days``, both included. A purchase on the cutoff day is history (a feature), not
label. Labels are computed for the customers known at the cutoff (at least one purchase on or
before the cutoff day), the same rows :func:`features.build.build_features` returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.contract import Tables
from features.dates import day_number, day_numbers, parse_cutoff
from features.history import arrow_strings, filter_rows, known_customers, lookup, no_customer_error
from features.spec import FeatureSpec, assemble

__all__ = ["CHURN_DEFINITIONS", "LABEL_SCHEMA", "build_labels"]

CHURN_DEFINITIONS = ("purchase", "cancel")

LABEL_SCHEMA: tuple[FeatureSpec, ...] = (
    FeatureSpec("churn", "int64", "1 when the customer has no purchase (or, contractual: cancels) in the label window (cutoff, cutoff + horizon_days]; else 0", "label"),
    FeatureSpec("spend", "float64", "net sum of amounts in the label window, refunds deducted (currency units)", "label"),
    FeatureSpec("purchase_days", "int64", "distinct purchase days in the label window", "label"),
)  # fmt: skip


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: rule 'a whole number >= 1': got {value!r}")
    return int(value)


def build_labels(
    tables: Tables, *, cutoff, horizon_days: int, churn_definition: str = "purchase"
) -> pd.DataFrame:
    """Churn, spend and purchase days of each known customer in the label window of ``cutoff``.

    Parameters
    ----------
    tables : Tables
        Normalised input tables; ``events`` is needed for ``churn_definition="cancel"``.
    cutoff : date-like
        Last day of history.
    horizon_days : int
        Length H of the label window ``(cutoff, cutoff + H days]``.
    churn_definition : {"purchase", "cancel"}
        ``"purchase"`` (non-contractual): churn = 1 when the window holds no purchase.
        ``"cancel"`` (contractual): churn = 1 when the window holds a ``cancel`` event.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (the customers known at the cutoff, sorted), with the columns of
        :data:`LABEL_SCHEMA`: ``churn`` (0/1), ``spend`` (net sum of the window's
        amounts, refunds deducted; refunds of earlier purchases included), ``purchase_days``.

    Raises
    ------
    ValueError
        On an unknown churn definition, a cutoff before every purchase, or ``"cancel"`` without an
        events table.
    """
    if churn_definition not in CHURN_DEFINITIONS:
        raise ValueError(f"churn_definition: rule 'one of {CHURN_DEFINITIONS}': got {churn_definition!r}")
    horizon_days = _positive_int("horizon_days", horizon_days)
    cutoff = parse_cutoff(cutoff)
    start = day_number(cutoff)  # window is (start, end]
    end = start + horizon_days

    tx = tables.transactions
    day = day_numbers(tx["timestamp"], "transactions.timestamp")
    amount = tx["amount"].to_numpy(dtype=np.float64)
    customer_id = arrow_strings(tx["customer_id"])
    in_history = day <= start
    ids_arrow, _ = known_customers(filter_rows(customer_id, in_history), amount[in_history] >= 0)
    if len(ids_arrow) == 0:
        raise no_customer_error(tx, cutoff)
    n = len(ids_arrow)
    ids = pd.Index(pd.array(ids_arrow, dtype="str"), name="customer_id")

    in_window = (day > start) & (day <= end)
    key = lookup(filter_rows(customer_id, in_window), ids_arrow)
    w_day, w_amount = day[in_window], amount[in_window]
    known = key >= 0
    key, w_day, w_amount = key[known], w_day[known], w_amount[known]
    spend = np.bincount(key, weights=w_amount, minlength=n) + 0.0
    # Distinct (customer, date) pairs among the window's purchases.
    purchase = w_amount >= 0
    pairs = np.unique(key[purchase] * (horizon_days + 1) + (w_day[purchase] - start))
    purchase_days = np.bincount(pairs // (horizon_days + 1), minlength=n)

    if churn_definition == "purchase":
        churn = (purchase_days == 0).astype(np.int64)
    else:
        events = tables.events
        if events is None or not {"customer_id", "timestamp", "event_type"} <= set(events.columns):
            raise ValueError(
                "churn_definition='cancel': needs an events table with customer_id, timestamp and event_type"
            )
        e_day = day_numbers(events["timestamp"], "events.timestamp")
        is_cancel = np.asarray(pc.fill_null(pc.equal(arrow_strings(events["event_type"]), "cancel"), False))
        selected = is_cancel & (e_day > start) & (e_day <= end)
        e_key = lookup(filter_rows(arrow_strings(events["customer_id"]), selected), ids_arrow)
        churn = (np.bincount(e_key[e_key >= 0], minlength=n) > 0).astype(np.int64)

    columns = {"churn": churn, "spend": spend, "purchase_days": purchase_days}
    return assemble(ids, LABEL_SCHEMA, columns)
