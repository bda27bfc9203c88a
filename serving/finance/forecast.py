"""Revenue forecast of the current base: each customer's expected spend spread over the months ahead.

Revenue forecast
----------------
The CLV follows the design formula (retention r = 1 − p per horizon). The revenue forecast does not
use r^k past the first horizon: p is the probability of *no purchase* in the next H days, not of
dropping out, and a frequent buyer has p ≈ 0 however likely it is to leave, so r^k overstated later
horizons (by 20–27 % in the second half-year of the backtest). Instead, per customer:

- **Level**: e = (1 − p) · s, the scores' expected spend over H days, what the models were trained
  for. Their training label windows start at origins spread over half a year, so e is read as the
  spend of a horizon of average season.
- **Timing and dropout**: BG/NBD (:mod:`features.btyd`) fitted on the whole history up to the scoring
  date, in the time unit of the champion's BTYD fit, gives the customer's expected purchases E[X(t)]
  after it. Expected spend between days t0 and t1 is e · (E[X(t1)] − E[X(t0)]) / E[X(H)], so
  horizon k gets e · ratio_k with ratio_k = (E[X(kH)] − E[X((k−1)H)]) / E[X(H)]
  (:func:`horizon_ratios`), which falls as the customer may have dropped out, and spend within a
  horizon decays the same way. A customer without a purchase in the history is treated as just
  acquired (x = t_x = T = 0). If BG/NBD cannot be fitted on that history, the champion's own BG/NBD
  parameters (fitted at training, the ones its scores' features used) take its place, with a
  warning; without those either, the forecast falls back to r^k, flat within each horizon.
- **Seasonality**: each day's spend is multiplied by the index of its calendar month
  (:func:`seasonality_indices`: net revenue per day of the whole book per calendar month, relative
  to its trend, mean 1; flat with under 13 complete months of history).

So the expected revenue of month j is Σ_i e_i Σ_{days of j} index · dE_i / E_i[X(H)].

Active customers
----------------
``expected_active_customers`` of a month is the expected number of customers still alive (not
dropped out) at the end of its last day: Σ_i π_i · S_i(t), π_i the scores' ``p_alive`` (P(alive) at
the scoring date, the dropout process of the champion) and S_i(t) = P(alive at t | alive at the
scoring date) from the forecast's BG/NBD (:func:`survival_given_alive`: given alive, BG/NBD drops a
customer at each purchase with probability p, so S = E[exp(−λ p t)] over the posterior of λ and p,
a hypergeometric function). It falls smoothly month by month; without BG/NBD, S = r^(t/H), the
design's retention read as a continuous decay. Chosen on backtests that do not see the evaluated year
(``benchmarks/bench_forecast.py`` with 20,000 customers: seed 1, and seeds 0 and 1 with the cutoff a
year earlier): the 12-month error went from +21 % / +12 % / +19 % (r^k, flat) to +10 % / +2 % / +10 %.
Reading e as the spend of the coming H days' own season instead did worse where tried
(+19 % / +11 % on the first two). What remains is mostly the models' level in the first horizon.

Months
------
Rows are calendar months (:func:`forecast_calendar`): the rest of the scoring date's month when the
scoring date is not its last day (a partial month, flagged), then ``months`` whole calendar months.

Consistency with the scores
---------------------------
Without seasonality, the revenue of the first H days after the scoring date is Σ_i e_i, the
scores' ``expected_spend`` total, whatever the month boundaries (one cumulative curve per
customer, cut at the month ends); with seasonality it differs only by the calendar's index. The
active customers start from Σ_i ``p_alive``, the scores' own P(alive), at the scoring date. The
cost to serve of a month is c · Σ_k P(active in horizon k) · (days of the month in horizon k) / H,
so that over whole horizons it is the c · P(active in horizon k) of the CLV.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import hyp2f1

from features.btyd import BGNBDParams, bgnbd_expected_purchases, fit_bgnbd, summary_from_transactions
from features.contract import Tables

__all__ = [
    "SEASONALITY_MIN_MONTHS",
    "ForecastPlan",
    "ForecastShape",
    "expected_forecast",
    "fit_forecast_shape",
    "forecast_calendar",
    "forecast_shape",
    "horizon_ratios",
    "month_horizon_overlap",
    "plan_forecast",
    "revenue_by_day",
    "seasonality_indices",
    "seasonality_of_revenue",
    "survival_given_alive",
]

#: Fewest complete calendar months of history for a seasonality estimate (else flat).
SEASONALITY_MIN_MONTHS = 13


def forecast_calendar(as_of, months: int) -> pd.DataFrame:
    """The calendar months of a forecast that starts the day after ``as_of``.

    Parameters
    ----------
    as_of : date-like
        Scoring date (last day of history).
    months : int
        Whole calendar months after the scoring date's month.

    Returns
    -------
    DataFrame
        One row per month: ``month`` (``YYYY-MM``), ``period_start`` and ``period_end`` (dates, both
        included), ``days`` (days in the row), ``partial_month`` (True for the rest of the scoring
        date's month when ``as_of`` is not its last day: the first row, shorter than the month) and
        ``end_day`` (days from the end of ``as_of`` to the end of ``period_end``). ``months`` rows,
        or ``months + 1`` with a partial first month.
    """
    as_of = pd.Timestamp(as_of).normalize()
    first = as_of + pd.Timedelta(days=1)
    partial = first.day != 1
    periods = pd.period_range(first.to_period("M"), periods=months + int(partial), freq="M")
    starts = periods.start_time.normalize()
    if partial:
        starts = starts.where(np.arange(len(periods)) > 0, first)
    ends = periods.end_time.normalize()
    return pd.DataFrame(
        {
            "month": periods.strftime("%Y-%m"),
            "period_start": starts.date,
            "period_end": ends.date,
            "days": ((ends - starts).days + 1).to_numpy(dtype=np.int64),
            "partial_month": np.arange(len(periods)) == 0 if partial else np.zeros(len(periods), dtype=bool),
            "end_day": (ends - as_of).days.to_numpy(dtype=np.int64),
        }
    )


@dataclass(frozen=True)
class ForecastShape:
    """How the forecast spreads each customer's expected spend over time after the first horizon.

    Attributes
    ----------
    as_of : Timestamp
        Scoring date; the forecast starts the day after it.
    frequency, recency, T : ndarray, shape (n,)
        BG/NBD summary (x, t_x, T in units of ``time_unit_days``) per customer, aligned with the
        scores; NaN for a customer without a purchase in the history (treated as just acquired).
    bgnbd : BGNBDParams or None
        BG/NBD parameters (``alpha`` per ``time_unit_days``); None gives the design's retention r^k
        with a flat spread within each horizon.
    seasonality : ndarray, shape (12,)
        Revenue index per calendar month (January first), mean 1; all ones for no seasonality.
    time_unit_days : float
        Days per time unit of the summary and of ``bgnbd``.
    """

    as_of: pd.Timestamp
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    bgnbd: BGNBDParams | None
    seasonality: np.ndarray
    time_unit_days: float


def revenue_by_day(transactions: pd.DataFrame, as_of) -> pd.Series:
    """Net revenue of each day with a transaction up to the end of ``as_of``: what :func:`seasonality_indices` reads.

    A few thousand numbers however large the book; the totals of parts of the book (customer
    partitions) add up to the book's (:func:`pandas.Series.add` with ``fill_value=0``).

    Parameters
    ----------
    transactions : DataFrame
        Columns ``timestamp`` and ``amount`` (currency units).
    as_of : date-like
        Last day of history.

    Returns
    -------
    Series
        Sum of ``amount`` per day (index: midnight, ``datetime64[ns]``, sorted), every day with a
        transaction (refunds and zero amounts included, so the first day is the history's).
    """
    as_of = pd.Timestamp(as_of).normalize()
    tx = transactions.loc[(transactions["timestamp"] < as_of + pd.Timedelta(days=1)).to_numpy(), ["timestamp", "amount"]]
    day = pd.DatetimeIndex(tx["timestamp"].dt.normalize()).as_unit("ns")
    revenue = tx["amount"].astype(float).groupby(day, sort=True).sum()
    revenue.index = pd.DatetimeIndex(revenue.index, name="day").as_unit("ns")
    return revenue.rename("revenue")


def seasonality_indices(transactions: pd.DataFrame, as_of, *, min_months: int = SEASONALITY_MIN_MONTHS) -> np.ndarray:
    """Revenue index per calendar month, estimated from the history up to ``as_of``.

    Net revenue per day of every complete calendar month of the history (from the first month that
    starts on or after the first transaction day to the last month that ends on or before ``as_of``;
    months with no positive revenue are left out) gives the log effect of each calendar month:

    - with 24 months or more (all with revenue): the mean log ratio of the month's revenue per day
      to its centred 2×12-month moving average (classical decomposition; follows any smooth trend,
      such as a book that grows fast and then levels off);
    - otherwise: least squares of log(revenue per day) = a + b · time + effect of the calendar month.

    The effects are centred, and the index is exp(effect), rescaled to mean 1. With fewer than
    ``min_months`` complete months the effects cannot be told from the trend and the index is flat
    (all ones).

    Parameters
    ----------
    transactions : DataFrame
        Columns ``timestamp`` and ``amount`` (currency units).
    as_of : date-like
        Last day of history.
    min_months : int
        Fewest complete months for an estimate.

    Returns
    -------
    ndarray, shape (12,)
        Index per calendar month, January first, mean 1.
    """
    return seasonality_of_revenue(revenue_by_day(transactions, as_of), as_of, min_months=min_months)


def seasonality_of_revenue(revenue: pd.Series, as_of, *, min_months: int = SEASONALITY_MIN_MONTHS) -> np.ndarray:
    """:func:`seasonality_indices` from the revenue per day of the history (:func:`revenue_by_day`)."""
    flat = np.ones(12)
    as_of = pd.Timestamp(as_of).normalize()
    revenue = revenue[revenue.index < as_of + pd.Timedelta(days=1)]
    if revenue.empty:
        return flat
    first_day = revenue.index.min()
    first = first_day.to_period("M") + (0 if first_day.day == 1 else 1)
    last = (as_of + pd.Timedelta(days=1)).to_period("M") - 1  # last month ending on or before as_of
    if last < first:
        return flat
    periods = pd.period_range(first, last, freq="M")
    revenue = revenue.groupby(revenue.index.to_period("M")).sum().reindex(periods, fill_value=0.0)
    per_day = revenue.to_numpy(dtype=float) / periods.days_in_month.to_numpy(dtype=float)
    keep = per_day > 0
    if keep.sum() < min_months:
        return flat
    month = periods.month.to_numpy() - 1
    if keep.all() and len(periods) >= 24:
        # Ratio to the centred 2×12 moving average (classical decomposition): robust to any smooth
        # trend, such as a book that grows fast and then levels off.
        kernel = np.r_[0.5, np.ones(11), 0.5] / 12.0
        centred = np.convolve(per_day, kernel, mode="valid")  # for months 6 .. n-7
        ratio = np.log(per_day[6:-6] / centred)
        gamma = np.bincount(month[6:-6], weights=ratio, minlength=12) / np.bincount(month[6:-6], minlength=12)
        gamma -= gamma.mean()
    else:
        t = np.arange(len(periods), dtype=float)[keep]
        t = (t - t.mean()) / max(t.std(), 1.0)
        month = month[keep]
        if len(np.unique(month)) < 12:
            return flat
        # log(revenue per day) = a + b·t + effect of the calendar month; January..November coded
        # against December, whose effect is minus their sum.
        effects = np.zeros((len(t), 11))
        for c in range(11):
            effects[:, c] = (month == c).astype(float) - (month == 11).astype(float)
        design = np.column_stack([np.ones_like(t), t, effects])
        coef, *_ = np.linalg.lstsq(design, np.log(per_day[keep]), rcond=None)
        gamma = np.append(coef[2:], -coef[2:].sum())
    index = np.exp(gamma)
    return index / index.mean()


def fit_forecast_shape(
    tables: Tables,
    customer_ids,
    as_of: pd.Timestamp,
    *,
    time_unit_days: float,
    bgnbd: BGNBDParams | None = None,
    fallback_bgnbd: BGNBDParams | None = None,
    seasonality=None,
) -> ForecastShape:
    """BG/NBD summary and parameters, and seasonality, from the history up to ``as_of``.

    Parameters
    ----------
    tables : Tables
        Raw tables; only ``transactions`` is read.
    customer_ids : array-like of str, shape (n,)
        The scored customers; the summary is aligned with them.
    as_of : Timestamp
        Scoring date (last day of history).
    time_unit_days : float
        Days per time unit of the summary and of the BG/NBD parameters: the champion's
        (``ScoringRun.btyd.time_unit_days``), so that a refit and the champion's own parameters
        speak the same unit.
    bgnbd : BGNBDParams, optional
        Used as given (``alpha`` per ``time_unit_days``); otherwise BG/NBD is fitted by maximum
        likelihood on every customer of the history.
    fallback_bgnbd : BGNBDParams, optional
        Used, with a warning, when that fit fails (the champion's parameters); without it a failed
        fit gives ``bgnbd = None``, the design's retention r^k (also with a warning).
    seasonality : array-like of 12 floats, optional
        Used as given (rescaled to mean 1); otherwise :func:`seasonality_indices`.

    Returns
    -------
    ForecastShape

    Raises
    ------
    ValueError
        If ``seasonality`` is not 12 finite non-negative numbers with a positive sum.
    """
    summary = summary_from_transactions(tables.transactions, cutoff=as_of, time_unit_days=time_unit_days)
    return forecast_shape(
        summary, customer_ids, as_of, time_unit_days=time_unit_days, bgnbd=bgnbd, fallback_bgnbd=fallback_bgnbd,
        seasonality=seasonality_indices(tables.transactions, as_of) if seasonality is None else seasonality,
    )  # fmt: skip


def forecast_shape(
    summary: pd.DataFrame,
    customer_ids,
    as_of: pd.Timestamp,
    *,
    time_unit_days: float,
    seasonality,
    bgnbd: BGNBDParams | None = None,
    fallback_bgnbd: BGNBDParams | None = None,
) -> ForecastShape:
    """:func:`fit_forecast_shape` from the BTYD summary of the history rather than the tables.

    Parameters
    ----------
    summary : DataFrame
        :func:`features.btyd.summary_from_transactions` of every customer with a purchase by
        ``as_of`` (columns ``frequency``, ``recency``, ``T`` in units of ``time_unit_days``), indexed
        by ``customer_id`` in sorted order: BG/NBD is fitted on it as it comes.
    customer_ids, as_of, time_unit_days, bgnbd, fallback_bgnbd
        As :func:`fit_forecast_shape`.
    seasonality : array-like of 12 floats
        Revenue index per calendar month (rescaled to mean 1), e.g. :func:`seasonality_of_revenue`.
    """
    summary = summary.set_axis(summary.index.astype("str"))
    aligned = summary.reindex(pd.Index(customer_ids).astype("str"))
    if bgnbd is None:
        try:
            if summary.empty:
                raise ValueError("no purchase in the history")
            bgnbd = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
        except (ValueError, RuntimeError) as exc:
            instead = "the champion's BG/NBD parameters" if fallback_bgnbd is not None else "the retention r^k"
            warnings.warn(
                f"forecast: cannot fit BG/NBD on the history up to {as_of.date()} ({exc}): later horizons use {instead}",
                stacklevel=3,
            )
            bgnbd = fallback_bgnbd
    seasonality = np.asarray(seasonality, dtype=float)
    valid = np.isfinite(seasonality).all() and (seasonality >= 0).all() and seasonality.sum() > 0
    if seasonality.shape != (12,) or not valid:
        raise ValueError(f"seasonality: must be 12 finite non-negative numbers, got {seasonality}")
    return ForecastShape(
        as_of=as_of,
        frequency=aligned["frequency"].to_numpy(dtype=float),
        recency=aligned["recency"].to_numpy(dtype=float),
        T=aligned["T"].to_numpy(dtype=float),
        bgnbd=bgnbd,
        seasonality=seasonality / seasonality.mean(),
        time_unit_days=time_unit_days,
    )


def horizon_ratios(
    params: BGNBDParams,
    frequency,
    recency,
    T,
    *,
    horizon_days: float,
    n_horizons: int,
    time_unit_days: float,
) -> np.ndarray:
    """ratio_k = (E[X(kH)] − E[X((k−1)H)]) / E[X(H)] per customer, k = 1..n_horizons (BG/NBD).

    The expected purchases of horizon k relative to the first horizon, given each customer's history
    (:func:`features.btyd.bgnbd_expected_purchases`, Fader, Hardie and Lee 2005, eq. 10); it falls
    with k as the customer may have dropped out. The forecast spends e · ratio_k in horizon k.

    Parameters
    ----------
    params : BGNBDParams
        ``alpha`` per ``time_unit_days``.
    frequency, recency, T : array-like, shape (n,)
        x, t_x, T in ``time_unit_days`` units; NaN = a customer without a purchase (x = t_x = T = 0).
    horizon_days : float
        H, days.
    n_horizons : int
        Horizons returned.
    time_unit_days : float
        Days per time unit.

    Returns
    -------
    ndarray, shape (n, n_horizons)
        The first column is 1 (a row of ones for a customer expected to buy nothing at all).
    """
    t = horizon_days / time_unit_days * np.arange(n_horizons + 1)
    cum = _expected_purchases(params, t, frequency, recency, T)
    inc = np.diff(cum, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(inc[:, :1] > 0, inc / inc[:, :1], 1.0)
    return out


def _expected_purchases(params: BGNBDParams, t: np.ndarray, frequency, recency, T) -> np.ndarray:
    """E[X(t)] per customer (rows) at the times ``t`` (columns, time units); NaN history = x = t_x = T = 0."""
    x, tx, big_t = (np.nan_to_num(np.asarray(v, dtype=float), nan=0.0) for v in (frequency, recency, T))
    out = np.zeros((len(x), len(t)))
    for c, tc in enumerate(t):
        if tc > 0:
            out[:, c] = bgnbd_expected_purchases(params, tc, x, tx, big_t)
    return np.maximum.accumulate(out, axis=1)


@dataclass(frozen=True)
class ForecastPlan:
    """Forecast of a block of customers: P(active in horizon k) and the monthly spend given active.

    Attributes
    ----------
    survival : ndarray, shape (n, k_f)
        P(N ≥ k) for the number N of active horizons, k = 1..k_f (the horizons the forecast reaches).
    weights : ndarray, shape (k_f, months, n)
        Spend in each month per unit of ``spend_if_active`` given active in horizon k, so that the
        expected revenue of month j is Σ_k survival[:, k] · s · weights[k, j].
    """

    survival: np.ndarray
    weights: np.ndarray


def _edges(end_days) -> np.ndarray:
    """Row boundaries in days after the scoring date: 0, then each row's ``end_day``."""
    end = np.asarray(end_days, dtype=float)
    if end.ndim != 1 or end.size == 0 or not (np.diff(np.r_[0.0, end]) > 0).all():
        raise ValueError(f"end_days: must be increasing positive day offsets, got {end}")
    return np.r_[0.0, end]


def _time_grid(horizon_days: float, end_days):
    """Time grid (days) of month and horizon boundaries, each segment's month and horizon, and k_f."""
    edges = _edges(end_days)
    k_f = math.ceil(edges[-1] / horizon_days - 1e-9)
    bounds = np.union1d(edges, horizon_days * np.arange(k_f + 1))
    bounds = bounds[bounds <= horizon_days * k_f + 1e-9]
    mid = (bounds[:-1] + bounds[1:]) / 2
    month = np.searchsorted(edges, mid) - 1  # ≥ rows: after the forecast window
    horizon = np.floor(mid / horizon_days).astype(np.int64)
    return bounds, month, horizon, k_f


def month_horizon_overlap(horizon_days: float, end_days) -> np.ndarray:
    """Days of each forecast month inside each horizon, over H.

    Parameters
    ----------
    horizon_days : float
        H, days.
    end_days : array-like of int, shape (months,)
        End of each month in days after the scoring date (``forecast_calendar(...)["end_day"]``).

    Returns
    -------
    ndarray, shape (months, k_f)
        Element [j, k]: (days of month j + 1 inside horizon k + 1) / H; k_f = ⌈end of the last month / H⌉.
        The cost to serve of month j is c · Σ_k P(active in horizon k) · element [j, k].
    """
    edges = _edges(end_days)
    k_f = _time_grid(horizon_days, end_days)[3]
    hb = horizon_days * np.arange(k_f + 1)
    lo = np.maximum(edges[:-1, None], hb[None, :-1])
    hi = np.minimum(edges[1:, None], hb[None, 1:])
    return np.clip(hi - lo, 0.0, None) / horizon_days


def survival_given_alive(shape: ForecastShape | None, rows, days, *, churn_probability, horizon_days: float) -> np.ndarray:
    """S(t) = P(alive ``days`` after the scoring date | alive at it), per customer and time.

    With BG/NBD, a customer alive at T buys at rate λ and drops out at each purchase with
    probability p, so it is still alive after t with probability exp(−λ p t); given the history
    (x, t_x, T) and alive, λ ~ Gamma(r + x, α + T) and p ~ Beta(a, b + x), independent, and
    S(t) = E[(1 + p t / (α + T))^−(r+x)] = ₂F₁(r + x, a; a + b + x; −t / (α + T)) (Euler's integral).
    Without BG/NBD (``shape`` None or its ``bgnbd`` None), or where the hypergeometric function
    does not evaluate, S(t) = (1 − p)^(t / H), the design's retention as a continuous decay.

    Parameters
    ----------
    shape : ForecastShape or None
    rows : slice or index
        Positions of the customers in ``shape``'s arrays.
    days : array-like of float, shape (k,)
        Days after the end of the scoring date.
    churn_probability : array-like, shape (n,)
        p of those customers (for the fallback).
    horizon_days : float
        H, days.

    Returns
    -------
    ndarray, shape (n, k)
        Non-increasing in t, 1 at t = 0.
    """
    t_days = np.asarray(days, dtype=float)[None, :]
    p = np.asarray(churn_probability, dtype=float)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(p < 1.0, np.exp(t_days / horizon_days * np.log1p(-np.minimum(p, 1.0))), np.where(t_days > 0, 0.0, 1.0))
    if shape is not None and shape.bgnbd is not None:
        b = shape.bgnbd
        x, big_t = (np.nan_to_num(np.asarray(v, dtype=float)[rows], nan=0.0)[:, None] for v in (shape.frequency, shape.T))
        z = -(t_days / shape.time_unit_days) / (b.alpha + big_t)
        with np.errstate(all="ignore"):
            bg = hyp2f1(b.r + x, b.a, b.a + b.b + x, z)
        ok = np.isfinite(bg).all(axis=1) & (bg >= -1e-9).all(axis=1) & (bg <= 1 + 1e-9).all(axis=1)
        out[ok] = np.clip(bg[ok], 0.0, 1.0)
    return np.minimum.accumulate(out, axis=1)


def _season_per_segment(shape: ForecastShape | None, bounds: np.ndarray) -> np.ndarray:
    """Mean seasonality index over each segment (days after the scoring date)."""
    if shape is None:
        return np.ones(len(bounds) - 1)
    n_days = int(math.ceil(bounds[-1])) + 1
    days = pd.date_range(shape.as_of + pd.Timedelta(days=1), periods=n_days, freq="D")
    cum = np.concatenate([[0.0], np.cumsum(shape.seasonality[days.month.to_numpy() - 1])])
    integral = np.interp(bounds, np.arange(n_days + 1), cum)  # linear within a day
    return np.diff(integral) / np.diff(bounds)


def _geometric_cumulative(p: np.ndarray, bounds: np.ndarray, horizon_days: float) -> np.ndarray:
    """The design's retention as a cumulative curve: horizon k weighs r^(k−1), flat within it."""
    r = 1.0 - p
    cum = np.zeros((len(p), len(bounds)))
    for i, b in enumerate(bounds):
        k = np.floor(b / horizon_days + 1e-9)
        frac = max(b / horizon_days - k, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            full = np.where(p > 0.0, -np.expm1(k * np.log1p(-p)) / p, k)  # Σ_{i<k} r^i
        cum[:, i] = full + frac * r**k
    return cum


def plan_forecast(
    p: np.ndarray, shape: ForecastShape | None, rows: slice, *, horizon_days: float, end_days
) -> ForecastPlan:
    """The forecast of the customers ``rows`` of ``shape``: see :class:`ForecastPlan`.

    Parameters
    ----------
    p : ndarray, shape (n,)
        Churn probabilities of those customers.
    shape : ForecastShape or None
        None: the design's retention r^k, no seasonality.
    rows : slice
        Positions of the n customers in ``shape``'s arrays.
    horizon_days : float
        H, days.
    end_days : array-like of int, shape (months,)
        End of each forecast month in days after the scoring date (:func:`forecast_calendar`).

    Returns
    -------
    ForecastPlan
    """
    bounds, month, horizon, k_f = _time_grid(horizon_days, end_days)
    months = len(end_days)
    n = len(p)
    if shape is None or shape.bgnbd is None:
        cum = _geometric_cumulative(p, bounds, horizon_days)
    else:
        with np.errstate(all="ignore"):
            cum = _expected_purchases(shape.bgnbd, bounds / shape.time_unit_days, shape.frequency[rows],
                                      shape.recency[rows], shape.T[rows])  # fmt: skip
        bad = ~np.isfinite(cum).all(axis=1)
        if bad.any():  # e.g. a degenerate fit whose hypergeometric terms overflow: the design's retention
            cum[bad] = _geometric_cumulative(p[bad], bounds, horizon_days)
    inc = np.diff(cum, axis=1)  # (n, segments), expected purchases without seasonality
    first = inc[:, horizon == 0].sum(axis=1)
    nothing = first <= 0
    if nothing.any():  # no expected purchase at all: flat in the first horizon, nothing after it
        inc[nothing] = np.where(horizon == 0, np.diff(bounds) / horizon_days, 0.0)[None, :]
        first = np.where(nothing, 1.0, first)
    per_k = np.stack([inc[:, horizon == k].sum(axis=1) for k in range(k_f)], axis=1)
    ratio = per_k / first[:, None]
    survival = np.minimum.accumulate(np.clip((1.0 - p)[:, None] * ratio, 0.0, 1.0), axis=1)
    season = _season_per_segment(shape, bounds)
    seasonal = inc * season[None, :]
    weights = np.zeros((k_f, months, n))
    for k in range(k_f):
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(per_k[:, k] > 0, 1.0 / per_k[:, k], 0.0)
        for s in np.flatnonzero((horizon == k) & (month < months)):
            weights[k, month[s]] += seasonal[:, s] * scale
    return ForecastPlan(survival=survival, weights=weights)


def expected_forecast(
    churn_probability,
    spend_if_active,
    *,
    p_alive,
    horizon_days: float,
    margin: float,
    cost_to_serve: float,
    end_days,
    shape: ForecastShape | None = None,
    chunk_size: int = 20_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact expected revenue, margin and active customers per month (the simulation's mean).

    Revenue of month j: Σ_i Σ_k P_i(N ≥ k) · s_i · weights[k, j, i] (:func:`plan_forecast`); margin:
    m · revenue − c · Σ_k P(active in horizon k) · (days of month j in horizon k) / H, the cost to
    serve spread evenly over the days of an active horizon; active customers: Σ_i π_i · S_i(end of
    month j) (:func:`survival_given_alive`).

    Parameters
    ----------
    churn_probability, spend_if_active : array-like, shape (n,)
        p and s (spend over H days if active, currency units) per customer, in ``shape``'s order.
    p_alive : array-like, shape (n,)
        π, P(alive) at the scoring date (the scores' ``p_alive``), 0..1.
    horizon_days : float
        H, days.
    margin, cost_to_serve : float
        m (share of spend) and c (currency units per active customer per horizon).
    end_days : array-like of int, shape (months,)
        End of each forecast month in days after the scoring date (:func:`forecast_calendar`).
    shape : ForecastShape, optional
        None: the design's retention r^k, no seasonality.
    chunk_size : int
        Customers planned at once (memory).

    Returns
    -------
    revenue, margin, active : ndarray, shape (months,)
        Currency units per month, and expected customers alive at the end of each month.
    """
    end_days = np.asarray(end_days)
    overlap = month_horizon_overlap(horizon_days, end_days)
    p_all = np.asarray(churn_probability, dtype=float)
    s_all = np.asarray(spend_if_active, dtype=float)
    alive_all = np.asarray(p_alive, dtype=float)
    revenue = np.zeros(len(end_days))
    alive = np.zeros(len(end_days))
    survival = np.zeros(overlap.shape[1])
    for start in range(0, len(p_all), chunk_size):
        rows = slice(start, min(start + chunk_size, len(p_all)))
        plan = plan_forecast(p_all[rows], shape, rows, horizon_days=horizon_days, end_days=end_days)
        revenue += np.einsum("kjn,nk->j", plan.weights, plan.survival * s_all[rows, None])
        survival += plan.survival.sum(axis=0)
        stay = survival_given_alive(shape, rows, end_days, churn_probability=p_all[rows], horizon_days=horizon_days)
        alive += alive_all[rows] @ stay
    return revenue, margin * revenue - cost_to_serve * (overlap @ survival), alive
