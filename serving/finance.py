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
  interval is not the sum of the monthly ones);
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

Intervals (simulation)
----------------------
Each of ``n_simulations`` draws simulates every customer: the number of active horizons N with
P(N ≥ k) = r^k (the retention the CLV formula uses; active status is decided per horizon, so the
simulated means equal the scores' expected spend and CLV), a spend multiplier per customer
G ~ Gamma(mean 1, CV ``spend_cv``) for the customer's spend level, and a multiplier common to all
customers Z ~ LogNormal(mean 1, CV ``common_cv``) for what moves the whole base (model error,
economy). Without Z the interval of a large base shrinks like 1 / √n and says nothing about the
model; set ``common_cv`` from the forecast backtest. 80 % intervals are the 10th and 90th percentiles
of the draws. Customers are simulated in chunks, so memory stays bounded for millions of customers;
a fixed seed gives the same numbers for any chunk size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import Tables
from serving import clv as C

SCORE_COLUMNS = (
    "customer_id", "as_of", "churn_probability", "spend_if_active", "expected_spend", "clv_horizon",
    "clv", "expected_lifetime_days", "clv_tier", "rfm_segment", "recency_days", "frequency",
    "monetary_value", "channel", "acquired_at", "acquisition_cost",
)  # fmt: skip
SEGMENT_COLUMNS = ("customer_id", "clv", "clv_tier", "rfm_segment", "churn_probability", "expected_spend")
#: Label of customers without an acquisition channel.
UNKNOWN_CHANNEL = "unknown"
INTERVAL = (0.10, 0.90)


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
) -> dict[str, np.ndarray]:
    """Draws of the group-mean CLV and of the monthly revenue, margin and active customers.

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
    # The forecast follows retention past the lifetime cap if the cap is shorter than the forecast;
    # the cap only bounds the CLV.
    k_f = math.ceil(forecast_months / step)
    n_cap = max(K, k_f)
    # active[j, n]: share of month j+1 covered by the first n horizons (n active horizons).
    j = np.arange(forecast_months)[:, None]
    active = np.clip(np.arange(k_f + 1)[None, :] * step - j, 0.0, 1.0)

    seq_z, seq_u, seq_g = np.random.SeedSequence(seed).spawn(3)
    sigma = math.sqrt(math.log1p(common_cv**2))
    z = np.exp(sigma * np.random.default_rng(seq_z).standard_normal(S) - sigma**2 / 2)
    rng_u, rng_g = np.random.default_rng(seq_u), np.random.default_rng(seq_g)
    shape = 1.0 / spend_cv**2 if spend_cv > 0 else None

    clv_sums = [np.zeros(n * S) for _, n in groupings]
    rev_n = np.zeros((k_f + 1) * S)
    act_n = np.zeros((k_f + 1) * S)
    sim = np.arange(S)
    p_all = df["churn_probability"].to_numpy(dtype=float)
    s_all = df["spend_if_active"].to_numpy(dtype=float)
    for start in range(0, len(df), chunk_size):
        stop = min(start + chunk_size, len(df))
        p, s = p_all[start:stop], s_all[start:stop]
        with np.errstate(divide="ignore", invalid="ignore"):
            # N = floor(log U / log r) with U in (0, 1]: P(N >= k) = P(U <= r^k) = r^k. r = 1 gives
            # +inf (or NaN for U = 1), both meaning "never churns": fmin maps them to the cap.
            inv_log_r = 1.0 / np.log1p(-p)
            x = np.log1p(-rng_u.random((stop - start, S)))
            x *= inv_log_r[:, None]
        n_active = np.floor(np.fmin(x, n_cap), out=x).astype(np.int64)
        del x
        spend = s[:, None] * z[None, :]
        if shape is not None:
            spend = spend * rng_g.gamma(shape, 1.0 / shape, size=(stop - start, S))
        value = (margin * spend - cost_to_serve) * disc[np.minimum(n_active, K)]
        for (codes, n), acc in zip(groupings, clv_sums):
            acc += np.bincount((codes[start:stop, None] * S + sim).ravel(), weights=value.ravel(), minlength=n * S)
        idx = (np.minimum(n_active, k_f) * S + sim).ravel()
        rev_n += np.bincount(idx, weights=(spend / step).ravel(), minlength=(k_f + 1) * S)
        act_n += np.bincount(idx, minlength=(k_f + 1) * S)
    revenue = active @ rev_n.reshape(k_f + 1, S)
    customers = active @ act_n.reshape(k_f + 1, S)
    return {
        "clv_sums": [a.reshape(n, S) for a, (_, n) in zip(clv_sums, groupings)],
        "revenue": revenue,
        "margin": margin * revenue - cost_to_serve / step * customers,
    }


def _expected_forecast(df: pd.DataFrame, *, horizon_days: float, margin: float, cost_to_serve: float, months: int):
    """Exact expected revenue, margin and active customers per month (the simulation's mean)."""
    step = C.months_per_horizon(horizon_days)
    k_f = math.ceil(months / step)
    k = np.arange(k_f + 1)
    j = np.arange(months)[:, None]
    covered = np.clip(k[None, :] * step - j, 0.0, 1.0)
    overlap = np.diff(covered, axis=1)  # share of month j+1 inside horizon k (k = 1..k_f)
    r = 1.0 - df["churn_probability"].to_numpy(dtype=float)
    s = df["spend_if_active"].to_numpy(dtype=float)
    rk = np.stack([r**kk for kk in range(1, k_f + 1)], axis=1) if len(r) else np.zeros((0, k_f))
    revenue = overlap @ (s @ rk) / step
    customers = overlap @ rk.sum(axis=0)
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
    target_ratio: float = C.DEFAULT_TARGET_RATIO,
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
    horizon_days: float = 182,
    margin: float = C.DEFAULT_MARGIN,
    cost_to_serve: float = C.DEFAULT_COST_TO_SERVE,
    annual_discount_rate: float = C.DEFAULT_ANNUAL_DISCOUNT_RATE,
    lifetime_horizons: int = C.DEFAULT_LIFETIME_HORIZONS,
    target_ratio: float = C.DEFAULT_TARGET_RATIO,
    referral_share: float = C.DEFAULT_REFERRAL_SHARE,
    referral_bonus: float = C.DEFAULT_REFERRAL_BONUS,
    new_customer_max_age_days: float = 90,
    forecast_months: int = 12,
    curve_months: int = 36,
    n_simulations: int = 200,
    spend_cv: float = 0.5,
    common_cv: float = 0.10,
    seed: int = 0,
    chunk_size: int = 20_000,
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
        H the scores were computed with, days (default 182, the training default).
    margin, cost_to_serve, annual_discount_rate, lifetime_horizons : float, float, float, int
        m, c, d, K of the CLV arithmetic; must be those the scores were computed with (a warning
        says when the scores' ``clv`` does not match them).
    target_ratio : float
        Target LTV:CAC for the maximum allowable CAC and the recommendation.
    referral_share, referral_bonus : float
        Referral credit: share of a referred customer's CLV, minus the bonus paid per referral.
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

    if not target_ratio > 0:
        raise ValueError(f"target_ratio must be > 0, got {target_ratio}")
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
        df, horizon_days=horizon_days, margin=margin, cost_to_serve=cost_to_serve, months=forecast_months
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
