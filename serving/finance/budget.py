"""Finance outputs from a scores table: CLV and CAC by channel and cohort, forecasts, segments, report.

:func:`budget` reads the batch scores (one row per customer, written by ``clvcast score``) and the raw
tables, and writes

- ``channels.csv``: per acquisition channel, CAC, predicted CLV with an 80 % interval, realised margin,
  LTV:CAC, maximum allowable CAC, payback and a grow / hold / cut recommendation;
- ``cohorts.csv``: the same per acquisition month and channel, with the cumulative value curve per
  customer by month since acquisition (realised up to the scoring date, predicted after it);
- ``forecast.csv``: revenue and margin of the current base per month over the next 12 months with
  80 % intervals; months are 30.4375 days long and start the day after the scoring date, and the
  ``cumulative_revenue*`` columns give the interval of the running total (the 12-month total's
  interval is not the sum of the monthly ones). How it is built: see "Revenue forecast" below;
- ``segments.csv``: each customer's CLV, tier and RFM segment (and referral credit), for a CRM;
- ``new_customer_clv.csv``: the value of a customer just acquired, per channel (for the
  acquisition-budget endpoint, see :func:`acquisition_budget`);
- ``report.html``: one self-contained page with the charts (:mod:`serving.report`).

Definitions used throughout
---------------------------
- **CLV** (``clv``): the predicted *remaining* lifetime margin from the scoring date, as in the
  scores (design formula, discounted, K horizons).
- **Realised margin**: margin earned since acquisition up to the scoring date,
  m · (net spend) − c per H-day window since acquisition with a purchase; not discounted.
- **LTV** (``mean_ltv``): value of an acquired customer from acquisition, realised margin + CLV. LTV:CAC
  and the maximum allowable CAC use the LTV, not the remaining CLV alone: a mature channel whose
  customers already paid back most of their value would otherwise look like a loss.
- **Payback** (``payback_months``): months from acquisition until the mean cumulative margin per
  customer (realised, then the predicted per-horizon stream spread evenly over its months, with
  retention and discounting) reaches the mean CAC; ``inf`` when it never does within the lifetime
  cap. Monthly resolution: a customer's age is rounded to whole months.
- **Recommendation**: ``grow`` if LTV:CAC ≥ target, ``cut`` if < 1, ``hold`` in between, ``unknown``
  without CAC (:func:`serving.clv.recommendation`).

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
  date gives the customer's expected purchases E[X(t)] after it. Expected spend between days t0 and
  t1 is e · (E[X(t1)] − E[X(t0)]) / E[X(H)], so horizon k gets e · ratio_k with
  ratio_k = (E[X(kH)] − E[X((k−1)H)]) / E[X(H)] (:func:`horizon_ratios`), which falls as the customer
  may have dropped out, and spend within a horizon decays the same way. A customer without a
  purchase in the history is treated as just acquired (x = t_x = T = 0). If BG/NBD cannot be fitted,
  the forecast falls back to r^k, flat within each horizon (with a warning).
- **Seasonality**: each day's spend is multiplied by the index of its calendar month
  (:func:`seasonality_indices`: net revenue per day of the whole book per calendar month, relative
  to its trend, mean 1; flat with under 13 complete months of history).

So the expected revenue of month j is Σ_i e_i Σ_{days of j} index · dE_i / E_i[X(H)].
``expected_active_customers`` counts customers in an active horizon (below), weighted by the share
of the month the horizon covers. Chosen on backtests that do not see the evaluated year
(``benchmarks/bench_forecast.py`` with 20,000 customers: seed 1, and seeds 0 and 1 with the cutoff a
year earlier): the 12-month error went from +21 % / +12 % / +19 % (r^k, flat) to +10 % / +2 % / +10 %.
Reading e as the spend of the coming H days' own season instead did worse where tried
(+19 % / +11 % on the first two). What remains is mostly the models' level in the first horizon.

Intervals (simulation)
----------------------
Each of ``n_simulations`` draws simulates every customer with one uniform V per customer and draw:
for the CLV the number of active horizons N with N ≥ k iff V ≤ r^k (the retention the CLV formula
uses, so the simulated mean CLV equals the scores'); for the forecast, active in horizon k iff
V ≤ (1 − p) · ratio_k, spending in it as above (so the simulated mean revenue equals the expected
forecast). The same V makes the two agree customer by customer. On top: a spend multiplier per
customer G ~ Gamma(mean 1, CV ``spend_cv``) for the customer's spend level, and a multiplier common
to all customers Z ~ LogNormal(mean 1, CV ``common_cv``) for what moves the whole base (model
error, economy). Without Z the interval of a large base shrinks like 1 / √n and says nothing about
the model. ``common_cv`` = 0.10 was checked on the same non-evaluated backtests: errors of the
12-month total of +10 %, +2 % and +10 %, all inside the 80 % interval (about ±13 % for a lognormal of
CV 0.10); three backtests cannot calibrate it more finely.
80 % intervals are the 10th and 90th percentiles of the draws. Customers are simulated in chunks,
so memory stays bounded for millions of customers; a fixed seed gives the same numbers for any
chunk size.

The cohort value curves and payback (``cohorts.csv``, ``channels.csv``) are cumulative CLV and keep
the design's r^k, so that a curve ends at realised margin + CLV.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.btyd import BGNBDParams, bgnbd_expected_purchases, fit_bgnbd, summary_from_transactions
from features.contract import Tables
from serving import clv as C
from training.config import ClvConfig

SCORE_COLUMNS = (
    "customer_id", "as_of", "churn_probability", "spend_if_active", "expected_spend", "clv_horizon",
    "clv", "expected_lifetime_days", "clv_tier", "rfm_segment", "recency_days", "frequency",
    "monetary_value", "channel", "acquired_at", "acquisition_cost",
)  # fmt: skip
SEGMENT_COLUMNS = ("customer_id", "clv", "clv_tier", "rfm_segment", "churn_probability", "expected_spend")
#: Label of customers without an acquisition channel.
UNKNOWN_CHANNEL = "unknown"
INTERVAL = (0.10, 0.90)
#: Days per time unit of the BG/NBD fit behind the forecast (weeks, as the features use).
BTYD_TIME_UNIT_DAYS = 7.0
#: Fewest complete calendar months of history for a seasonality estimate (else flat).
SEASONALITY_MIN_MONTHS = 13


@dataclass(frozen=True)
class BudgetResult:
    """Everything :func:`budget` wrote, as frames, plus the file paths.

    Attributes
    ----------
    channels, cohorts, forecast, segments, new_customer_clv : DataFrame
        The contents of the CSV files of the same names.
    channel_curves : DataFrame
        Mean cumulative margin per customer (rows: months since acquisition 0..N, columns: channels),
        realised then predicted; the payback curves of the report.
    summary : dict
        Headline numbers shown at the top of the report.
    paths : dict of str to Path
        Written files by name (``channels``, ``cohorts``, ``forecast``, ``segments``,
        ``new_customer_clv``, ``report``).
    """

    channels: pd.DataFrame
    cohorts: pd.DataFrame
    forecast: pd.DataFrame
    segments: pd.DataFrame
    new_customer_clv: pd.DataFrame
    channel_curves: pd.DataFrame
    summary: dict
    paths: dict[str, Path] = field(default_factory=dict)


def _validate_scores(scores: pd.DataFrame) -> None:
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores: missing column(s) {missing}; expected the columns of `clvcast score`")
    dup = scores["customer_id"].duplicated()
    if dup.any():
        raise ValueError(
            f"scores: column 'customer_id': must be unique: {int(dup.sum())} duplicate row(s), "
            f"first: {scores.loc[dup, 'customer_id'].head(3).tolist()}"
        )
    p = scores["churn_probability"].to_numpy(dtype=float)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(
            f"scores: column 'churn_probability': must be in [0, 1]: {int(bad.sum())} row(s), "
            f"first: {scores.loc[bad, 'customer_id'].head(3).tolist()}"
        )
    for col in ("spend_if_active", "clv"):
        bad = ~np.isfinite(scores[col].to_numpy(dtype=float))
        if bad.any():
            raise ValueError(
                f"scores: column '{col}': must be finite: {int(bad.sum())} row(s), "
                f"first: {scores.loc[bad, 'customer_id'].head(3).tolist()}"
            )
    if scores["as_of"].nunique() > 1:
        raise ValueError(f"scores: column 'as_of': must be one date, found {sorted(scores['as_of'].unique())[:3]}")


def _prepare(tables: Tables, scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.Timestamp]:
    """One row per customer with the fields the finance outputs need, and the scoring date."""
    _validate_scores(scores)
    df = scores.copy()
    df["customer_id"] = df["customer_id"].astype("str")
    as_of = pd.Timestamp(pd.to_datetime(df["as_of"]).iloc[0]).normalize() if len(df) else pd.Timestamp("NaT")
    df["channel"] = df["channel"].astype("str").where(df["channel"].notna(), UNKNOWN_CHANNEL)
    df["acquisition_cost"] = pd.to_numeric(df["acquisition_cost"], errors="coerce").astype(float)
    acquired = pd.to_datetime(df["acquired_at"]).dt.normalize().astype("datetime64[ns]")
    if acquired.isna().any():
        # Contract default: acquisition = first transaction.
        first = tables.transactions.groupby("customer_id")["timestamp"].min().dt.normalize()
        acquired = acquired.fillna(df["customer_id"].map(first).astype("datetime64[ns]"))
    df["acquired_at"] = acquired.fillna(as_of)
    df["age_days"] = ((as_of - df["acquired_at"]).dt.days).clip(lower=0).astype(float)
    df["cohort"] = df["acquired_at"].dt.strftime("%Y-%m")
    return df.reset_index(drop=True), as_of


def _realised(
    tables: Tables, df: pd.DataFrame, as_of: pd.Timestamp, *, horizon_days: float, margin: float, cost_to_serve: float
) -> pd.DataFrame:
    """Realised margin per transaction-month since acquisition: columns ``row``, ``month``, ``margin``.

    ``row`` is the customer's position in ``df``. Margin = m · amount, and − c at the first purchase
    of every H-day window since acquisition (cost to serve is per active customer per horizon).
    Purchases before the acquisition date or after the scoring date are not counted.
    """
    tx = tables.transactions[["customer_id", "timestamp", "amount"]]
    pos = pd.Series(np.arange(len(df)), index=pd.Index(df["customer_id"].to_numpy()))
    row = tx["customer_id"].astype("str").map(pos)
    keep = row.notna().to_numpy() & (tx["timestamp"] < as_of + pd.Timedelta(days=1)).to_numpy()
    row = row[keep].to_numpy(dtype=np.int64)
    ts = tx["timestamp"].to_numpy()[keep]
    days = (ts - df["acquired_at"].to_numpy()[row]) / np.timedelta64(1, "D")
    after = days >= 0
    row, days, amount = row[after], days[after], tx["amount"].to_numpy(dtype=float)[keep][after]
    out = pd.DataFrame({"row": row, "month": np.floor(days / C.MONTH_DAYS).astype(np.int64), "margin": margin * amount})
    if cost_to_serve:
        window = np.floor(days / horizon_days).astype(np.int64)
        first = pd.DataFrame({"row": row, "window": window, "days": days}).sort_values("days")
        first = first.drop_duplicates(["row", "window"])
        cost = pd.DataFrame(
            {
                "row": first["row"].to_numpy(),
                "month": np.floor(first["days"].to_numpy() / C.MONTH_DAYS).astype(np.int64),
                "margin": -cost_to_serve,
            }
        )
        out = pd.concat([out, cost], ignore_index=True)
    return out


def _value_curves(
    codes: np.ndarray,
    n_groups: int,
    df: pd.DataFrame,
    realised: pd.DataFrame,
    cumulative: np.ndarray,
    *,
    n_months: int,
    horizon_days: float,
) -> np.ndarray:
    """Sum over each group's customers of the cumulative margin at 0..n_months months since acquisition.

    A customer contributes its realised margin up to its age and, from then on, its predicted
    cumulative margin (``cumulative``, shape (n, K), from :func:`serving.clv.cumulative_margin`;
    piecewise linear within horizons).
    Predicted sums are built per (group, age in whole months) because the interpolation is linear:
    the sum of the customers' curves is the curve of the summed horizon-end values.
    """
    months = np.arange(n_months + 1)
    total = np.zeros((n_groups, n_months + 1))
    # Realised: margin per month since acquisition, then cumulated; at month T it counts months < T.
    j = np.clip(realised["month"].to_numpy(), 0, n_months)
    g = codes[realised["row"].to_numpy()]
    width = n_months + 1
    per_month = np.bincount(g * width + j, weights=realised["margin"].to_numpy(), minlength=n_groups * width)
    per_month = per_month.reshape(n_groups, width)
    total[:, 1:] += np.cumsum(per_month[:, :-1], axis=1)
    # Predicted.
    age = np.rint(df["age_days"].to_numpy() / C.MONTH_DAYS).astype(np.int64)
    key, key_index = np.unique(codes.astype(np.int64) * (age.max() + 1) + age, return_inverse=True)
    k_max = cumulative.shape[1]
    sums = np.zeros((len(key), k_max))
    for k in range(k_max):
        sums[:, k] = np.bincount(key_index, weights=cumulative[:, k], minlength=len(key))
    step = C.months_per_horizon(horizon_days)
    knots = step * np.arange(k_max + 1)
    for i, kv in enumerate(key):
        grp, a = divmod(int(kv), int(age.max() + 1))
        total[grp] += np.interp(months - a, knots, np.concatenate([[0.0], sums[i]]), left=0.0, right=sums[i, -1])
    return total


@dataclass(frozen=True)
class ForecastShape:
    """How the forecast spreads each customer's expected spend over time after the first horizon.

    Attributes
    ----------
    as_of : Timestamp
        Scoring date; the forecast starts the day after it.
    frequency, recency, T : ndarray
        BG/NBD summary (x, t_x, T in units of ``time_unit_days``) per customer, aligned with the
        scores; NaN for a customer without a purchase in the history (treated as just acquired).
    bgnbd : BGNBDParams or None
        BG/NBD fitted on the history up to ``as_of``; None gives the design's retention r^k with a
        flat spread within each horizon (the fallback when BG/NBD cannot be fitted).
    seasonality : ndarray of 12 floats
        Revenue index per calendar month (January first), mean 1; all ones for no seasonality.
    time_unit_days : float
        Days per time unit of the BG/NBD fit.
    """

    as_of: pd.Timestamp
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    bgnbd: BGNBDParams | None
    seasonality: np.ndarray
    time_unit_days: float = BTYD_TIME_UNIT_DAYS


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
        Columns ``timestamp`` and ``amount``.
    as_of : date-like
        Last day of history.
    min_months : int
        Fewest complete months for an estimate.

    Returns
    -------
    ndarray
        12 floats, January first, mean 1.
    """
    flat = np.ones(12)
    as_of = pd.Timestamp(as_of).normalize()
    tx = transactions.loc[transactions["timestamp"] < as_of + pd.Timedelta(days=1), ["timestamp", "amount"]]
    if tx.empty:
        return flat
    first_day = tx["timestamp"].min().normalize()
    first = first_day.to_period("M") + (0 if first_day.day == 1 else 1)
    last = (as_of + pd.Timedelta(days=1)).to_period("M") - 1  # last month ending on or before as_of
    if last < first:
        return flat
    periods = pd.period_range(first, last, freq="M")
    revenue = tx["amount"].groupby(tx["timestamp"].dt.to_period("M")).sum().reindex(periods, fill_value=0.0)
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
    tables: Tables, df: pd.DataFrame, as_of: pd.Timestamp, *, bgnbd: BGNBDParams | None = None, seasonality=None
) -> ForecastShape:
    """BG/NBD summary and fit, and seasonality, from the history up to ``as_of`` (see :class:`ForecastShape`).

    ``bgnbd`` and ``seasonality`` given are used as they are; otherwise BG/NBD is fitted on every
    customer of the history (a warning and the r^k fallback when it cannot be) and the seasonality
    is estimated by :func:`seasonality_indices`.
    """
    unit = BTYD_TIME_UNIT_DAYS
    summary = summary_from_transactions(tables.transactions, cutoff=as_of, time_unit_days=unit)
    summary.index = summary.index.astype("str")
    aligned = summary.reindex(df["customer_id"].astype("str").to_numpy())
    if bgnbd is None:
        try:
            if summary.empty:
                raise ValueError("no purchase in the history")
            bgnbd = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
        except (ValueError, RuntimeError) as exc:
            warnings.warn(
                f"forecast: cannot fit BG/NBD on the history up to {as_of.date()} ({exc}): later horizons "
                "use the retention r^k",
                stacklevel=3,
            )
    if seasonality is None:
        seasonality = seasonality_indices(tables.transactions, as_of)
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
        time_unit_days=unit,
    )


def horizon_ratios(
    params: BGNBDParams,
    frequency,
    recency,
    T,
    *,
    horizon_days: float,
    n_horizons: int,
    time_unit_days: float = BTYD_TIME_UNIT_DAYS,
) -> np.ndarray:
    """ratio_k = (E[X(kH)] − E[X((k−1)H)]) / E[X(H)] per customer, k = 1..n_horizons (BG/NBD).

    The expected purchases of horizon k relative to the first horizon, given each customer's history
    (:func:`features.btyd.bgnbd_expected_purchases`); it falls with k as the customer may have
    dropped out. The forecast spends e · ratio_k in horizon k. Times in ``time_unit_days`` units;
    NaN history = a customer without a purchase (x = t_x = T = 0).

    Returns
    -------
    ndarray
        Shape (n, n_horizons); the first column is 1 (a row of ones for a customer expected to buy
        nothing at all).
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
class _Plan:
    """Forecast of a block of customers: P(active in horizon k) and the monthly spend given active.

    ``survival``: (n, k_f), P(N ≥ k) for the number N of active horizons; ``weights``: (k_f, months,
    n), spend in each month per unit of ``spend_if_active`` given active in horizon k, so that the
    expected revenue of month j is Σ_k survival[:, k] · s · weights[k, j].
    """

    survival: np.ndarray
    weights: np.ndarray


def _segments(horizon_days: float, months: int):
    """Time grid (days) of month and horizon boundaries, and each segment's month and horizon."""
    step = C.months_per_horizon(horizon_days)
    k_f = math.ceil(months / step)
    end = months * C.MONTH_DAYS
    bounds = np.union1d(C.MONTH_DAYS * np.arange(months + 1), horizon_days * np.arange(k_f + 1))
    bounds = bounds[bounds <= horizon_days * k_f + 1e-9]
    mid = (bounds[:-1] + bounds[1:]) / 2
    month = np.floor(mid / C.MONTH_DAYS).astype(np.int64)  # ≥ months: after the forecast window
    horizon = np.floor(mid / horizon_days).astype(np.int64)
    return bounds, month, horizon, k_f, end


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


def _plan(
    p: np.ndarray, shape: ForecastShape | None, rows: slice, *, horizon_days: float, months: int
) -> _Plan:
    bounds, month, horizon, k_f, _ = _segments(horizon_days, months)
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
    return _Plan(survival=survival, weights=weights)


def _simulate(
    df: pd.DataFrame,
    groupings: list[tuple[np.ndarray, int]],
    *,
    horizon_days: float,
    margin: float,
    cost_to_serve: float,
    annual_discount_rate: float,
    lifetime_horizons: int,
    forecast_months: int,
    n_simulations: int,
    spend_cv: float,
    common_cv: float,
    seed: int,
    chunk_size: int,
    shape: ForecastShape | None = None,
) -> dict[str, np.ndarray]:
    """Draws of the group-mean CLV and of the monthly revenue, margin and active customers.

    One uniform V per customer and draw decides both the CLV's active horizons (N ≥ k iff V ≤ r^k,
    the design's retention) and the forecast's (active in horizon k iff V ≤ P(N ≥ k) of the
    forecast, :func:`_plan`), so the two agree customer by customer as far as their definitions do.

    Returns
    -------
    dict
        ``clv_sums``: one array (n_groups, n_simulations) per grouping, the summed simulated CLV;
        ``revenue``, ``margin``: (forecast_months, n_simulations).
    """
    S, K = n_simulations, lifetime_horizons
    step = C.months_per_horizon(horizon_days)
    delta = C.discount_per_horizon(horizon_days, annual_discount_rate)
    # disc[n] = Σ_{k=1..n} (1 + δ)^-k: the discounted value of n active horizons of unit margin.
    disc = np.concatenate([[0.0], np.cumsum((1.0 + delta) ** -np.arange(1, K + 1, dtype=float))])
    _, _, _, k_f, _ = _segments(horizon_days, forecast_months)
    # overlap[j, k]: share of month j+1 inside horizon k+1.
    j = np.arange(forecast_months)[:, None]
    overlap = np.diff(np.clip(np.arange(k_f + 1)[None, :] * step - j, 0.0, 1.0), axis=1)

    seq_z, seq_u, seq_g = np.random.SeedSequence(seed).spawn(3)
    sigma = math.sqrt(math.log1p(common_cv**2))
    z = np.exp(sigma * np.random.default_rng(seq_z).standard_normal(S) - sigma**2 / 2)
    rng_u, rng_g = np.random.default_rng(seq_u), np.random.default_rng(seq_g)
    gamma_shape = 1.0 / spend_cv**2 if spend_cv > 0 else None

    clv_sums = [np.zeros(n * S) for _, n in groupings]
    revenue = np.zeros((forecast_months, S))
    active_k = np.zeros((k_f, S))
    sim = np.arange(S)
    p_all = df["churn_probability"].to_numpy(dtype=float)
    s_all = df["spend_if_active"].to_numpy(dtype=float)
    for start in range(0, len(df), chunk_size):
        stop = min(start + chunk_size, len(df))
        p, s = p_all[start:stop], s_all[start:stop]
        v = 1.0 - rng_u.random((stop - start, S))  # in (0, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            # N = floor(log V / log r): P(N >= k) = P(V <= r^k) = r^k. r = 1 gives +inf (or NaN for
            # V = 1), both meaning "never churns": fmin maps them to the cap.
            x = np.log(v) * (1.0 / np.log1p(-p))[:, None]
        n_active = np.floor(np.fmin(x, K), out=x).astype(np.int64)
        del x
        spend = s[:, None] * z[None, :]
        if gamma_shape is not None:
            spend = spend * rng_g.gamma(gamma_shape, 1.0 / gamma_shape, size=(stop - start, S))
        value = (margin * spend - cost_to_serve) * disc[n_active]
        for (codes, n), acc in zip(groupings, clv_sums):
            acc += np.bincount((codes[start:stop, None] * S + sim).ravel(), weights=value.ravel(), minlength=n * S)
        plan = _plan(p, shape, slice(start, stop), horizon_days=horizon_days, months=forecast_months)
        for k in range(k_f):
            on = v <= plan.survival[:, k : k + 1]
            revenue += plan.weights[k] @ np.where(on, spend, 0.0)
            active_k[k] += on.sum(axis=0)
    customers = overlap @ active_k
    return {
        "clv_sums": [a.reshape(n, S) for a, (_, n) in zip(clv_sums, groupings)],
        "revenue": revenue,
        "margin": margin * revenue - cost_to_serve / step * customers,
    }


def _expected_forecast(
    df: pd.DataFrame,
    *,
    horizon_days: float,
    margin: float,
    cost_to_serve: float,
    months: int,
    shape: ForecastShape | None = None,
    chunk_size: int = 20_000,
):
    """Exact expected revenue, margin and active customers per month (the simulation's mean)."""
    step = C.months_per_horizon(horizon_days)
    _, _, _, k_f, _ = _segments(horizon_days, months)
    j = np.arange(months)[:, None]
    overlap = np.diff(np.clip(np.arange(k_f + 1)[None, :] * step - j, 0.0, 1.0), axis=1)
    p_all = df["churn_probability"].to_numpy(dtype=float)
    s_all = df["spend_if_active"].to_numpy(dtype=float)
    revenue = np.zeros(months)
    survival = np.zeros(k_f)
    for start in range(0, len(df), chunk_size):
        stop = min(start + chunk_size, len(df))
        plan = _plan(p_all[start:stop], shape, slice(start, stop), horizon_days=horizon_days, months=months)
        revenue += np.einsum("kjn,nk->j", plan.weights, plan.survival * s_all[start:stop, None])
        survival += plan.survival.sum(axis=0)
    customers = overlap @ survival
    return revenue, margin * revenue - cost_to_serve / step * customers, customers


def _interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.quantile(draws, INTERVAL, axis=-1)
    return lo, hi


def _group_table(
    df: pd.DataFrame,
    keys: list[str],
    sims: np.ndarray,
    curves: np.ndarray,
    realised_total: np.ndarray,
    *,
    target_ratio: float,
) -> pd.DataFrame:
    """CAC, CLV, LTV:CAC, payback and recommendation per group (rows in code order)."""
    g = df.groupby("_code", sort=True)
    out = g[keys].first()
    out["customers"] = g.size()
    out["customers_with_cac"] = g["acquisition_cost"].count()
    out["mean_cac"] = g["acquisition_cost"].mean()
    out["total_cac"] = g["acquisition_cost"].sum(min_count=1)
    out["mean_clv"] = g["clv"].mean()
    n = out["customers"].to_numpy(dtype=float)
    lo, hi = _interval(sims / n[:, None])
    out["clv_low"], out["clv_high"] = lo, hi
    out["realised_margin"] = realised_total / n
    out["mean_ltv"] = out["realised_margin"] + out["mean_clv"]
    out["ltv_cac"] = C.ltv_cac_ratio(out["mean_ltv"], out["mean_cac"])
    out["max_allowable_cac"] = C.max_allowable_cac(out["mean_ltv"], target_ratio=target_ratio)
    out["payback_months"] = C.payback_months(curves[:, 1:] / n[:, None], out["mean_cac"].to_numpy(), step_months=1.0)
    out["recommendation"] = C.recommendation(out["ltv_cac"], target_ratio=target_ratio)
    return out.reset_index(drop=True)


def new_customer_clv(
    scores: pd.DataFrame, *, max_age_days: float = 90, realised_margin: pd.Series | None = None
) -> pd.DataFrame:
    """Expected value of a customer just acquired, per channel.

    The mean, over customers acquired at most ``max_age_days`` before the scoring date, of their
    value from acquisition: the realised margin so far (if given) plus the predicted CLV. Young
    customers stand in for new ones because the models scored them at (nearly) acquisition age.

    Parameters
    ----------
    scores : DataFrame
        Scores with ``customer_id``, ``as_of``, ``acquired_at``, ``channel``, ``clv``.
    max_age_days : float
        Largest age at the scoring date, in days, of a customer counted as new.
    realised_margin : Series, optional
        Realised margin since acquisition indexed by ``customer_id``; missing = 0.

    Returns
    -------
    DataFrame
        Indexed by ``channel`` (missing channel = ``"unknown"``), columns ``customers`` and
        ``new_customer_clv``; channels without young customers are absent.
    """
    as_of = pd.to_datetime(scores["as_of"]).dt.normalize()
    age = (as_of - pd.to_datetime(scores["acquired_at"]).dt.normalize()).dt.days
    young = scores.loc[(age <= max_age_days).to_numpy()]
    value = young["clv"].to_numpy(dtype=float)
    if realised_margin is not None:
        value = value + young["customer_id"].map(realised_margin).fillna(0.0).to_numpy(dtype=float)
    channel = young["channel"].astype("str").where(young["channel"].notna(), UNKNOWN_CHANNEL)
    out = pd.DataFrame({"channel": channel.to_numpy(), "value": value}).groupby("channel", sort=True)["value"]
    return pd.DataFrame({"customers": out.size(), "new_customer_clv": out.mean()})


def acquisition_budget(
    channels: list[Mapping],
    new_clv_by_channel: pd.DataFrame | Mapping[str, float],
    *,
    target_ratio: float,
) -> list[dict]:
    """LTV:CAC, maximum allowable CAC and a recommendation for each proposed channel and CAC.

    Parameters
    ----------
    channels : list of mapping
        Each with ``channel`` (str) and ``cac`` (float ≥ 0, the cost per acquired customer).
    new_clv_by_channel : DataFrame or mapping
        From :func:`new_customer_clv` (columns ``customers``, ``new_customer_clv``), or a plain
        ``{channel: clv}``.
    target_ratio : float
        Target LTV:CAC.

    Returns
    -------
    list of dict
        Per input channel: ``channel``, ``cac``, ``new_customer_clv``, ``ltv_cac``,
        ``max_allowable_cac``, ``recommendation``, ``basis`` (``"channel"``, or ``"overall"`` for a
        channel without recently acquired customers, which gets the customer-weighted mean over all
        channels) and ``note``.
    """
    if isinstance(new_clv_by_channel, pd.DataFrame):
        values = new_clv_by_channel["new_customer_clv"].astype(float)
        weights = new_clv_by_channel["customers"].astype(float)
        overall = float(np.average(values, weights=weights)) if weights.sum() > 0 else float("nan")
        by_channel = values.to_dict()
    else:
        by_channel = {str(k): float(v) for k, v in new_clv_by_channel.items()}
        overall = float(np.mean(list(by_channel.values()))) if by_channel else float("nan")
    out = []
    for item in channels:
        name, cac = str(item["channel"]), float(item["cac"])
        known = name in by_channel
        value = by_channel[name] if known else overall
        ratio = float(C.ltv_cac_ratio(value, cac))
        out.append(
            {
                "channel": name,
                "cac": cac,
                "new_customer_clv": value,
                "ltv_cac": ratio,
                "max_allowable_cac": float(C.max_allowable_cac(value, target_ratio=target_ratio)),
                "recommendation": str(C.recommendation(ratio, target_ratio=target_ratio)[()]),
                "basis": "channel" if known else "overall",
                "note": ""
                if known
                else f"no recently acquired customers from channel '{name}': used the mean over all channels",
            }
        )
    return out


def budget(
    tables: Tables,
    scores: pd.DataFrame,
    *,
    out_dir: str | Path,
    horizon_days: float,
    clv: ClvConfig,
    new_customer_max_age_days: float = 90,
    forecast_months: int = 12,
    curve_months: int = 36,
    n_simulations: int = 200,
    spend_cv: float = 0.5,
    common_cv: float = 0.10,
    seed: int = 0,
    chunk_size: int = 20_000,
    forecast_bgnbd: BGNBDParams | None = None,
    seasonality=None,
) -> BudgetResult:
    """Write the finance CSVs and the HTML report for a scored customer base.

    Parameters
    ----------
    tables : Tables
        Raw tables; transactions give the realised margin, ``customers.referred_by`` the referrals.
    scores : DataFrame
        One row per customer with ``SCORE_COLUMNS``, all with the same ``as_of``.
    out_dir : str or Path
        Directory for the outputs; created if missing.
    horizon_days : float
        H the scores were computed with, days (their scoring run's ``horizon_days``).
    clv : ClvConfig
        m, c, d, K of the CLV arithmetic (must be those the scores were computed with: a warning
        says when the scores' ``clv`` does not match them), the target LTV:CAC for the maximum
        allowable CAC and the recommendation, and the referral credit (share of a referred
        customer's CLV, minus the bonus paid per referral).
    new_customer_max_age_days : float
        Customers at most this old (days since acquisition) define the new-customer CLV.
    forecast_months : int
        Months in ``forecast.csv``.
    curve_months : int
        Months since acquisition in the cohort value curves of ``cohorts.csv``.
    n_simulations : int
        Draws behind the 80 % intervals.
    spend_cv : float
        Coefficient of variation of a customer's spend level around ``spend_if_active`` (gamma).
    common_cv : float
        Coefficient of variation of the base-wide multiplier (lognormal); calibrate it on the
        forecast backtest.
    seed : int
        Seed of the simulation.
    chunk_size : int
        Customers simulated at once (memory ≈ chunk_size · n_simulations · 50 bytes).

    Returns
    -------
    BudgetResult
    """
    from serving.report import render_report  # matplotlib is only needed when a report is written

    margin, cost_to_serve = clv.gross_margin, clv.cost_to_serve
    annual_discount_rate, lifetime_horizons = clv.annual_discount_rate, clv.lifetime_horizons
    target_ratio, referral_share, referral_bonus = clv.target_ltv_cac, clv.referral_share, clv.referral_bonus
    clv_kwargs = dict(
        margin=margin,
        cost_to_serve=cost_to_serve,
        annual_discount_rate=annual_discount_rate,
        lifetime_horizons=lifetime_horizons,
    )
    df, as_of = _prepare(tables, scores)
    expected = C.lifetime_clv(df["churn_probability"], df["spend_if_active"], horizon_days=horizon_days, **clv_kwargs)
    off = ~np.isclose(expected, df["clv"].to_numpy(dtype=float), rtol=1e-4, atol=1e-6)
    if off.any():
        warnings.warn(
            f"scores: column 'clv' differs from the CLV recomputed with horizon_days={horizon_days}, "
            f"{clv_kwargs} for {int(off.sum())} of {len(df)} customers: the intervals and payback "
            "curves use these settings, the means use the scores",
            stacklevel=2,
        )

    realised = _realised(tables, df, as_of, horizon_days=horizon_days, margin=margin, cost_to_serve=cost_to_serve)
    realised_per_customer = np.bincount(realised["row"], weights=realised["margin"], minlength=len(df))

    channel_names = np.array(sorted(df["channel"].unique()), dtype=object)
    channel_code = np.searchsorted(channel_names, df["channel"].to_numpy())
    pair = df["cohort"] + "\x00" + df["channel"]
    pair_names = np.array(sorted(pair.unique()), dtype=object)
    pair_code = np.searchsorted(pair_names, pair.to_numpy())

    shape = fit_forecast_shape(tables, df, as_of, bgnbd=forecast_bgnbd, seasonality=seasonality)
    sims = _simulate(
        df,
        [(channel_code, len(channel_names)), (pair_code, len(pair_names))],
        horizon_days=horizon_days,
        forecast_months=forecast_months,
        n_simulations=n_simulations,
        spend_cv=spend_cv,
        common_cv=common_cv,
        seed=seed,
        chunk_size=chunk_size,
        shape=shape,
        **clv_kwargs,
    )
    step = C.months_per_horizon(horizon_days)
    max_age = int(np.rint(df["age_days"].max() / C.MONTH_DAYS)) if len(df) else 0
    n_months = max(curve_months, max_age + math.ceil(lifetime_horizons * step) + 1)

    cumulative = C.cumulative_margin(
        df["churn_probability"], df["spend_if_active"], horizon_days=horizon_days, **clv_kwargs
    )

    def table(codes, n_groups, sim_sums, keys):
        curves = _value_curves(codes, n_groups, df, realised, cumulative, n_months=n_months, horizon_days=horizon_days)
        realised_total = np.bincount(codes, weights=realised_per_customer, minlength=n_groups)
        work = df.assign(_code=codes)
        return _group_table(work, keys, sim_sums, curves, realised_total, target_ratio=target_ratio), curves

    channels, channel_curves = table(channel_code, len(channel_names), sims["clv_sums"][0], ["channel"])
    cohorts, cohort_curves = table(pair_code, len(pair_names), sims["clv_sums"][1], ["cohort", "channel"])

    # Cohort value curves: realised up to the cohort's age (its youngest customer), predicted after;
    # both columns hold the junction month so that the two lines meet.
    age_months = df.assign(_code=pair_code).groupby("_code")["age_days"].min().to_numpy() // C.MONTH_DAYS
    cohorts.insert(3, "age_months", age_months.astype(int))
    per_customer = cohort_curves / cohorts["customers"].to_numpy(dtype=float)[:, None]
    t = np.arange(1, curve_months + 1)
    realised_cols = {f"realised_m{m:02d}": np.where(m <= age_months, per_customer[:, m], np.nan) for m in t}
    predicted_cols = {f"predicted_m{m:02d}": np.where(m >= age_months, per_customer[:, m], np.nan) for m in t}
    cohorts = pd.concat([cohorts, pd.DataFrame(realised_cols), pd.DataFrame(predicted_cols)], axis=1)
    cohorts = cohorts.sort_values(["cohort", "channel"], kind="stable").reset_index(drop=True)

    revenue, margin_exp, active = _expected_forecast(
        df, horizon_days=horizon_days, margin=margin, cost_to_serve=cost_to_serve, months=forecast_months,
        shape=shape, chunk_size=chunk_size,
    )
    rev_lo, rev_hi = _interval(sims["revenue"])
    mar_lo, mar_hi = _interval(sims["margin"])
    cum_lo, cum_hi = _interval(np.cumsum(sims["revenue"], axis=0))
    month = np.arange(1, forecast_months + 1)
    start = as_of + pd.Timedelta(days=1)
    forecast = pd.DataFrame(
        {
            "month": month,
            "period_start": [(start + pd.Timedelta(days=round((m - 1) * C.MONTH_DAYS))).date() for m in month],
            "period_end": [(as_of + pd.Timedelta(days=round(m * C.MONTH_DAYS))).date() for m in month],
            "expected_revenue": revenue,
            "revenue_low": rev_lo,
            "revenue_high": rev_hi,
            "expected_margin": margin_exp,
            "margin_low": mar_lo,
            "margin_high": mar_hi,
            "expected_active_customers": active,
            "cumulative_revenue": np.cumsum(revenue),
            "cumulative_revenue_low": cum_lo,
            "cumulative_revenue_high": cum_hi,
        }
    )

    segments = df[list(SEGMENT_COLUMNS)].copy()
    customers = tables.customers
    has_referrals = customers is not None and "referred_by" in customers.columns
    if has_referrals:
        referred_by = customers.set_index(customers["customer_id"].astype("str"))["referred_by"]
        credit = C.referral_credit(
            referred_by,
            df.set_index("customer_id")["clv"],
            referral_share=referral_share,
            referral_bonus=referral_bonus,
        )
        segments["referral_credit"] = segments["customer_id"].map(credit).fillna(0.0).to_numpy(dtype=float)

    new_clv = new_customer_clv(
        df.assign(as_of=as_of),
        max_age_days=new_customer_max_age_days,
        realised_margin=pd.Series(realised_per_customer, index=df["customer_id"].to_numpy()),
    )

    curves_frame = pd.DataFrame(
        (channel_curves / channels["customers"].to_numpy(dtype=float)[:, None]).T,
        columns=pd.Index(channels["channel"], name="channel"),
    ).rename_axis("months_since_acquisition")
    total_cac = float(df["acquisition_cost"].sum())
    summary = {
        "as_of": as_of.date().isoformat(),
        "customers": int(len(df)),
        "total_clv": float(df["clv"].sum()),
        "mean_clv": float(df["clv"].mean()) if len(df) else float("nan"),
        "total_realised_margin": float(realised_per_customer.sum()),
        "total_cac": total_cac,
        # Same rule as per channel: mean LTV over all customers / mean CAC over those with a CAC.
        "overall_ltv_cac": float(
            C.ltv_cac_ratio(
                (realised_per_customer.sum() + df["clv"].sum()) / max(len(df), 1), df["acquisition_cost"].mean()
            )
        ),
        "forecast_revenue": float(revenue.sum()),
        "forecast_revenue_low": float(cum_lo[-1]),
        "forecast_revenue_high": float(cum_hi[-1]),
        "forecast_margin": float(margin_exp.sum()),
        "forecast_months": forecast_months,
        # How later months were projected (see "Revenue forecast" in the module docstring).
        "forecast_decay": "bgnbd" if shape.bgnbd is not None else "retention",
        "forecast_seasonality": [float(v) for v in shape.seasonality],
        "total_referral_credit": float(segments["referral_credit"].sum()) if has_referrals else None,
        "settings": {
            "horizon_days": horizon_days,
            **clv_kwargs,
            "target_ratio": target_ratio,
            "referral_share": referral_share,
            "referral_bonus": referral_bonus,
            "new_customer_max_age_days": new_customer_max_age_days,
            "n_simulations": n_simulations,
            "spend_cv": spend_cv,
            "common_cv": common_cv,
            "seed": seed,
        },
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.csv" for name in ("channels", "cohorts", "forecast", "segments", "new_customer_clv")}
    channels.to_csv(paths["channels"], index=False)
    cohorts.to_csv(paths["cohorts"], index=False)
    forecast.to_csv(paths["forecast"], index=False)
    segments.to_csv(paths["segments"], index=False)
    new_clv.to_csv(paths["new_customer_clv"], index=True)
    result = BudgetResult(
        channels=channels,
        cohorts=cohorts,
        forecast=forecast,
        segments=segments,
        new_customer_clv=new_clv,
        channel_curves=curves_frame,
        summary=summary,
        paths=paths,
    )
    paths["report"] = out / "report.html"
    paths["report"].write_text(render_report(result), encoding="utf-8")
    return result
