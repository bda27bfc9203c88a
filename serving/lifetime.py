"""New customers through the lifetime machinery: the spend curve of a customer just acquired.

A customer acquired today through a channel has one purchase (the first order, on the acquisition
day) and the channel (and any covariates) in the ``customers`` table: exactly what the feature
code reads for a real customer of that age. :func:`new_customer_curves` builds that history for
each channel and scores it with the champion (:func:`serving.scoring.score_columns`): the boosters
give their view of such a customer through the channel (the learned part), the dropout process
carries it over the lifetime cap (:mod:`training.curve`). The result is the remaining value
after the first order; the value from acquisition adds the first order's margin.

Finance sums it per channel and cohort (``new_customer_clv.csv``, ``POST /acquisition_budget``);
without a champion, :meth:`features.btyd.lifetime.DropoutState.new_customers` gives the dropout
process's own expectation for a new customer (no channel information).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import parse_cutoff
from serving.scores import Scores
from serving.scoring import champion_clv_config, score_columns
from training.config import ClvConfig
from training.registry import Champion

__all__ = ["NEW_CUSTOMER_PREFIX", "new_customer_curves", "new_customer_curves_of_scores"]

#: Customer ids of the made-up new customers: the prefix, then the channel.
NEW_CUSTOMER_PREFIX = "new customer via "


def new_customer_curves(
    champion: Champion,
    channels: Sequence[str],
    *,
    acquired_at: date | str | pd.Timestamp,
    first_order_value: float | Mapping[str, float] | None = None,
    covariates: Mapping[str, Mapping[str, object]] | None = None,
    clv: ClvConfig | None = None,
) -> pd.DataFrame:
    """Spend curve and CLV of a customer just acquired through each channel, from the champion.

    Parameters
    ----------
    champion : Champion
    channels : sequence of str
        Acquisition channels (as in ``customers.channel``); a channel the boosters never saw is
        scored as an unknown level (LightGBM's missing-value branch).
    acquired_at : date-like
        Acquisition day: the first order is on it, and the curve starts the day after.
    first_order_value : float or mapping of channel to float, optional
        Value of the first order, currency units; default: the expected value of a purchase day
        (Gamma-Gamma, p v / (q − 1)) of the channel when the dropout process is fitted by channel
        (``lifetime.dropout_covariate``), else of the population. An order as bought: a refund of
        it is not taken out of ``first_order_margin``.
    covariates : mapping of channel to {column: value}, optional
        Other ``customers`` columns the features use (e.g. ``region``); missing ones are unknown.
    clv : ClvConfig, optional
        Default: the champion's.

    Returns
    -------
    DataFrame
        One row per channel, indexed by ``channel``: ``first_order_value``, ``first_order_margin``
        (m · value − c, currency units), ``churn_probability``, ``p_alive``, ``expected_spend`` (next
        horizon), ``clv`` (remaining lifetime value after the first order, discounted) with
        ``clv_lower`` / ``clv_upper``, ``clv_from_acquisition`` (first-order margin + clv),
        ``expected_lifetime_days``, ``expected_spend_curve`` and ``expected_margin_curve`` (arrays
        of K values), ``horizon_days``.

    Raises
    ------
    ValueError
        Without channels, or with a channel named twice.
    """
    channels = [str(c) for c in channels]
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels: rule 'at least one, each once': got {channels}")
    clv = clv or champion_clv_config(champion)
    day = pd.Timestamp(parse_cutoff(acquired_at))
    params = champion.lifetime.params
    by_channel = params.by_level is not None and params.by_level.column == "channel"
    mean_value = params.mean_order_value(channels if by_channel else [None] * len(channels))
    typical = dict(zip(channels, (float(v) for v in mean_value), strict=True))
    if first_order_value is None:
        values = typical
    elif isinstance(first_order_value, Mapping):
        values = {c: float(first_order_value.get(c, typical[c])) for c in channels}
    else:
        values = {c: float(first_order_value) for c in channels}
    ids = [NEW_CUSTOMER_PREFIX + c for c in channels]
    transactions = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "timestamp": np.full(len(ids), day.to_datetime64()).astype("datetime64[ns]"),
            "amount": [values[c] for c in channels],
        }
    )
    extra = covariates or {}
    columns = sorted({k for c in channels for k in extra.get(c, {})})
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "acquired_at": np.full(len(ids), day.to_datetime64()).astype("datetime64[ns]"),
            "channel": pd.array(channels, dtype="str"),
            **{k: [extra.get(c, {}).get(k) for c in channels] for k in columns},
        }
    )
    out = score_columns(
        Tables(transactions=transactions, customers=customers), as_of=day, champion=champion, clv=clv,
        top_drivers=0, attributes=False,
    )  # fmt: skip
    order = pd.Index(out["customer_id"]).get_indexer(ids)
    first_margin = np.array([clv.gross_margin * values[c] - clv.cost_to_serve for c in channels])
    frame = pd.DataFrame(
        {
            "first_order_value": [values[c] for c in channels],
            "first_order_margin": first_margin,
            **{name: np.asarray(out[name])[order] for name in (
                "churn_probability", "p_alive", "expected_spend", "clv", "clv_lower", "clv_upper",
                "expected_lifetime_days", "horizon_days",
            )},  # fmt: skip
            "expected_spend_curve": [out["expected_spend_curve"][i] for i in order],
            "expected_margin_curve": [out["expected_margin_curve"][i] for i in order],
        },
        index=pd.Index(channels, name="channel"),
    )
    frame.insert(frame.columns.get_loc("clv_upper") + 1, "clv_from_acquisition", first_margin + frame["clv"].to_numpy())
    return frame


def new_customer_curves_of_scores(champion: Champion, scores: Scores) -> pd.DataFrame:
    """:func:`new_customer_curves` for every channel of ``scores``, acquired on their scoring date.

    What ``clvcast budget`` writes as ``new_customer_clv.csv``: the scores' champion (the caller
    loads the pair named by ``scores.run``), their CLV settings and ``as_of``; customers without a
    channel are the channel ``"unknown"`` (:data:`serving.finance.acquisition.UNKNOWN_CHANNEL`).

    Returns
    -------
    DataFrame
        As :func:`new_customer_curves`, one row per channel, sorted.
    """
    from serving.finance.acquisition import UNKNOWN_CHANNEL

    channel = scores.frame["channel"]
    names = sorted(set(channel.dropna().astype(str)) | ({UNKNOWN_CHANNEL} if channel.isna().any() else set()))
    return new_customer_curves(champion, names, acquired_at=scores.run.as_of, clv=scores.run.clv)
