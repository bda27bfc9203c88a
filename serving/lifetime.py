"""New customers through the lifetime machinery: the spend curve of a customer just acquired.

A customer acquired today through a channel has one purchase (the first order, on the acquisition
day) and the channel (and any covariates) in the ``customers`` table. :func:`new_customer_curves`
values it in one of two ways (``lifetime.new_customers`` at training):

- ``"process"`` (the default): the dropout process fitted by the channel
  (``LifetimeModel.new_customer_params``), a customer of that channel with its first purchase
  made and nothing else known: the process's prior of that level, its own spend curve over the
  lifetime cap (:meth:`training.lifetime.LifetimeModel.process_curve`). Why not the boosters: they
  learn from customers at training origins, almost none on their acquisition day, and their
  forecast for a one-order customer hardly differs by channel (on the development books the
  new-customer CLV per channel was three times further from the cohorts' expectation with them;
  BENCHMARKS.md);
- ``"champion"``: made-up customers with that history, scored by the champion
  (:func:`serving.scoring.spend_curve_of`, as the scores are computed): the boosters give their
  view of such a customer through the channel, the dropout process carries it over the cap
  (:mod:`training.curve`).

The result is the remaining value after the first order; the value from acquisition adds the
first order's margin.

Finance sums it per channel and cohort (``new_customer_clv.csv``, ``POST /acquisition_budget``);
the ``basis`` column says which way (``process`` or ``champion``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from features.btyd.lifetime import DropoutState
from features.contract import Tables
from features.dates import day_number, parse_cutoff
from serving.scores import Scores
from serving.scoring import champion_clv_config, spend_curve_of
from training.config import ClvConfig
from training.curve import clv_bounds
from training.registry import Champion

__all__ = ["NEW_CUSTOMER_PREFIX", "new_customer_curves", "new_customer_curves_of_scores"]

#: Customer ids of the made-up new customers: the prefix, then the channel and the node.
NEW_CUSTOMER_PREFIX = "new customer via "
#: Made-up customers per channel, one per quantile of the first order's value (:func:`new_customer_curves`).
FIRST_ORDER_NODES = 16


def new_customer_curves(
    champion: Champion,
    channels: Sequence[str],
    *,
    acquired_at: date | str | pd.Timestamp,
    first_order_value: float | Mapping[str, float] | None = None,
    covariates: Mapping[str, Mapping[str, object]] | None = None,
    clv: ClvConfig | None = None,
    method: Literal["process", "champion"] | None = None,
) -> pd.DataFrame:
    """Spend curve and CLV of a customer just acquired through each channel, from the champion.

    Parameters
    ----------
    champion : Champion
    channels : sequence of str
        Acquisition channels (as in ``customers.channel``). A channel the process has no level of
        gets the base's with ``"process"``; with ``"champion"`` a channel the boosters never saw is
        scored as an unknown level (LightGBM's missing-value branch).
    acquired_at : date-like
        Acquisition day: the first order is on it, and the curve starts the day after.
    first_order_value : float or mapping of channel to float, optional
        Value of the first order, currency units. With ``"process"`` it sets the first order's
        margin only, and by default it is the level's mean value of a purchase day. With
        ``"champion"``: one made-up customer with that order; by default the first order is
        random: :data:`FIRST_ORDER_NODES` equally likely made-up customers, at the slices' means
        of Gamma-Gamma's value of a purchase day
        (:func:`_first_order_nodes`) of the channel when the dropout process is fitted by channel
        (``lifetime.dropout_covariate``; or of the level given in ``covariates`` when the process
        is fitted by another column), else of the population; the figures are their means, and
        the interval is that of a zero-inflated gamma with the mixture's moments. Why: the
        boosters' forecast for a customer with one order is not smooth in the order's value (on a
        development book, a paid_social customer's next 182 days: 284 for a first order of 55,
        555 at 65, 265 at 80), so one made-up order of the mean value gave a point of that jagged
        curve. ``first_order_value`` is then the mean (p v / (q − 1)), which the values average
        to. An order as bought: a refund of it is not taken out of ``first_order_margin``.
    covariates : mapping of channel to {column: value}, optional
        With ``"champion"``: other ``customers`` columns the features use (e.g. ``region``);
        missing ones are unknown. Not read with ``"process"`` (its process is by channel).
    clv : ClvConfig, optional
        Default: the champion's.
    method : "process" or "champion", optional
        How the customer is valued (module docstring). Default: ``"process"`` when the champion
        has a new customers' process (``lifetime.new_customer_params``), else ``"champion"``. With
        ``"process"`` the first order's value changes its margin only: the process values a
        purchase day by its level's prior, whatever the first one was worth, and a channel the
        process has no level of gets the base's.

    Returns
    -------
    DataFrame
        One row per channel, indexed by ``channel``: ``first_order_value``, ``first_order_margin``
        (m · value − c, currency units), ``churn_probability``, ``p_alive``, ``expected_spend`` (next
        horizon), ``clv`` (remaining lifetime value after the first order, discounted) with
        ``clv_lower`` / ``clv_upper``, ``clv_from_acquisition`` (first-order margin + clv),
        ``expected_lifetime_days``, ``expected_spend_curve`` and ``expected_margin_curve`` (arrays
        of K values), ``horizon_days``, ``basis`` (``process`` or ``champion``).

    Raises
    ------
    ValueError
        Without channels, with a channel named twice, with ``"process"`` when the champion has no
        new customers' process, or when Gamma-Gamma's q ≤ 1 (no mean value of a first order) by
        default.
    """
    channels = [str(c) for c in channels]
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels: rule 'at least one, each once': got {channels}")
    clv = clv or champion_clv_config(champion)
    day = pd.Timestamp(parse_cutoff(acquired_at))
    own = champion.lifetime.new_customer_params
    method = method or ("process" if own is not None else "champion")
    if method not in ("process", "champion"):
        raise ValueError(f"method: rule 'process or champion': got {method!r}")
    if method == "process" and own is None:
        raise ValueError("method 'process': this champion has no new customers' process (lifetime.new_customers "
                         "was 'champion' at training, or it was trained before it existed)")
    params = own if method == "process" else champion.lifetime.params
    extra = covariates or {}
    # Each channel's level of the process by level: its channel, or the covariate given for it.
    column = None if params.by_level is None else params.by_level.column
    levels = [c if column == "channel" else extra.get(c, {}).get(column) if column else None for c in channels]
    typical = dict(zip(channels, (float(v) for v in params.mean_order_value(levels)), strict=True))
    if first_order_value is None:
        values = typical
    elif isinstance(first_order_value, Mapping):
        values = {c: float(first_order_value.get(c, typical[c])) for c in channels}
    else:
        values = {c: float(first_order_value) for c in channels}
    if method == "process":
        return _process_curves(champion, params, channels, levels, day, values, clv)
    if first_order_value is None:
        nodes = dict(zip(channels, _first_order_nodes(params, levels), strict=True))
    else:
        nodes = {c: np.array([values[c]]) for c in channels}
    channel_of = np.repeat(channels, [nodes[c].size for c in channels])
    ids = [f"{NEW_CUSTOMER_PREFIX}{c} #{i}" for c in channels for i in range(nodes[c].size)]
    transactions = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "timestamp": np.full(len(ids), day.to_datetime64()).astype("datetime64[ns]"),
            "amount": np.concatenate([nodes[c] for c in channels]),
        }
    )
    columns = sorted({k for c in channels for k in extra.get(c, {})})
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="str"),
            "acquired_at": np.full(len(ids), day.to_datetime64()).astype("datetime64[ns]"),
            "channel": pd.array(channel_of, dtype="str"),
            **{k: [extra.get(c, {}).get(k) for c in channel_of] for k in columns},
        }
    )
    scored, curve = spend_curve_of(Tables(transactions=transactions, customers=customers), as_of=day, champion=champion, clv=clv)
    # The made-up customers of a channel are equally likely: each figure of the channel is their
    # mean, and the interval that of a zero-inflated gamma with the moments of their mixture
    # (averaged; training.curve.interval_bounds).
    order = scored.get_indexer(pd.Index(ids, dtype="str"))
    if (order < 0).any():
        missing = [ids[i] for i in np.flatnonzero(order < 0)[:3]]
        raise ValueError(f"new customers: {int((order < 0).sum())} made-up customer(s) not scored, e.g. {missing} (a first order of no value?)")
    group = pd.Index(channels).get_indexer(channel_of)
    counts = np.bincount(group, minlength=len(channels)).astype(float)

    def mean(values):
        values = np.asarray(values, dtype=float)[order]
        out = np.zeros((len(channels), *values.shape[1:]))
        np.add.at(out, group, values)
        return out / counts.reshape(-1, *([1] * (values.ndim - 1)))

    moments = tuple(mean(m) for m in curve.clv_moments)
    clv_lower, clv_upper = clv_bounds(moments, mean(curve.clv_cost), champion.lifetime.interval_level)
    return _frame(channels, values, clv, "champion", mean(curve.churn_probability), mean(curve.p_alive),
                  mean(curve.clv), clv_lower, clv_upper, mean(curve.expected_lifetime_days), mean(curve.expected_spend),
                  mean(curve.expected_margin), champion.horizon_days)


def _process_curves(champion: Champion, params, channels, levels, day, values, clv) -> pd.DataFrame:
    """:func:`new_customer_curves` by the new customers' dropout process alone (``method="process"``)."""
    bad = [c for c in channels if not np.isfinite(values[c]) or values[c] <= 0]
    if bad:
        raise ValueError(f"new customers: first order value of {bad}: rule 'a positive number' (by default the level's "
                         "mean, which Gamma-Gamma's q <= 1 does not have)")
    state = DropoutState.new_customers(params, np.full(len(channels), day_number(day.date())),
                                       np.array(levels, dtype=object))
    curve = champion.lifetime.process_curve(state, horizon_days=champion.horizon_days, clv=clv)
    # The nominal level: the calibrated one corrects the spread of the boosters' curve for existing
    # customers; at it the process's intervals covered 0.53-0.61 of new customers on the development
    # books, at the nominal 0.80 0.75-0.78 (BENCHMARKS.md).
    clv_lower, clv_upper = curve.clv_interval(champion.lifetime.interval_coverage)
    return _frame(channels, values, clv, "process", curve.churn_probability, curve.p_alive, curve.clv, clv_lower,
                  clv_upper, curve.expected_lifetime_days, curve.expected_spend, curve.expected_margin,
                  champion.horizon_days)


def _frame(channels, values, clv, basis, churn, p_alive, remaining, clv_lower, clv_upper, lifetime_days,
           spend_curve, margin_curve, horizon_days) -> pd.DataFrame:
    """The rows of :func:`new_customer_curves`, one per channel; ``values`` the first orders' values."""
    first_margin = np.array([clv.gross_margin * values[c] - clv.cost_to_serve for c in channels])
    return pd.DataFrame(
        {
            "first_order_value": [values[c] for c in channels],
            "first_order_margin": first_margin,
            "churn_probability": churn,
            "p_alive": p_alive,
            "expected_spend": spend_curve[:, 0],
            "clv": remaining,
            "clv_lower": clv_lower,
            "clv_upper": clv_upper,
            "clv_from_acquisition": first_margin + remaining,
            "expected_lifetime_days": lifetime_days,
            "horizon_days": np.full(len(channels), horizon_days, dtype=np.int64),
            "expected_spend_curve": list(spend_curve),
            "expected_margin_curve": list(margin_curve),
            "basis": basis,
        },
        index=pd.Index(channels, name="channel"),
    )


def _first_order_nodes(params, levels, n: int = FIRST_ORDER_NODES) -> list[np.ndarray]:
    """``n`` equally likely values of a first order of a customer of each level, ascending.

    Gamma-Gamma's value of a purchase day is Gamma(p, ν) with ν ~ Gamma(q, v) across customers
    (Fader and Hardie 2013, eq. 1), so one purchase day drawn from a new customer is beta prime
    (p, q) scaled by v, with mean p v / (q − 1); the level's v when the process is fitted by level.
    Its range is cut into ``n`` slices of equal probability and each value is its slice's mean, so
    the values average exactly to the mean (the slices' midpoints fell short of it, by 3.5 % with
    CDNOW's q of 3.7 and by a quarter at q = 1.5, for the heavy upper tail). The mean of beta prime
    (p, q) over a slice is the mean times the slice's probability under beta prime (p + 1, q − 1).
    With a process that counts orders, Gamma-Gamma's values are an order's, scaled to a first
    purchase day by :attr:`features.btyd.lifetime.LifetimeParams.orders_per_first_day`.

    Raises
    ------
    ValueError
        If a level's q ≤ 1: the value of a purchase day has no finite mean.
    """
    codes, _, ggs = params.customer_params(levels)
    u = np.linspace(0.0, 1.0, n + 1)
    out = []
    for k in codes + 1:
        p, q, v = ggs[k].p, ggs[k].q, ggs[k].v
        if not q > 1:
            raise ValueError(f"Gamma-Gamma q = {q:.4g} <= 1: a first order has no finite mean value (a new customer's CLV needs one)")
        edges = stats.betaprime.ppf(u, p, q, scale=v)
        slices = n * (p * v / (q - 1.0)) * np.diff(stats.betaprime.cdf(edges, p + 1.0, q - 1.0, scale=v))
        out.append(slices * params.orders_per_first_day)
    return out


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
