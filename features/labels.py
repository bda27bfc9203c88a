"""Labels over the horizon after a cutoff, and rolling-origin training sets.

The label window of a cutoff is ``(cutoff, cutoff + horizon_days]``: the dates ``cutoff + 1`` through
``cutoff + horizon_days``, both included. A purchase on the cutoff day is history (a feature), not
label. Labels are computed for the customers known at the cutoff (at least one purchase on or
before the cutoff day), the same rows :func:`features.build.build_features` returns.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features import schema as fs
from features.build import (
    _arrow_strings,
    _day_number,
    _day_numbers,
    _feature_columns,
    _filter,
    _fit_btyd,
    _frame,
    _known_customers,
    _lookup,
    _no_customer_error,
    _prepare,
    parse_cutoff,
)
from features.config import FeatureConfig
from features.contract import Tables

__all__ = ["CHURN_DEFINITIONS", "build_labels", "training_cutoffs", "build_training_set"]

CHURN_DEFINITIONS = ("purchase", "cancel")


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
        :data:`features.schema.LABEL_SCHEMA`: ``churn`` (0/1), ``spend`` (net sum of the window's
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
    start = _day_number(cutoff)  # window is (start, end]
    end = start + horizon_days

    tx = tables.transactions
    day = _day_numbers(tx["timestamp"], "transactions.timestamp")
    amount = tx["amount"].to_numpy(dtype=np.float64)
    customer_id = _arrow_strings(tx["customer_id"])
    in_history = day <= start
    ids_arrow, _ = _known_customers(_filter(customer_id, in_history), amount[in_history] >= 0)
    if len(ids_arrow) == 0:
        raise _no_customer_error(tx, cutoff)
    n = len(ids_arrow)
    ids = pd.Index(pd.array(ids_arrow, dtype="str"), name="customer_id")

    in_window = (day > start) & (day <= end)
    key = _lookup(_filter(customer_id, in_window), ids_arrow)
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
        e_day = _day_numbers(events["timestamp"], "events.timestamp")
        is_cancel = np.asarray(pc.fill_null(pc.equal(_arrow_strings(events["event_type"]), "cancel"), False))
        selected = is_cancel & (e_day > start) & (e_day <= end)
        e_key = _lookup(_filter(_arrow_strings(events["customer_id"]), selected), ids_arrow)
        churn = (np.bincount(e_key[e_key >= 0], minlength=n) > 0).astype(np.int64)

    columns = {"churn": churn, "spend": spend, "purchase_days": purchase_days}
    return _frame(ids, fs.LABEL_SCHEMA, columns)


def training_cutoffs(training_cutoff, *, horizon_days: int, n_cutoffs: int, step_days: int) -> list[dt.date]:
    """Rolling origins whose label windows end on or before ``training_cutoff``.

    The last origin is ``training_cutoff - horizon_days`` (its window ends exactly on the training
    cutoff); the others step back by ``step_days``.

    Parameters
    ----------
    training_cutoff : date-like
        Last day whose data training may see (labels included).
    horizon_days, n_cutoffs, step_days : int
        Label window length, number of origins, days between consecutive origins.

    Returns
    -------
    list of datetime.date
        ``n_cutoffs`` origins, oldest first.
    """
    training_cutoff = parse_cutoff(training_cutoff)
    horizon_days = _positive_int("horizon_days", horizon_days)
    n_cutoffs = _positive_int("n_cutoffs", n_cutoffs)
    step_days = _positive_int("step_days", step_days)
    last = training_cutoff - dt.timedelta(days=horizon_days)
    return [last - dt.timedelta(days=step_days * i) for i in reversed(range(n_cutoffs))]


def build_training_set(
    tables: Tables,
    *,
    training_cutoff,
    horizon_days: int,
    n_cutoffs: int = 3,
    step_days: int = 91,
    config: FeatureConfig = FeatureConfig(),
    churn_definition: str = "purchase",
) -> pd.DataFrame:
    """Features and labels stacked over rolling origins, for training.

    For each origin of :func:`training_cutoffs` the features are built as of the origin (BTYD
    parameters fitted on the history up to that origin only) and joined with the labels of its
    window, which ends on or before ``training_cutoff``; nothing later is read.

    Parameters
    ----------
    tables : Tables
    training_cutoff : date-like
        Last day training may see.
    horizon_days : int
        Label window length H.
    n_cutoffs : int, default 3
        Number of origins.
    step_days : int, default 91
        Days between consecutive origins.
    config : FeatureConfig
    churn_definition : {"purchase", "cancel"}

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (repeated across origins), with the columns of
        :func:`features.schema.training_set_schema`: features, ``churn``, ``spend``,
        ``purchase_days`` and ``cutoff`` (the origin). ``frame.attrs["btyd"]`` maps each origin's
        ISO date to its :class:`~features.build.BTYDParams`; ``frame.attrs["feature_set_id"]``
        identifies the feature set. Rows are ordered by origin, then customer.

    Raises
    ------
    ValueError
        If an origin precedes every purchase (no customer is known there), naming how many
        origins do fit; or a BTYD fit fails at an origin.
    """
    origins = training_cutoffs(training_cutoff, horizon_days=horizon_days, n_cutoffs=n_cutoffs, step_days=step_days)
    tx = tables.transactions
    purchases = tx["timestamp"][tx["amount"] >= 0]
    if len(purchases) == 0:
        raise ValueError("transactions: no purchase (amount >= 0) at all: nothing to train on")
    first = purchases.min().date()
    early = [o for o in origins if o < first]
    if early:
        fit = len(origins) - len(early)
        raise ValueError(
            f"training set: {len(early)} of {len(origins)} origins ({', '.join(map(str, early))}) precede the "
            f"first purchase on {first}, so no customer is known there; "
            + (
                f"only {fit} origin(s) fit: lower n_cutoffs to {fit} or step_days"
                if fit
                else f"no origin fits: training_cutoff {parse_cutoff(training_cutoff)} minus horizon_days "
                f"{horizon_days} is before the data starts"
            )
        )

    specs = fs.training_set_schema(config)
    frames, params = [], {}
    for origin in origins:
        h = _prepare(tables, origin)
        btyd = _fit_btyd(h, config)
        columns = _feature_columns(h, config, btyd)
        labels = build_labels(tables, cutoff=origin, horizon_days=horizon_days, churn_definition=churn_definition)
        # Same population rule on the same rows: the two indexes are one sorted list of ids.
        if not labels.index.equals(h.ids):
            raise RuntimeError(f"origin {origin}: label rows do not match feature rows")
        columns.update({c: labels[c].to_numpy() for c in labels.columns})
        columns["cutoff"] = np.full(h.n, np.datetime64(origin, "D").astype("datetime64[ns]"))
        frames.append(_frame(h.ids, specs, columns))
        params[origin.isoformat()] = btyd
    out = pd.concat(frames, axis=0)
    out.attrs = {"btyd": params, "feature_set_id": fs.feature_set_id(config)}
    return out
