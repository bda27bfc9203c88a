"""LTV, CAC and payback per acquisition channel and per cohort (acquisition month × channel).

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
  customer (realised, then the scores' per-horizon margin curve spread evenly over its months,
  discounted) reaches the mean CAC; ``inf`` when it never does within the lifetime
  cap. Monthly resolution: a customer's age is rounded to whole months.
- **Recommendation**: ``grow`` if LTV:CAC ≥ target, ``cut`` if < 1, ``hold`` in between, ``unknown``
  without CAC (:func:`serving.clv.recommendation`).
- **Cohort advice** (:func:`cohort_advice`): a cohort's own mean LTV is noisy when it holds few
  customers, so its recommendation reads the Bühlmann credibility estimate
  Z · (cohort mean LTV) + (1 − Z) · (channel mean LTV), Z = n / (n + k), over the cohort's mean
  CAC (the CAC was paid, it is not estimated); a cohort of fewer than N customers gets no advice,
  only the reason. N and k are ``ClvConfig.cohort_min_customers`` and ``cohort_credibility_k``.

The cohort value curves and payback (``cohorts.csv``, ``channels.csv``) are the cumulative
discounted margin of the scores' spend curve (``expected_margin_curve``,
:func:`serving.clv.cumulative_margin`), so that a curve ends at realised margin + CLV. Months are ``serving.clv.MONTH_DAYS`` (30.4375) days long.

The functions here take the *prepared* scores of :func:`serving.finance.budget.compute_budget`: one
row per customer with ``customer_id``, ``channel`` (missing = ``"unknown"``), ``cohort``
(``YYYY-MM`` of acquisition), ``acquired_at``, ``age_days`` (days from acquisition to the scoring
date, ≥ 0), ``acquisition_cost``, ``churn_probability``, ``spend_if_active``, ``clv`` and
``expected_margin_curve``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving import clv as C
from serving.finance.simulate import interval
from training.config import ClvConfig

__all__ = ["Groups", "cohort_advice", "ltv_tables", "realised_margin"]


@dataclass(frozen=True)
class Groups:
    """The channel and the (cohort, channel) pair of every customer, as codes in sorted name order.

    Attributes
    ----------
    channel_code : ndarray of int, shape (n,)
        Position of the customer's channel in the sorted channel names.
    n_channels : int
    pair_code : ndarray of int, shape (n,)
        Position of the customer's (cohort, channel) in the sorted pairs.
    n_pairs : int
    """

    channel_code: np.ndarray
    n_channels: int
    pair_code: np.ndarray
    n_pairs: int

    @classmethod
    def of(cls, df: pd.DataFrame) -> Groups:
        """Codes of the prepared scores ``df`` (columns ``channel`` and ``cohort``)."""
        channel_names = np.array(sorted(df["channel"].unique()), dtype=object)
        pair = df["cohort"] + "\x00" + df["channel"]
        pair_names = np.array(sorted(pair.unique()), dtype=object)
        return cls(
            channel_code=np.searchsorted(channel_names, df["channel"].to_numpy()),
            n_channels=len(channel_names),
            pair_code=np.searchsorted(pair_names, pair.to_numpy()),
            n_pairs=len(pair_names),
        )

    @property
    def groupings(self) -> list[tuple[np.ndarray, int]]:
        """``[(channel_code, n_channels), (pair_code, n_pairs)]``, as :func:`serving.finance.simulate.simulate` takes them."""
        return [(self.channel_code, self.n_channels), (self.pair_code, self.n_pairs)]


def realised_margin(
    transactions: pd.DataFrame, acquired_at: pd.Series, as_of: pd.Timestamp, *, horizon_days: float, clv: ClvConfig
) -> pd.DataFrame:
    """Realised margin per customer and whole month since acquisition.

    Margin = m · amount, and − c at the first purchase of every H-day window since acquisition (cost
    to serve is per active customer per horizon). Purchases before the acquisition date or after the
    scoring date are not counted. A pure function of each customer's rows: the table of a part of
    the book holding whole customers is that part of the book's table.

    Parameters
    ----------
    transactions : DataFrame
        ``customer_id``, ``timestamp``, ``amount`` (currency units).
    acquired_at : Series
        Acquisition day (``datetime64[ns]``) indexed by ``customer_id`` (str): the customers whose
        margin is wanted (the prepared scores'); the other customers' rows are not read.
    as_of : Timestamp
        Scoring date: purchases up to the end of this day count.
    horizon_days : float
        H, days.
    clv : ClvConfig
        m (``gross_margin``) and c (``cost_to_serve``).

    Returns
    -------
    DataFrame
        Columns ``customer_id`` (str), ``month`` (whole months since acquisition, int) and ``margin``
        (currency units, summed over the customer's purchases and costs to serve of that month);
        sorted by customer and month.
    """
    margin, cost_to_serve = clv.gross_margin, clv.cost_to_serve
    tx = transactions
    at = acquired_at.reindex(pd.Index(tx["customer_id"].astype("str"))).to_numpy(dtype="datetime64[ns]")
    keep = ~np.isnat(at) & (tx["timestamp"] < as_of + pd.Timedelta(days=1)).to_numpy()
    days = (tx["timestamp"].to_numpy(dtype="datetime64[ns]")[keep] - at[keep]) / np.timedelta64(1, "D")
    after = days >= 0
    ids = tx["customer_id"].astype("str").to_numpy()[keep][after]
    days, amount = days[after], tx["amount"].to_numpy(dtype=float)[keep][after]
    rows = pd.DataFrame({"customer_id": ids, "month": np.floor(days / C.MONTH_DAYS).astype(np.int64), "margin": margin * amount})
    if cost_to_serve:
        window = np.floor(days / horizon_days).astype(np.int64)
        first = pd.DataFrame({"customer_id": ids, "window": window, "days": days}).sort_values("days", kind="stable")
        first = first.drop_duplicates(["customer_id", "window"])
        cost = pd.DataFrame(
            {
                "customer_id": first["customer_id"].to_numpy(),
                "month": np.floor(first["days"].to_numpy() / C.MONTH_DAYS).astype(np.int64),
                "margin": -cost_to_serve,
            }
        )
        rows = pd.concat([rows, cost], ignore_index=True)
    out = rows.groupby(["customer_id", "month"], sort=True)["margin"].sum().reset_index()
    return out.astype({"customer_id": "str", "month": np.int64, "margin": float})


def _value_curves(
    codes: np.ndarray,
    n_groups: int,
    age_days: np.ndarray,
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

    Returns
    -------
    ndarray, shape (n_groups, n_months + 1)
        Currency units.
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
    age = np.rint(age_days / C.MONTH_DAYS).astype(np.int64)
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


def _group_table(
    df: pd.DataFrame,
    keys: list[str],
    sims: np.ndarray,
    curves: np.ndarray,
    realised_total: np.ndarray,
    *,
    target_ratio: float,
) -> pd.DataFrame:
    """CAC, CLV, LTV:CAC, payback and recommendation per group (rows in code order, ``df["_code"]``)."""
    g = df.groupby("_code", sort=True)
    out = g[keys].first()
    out["customers"] = g.size()
    out["customers_with_cac"] = g["acquisition_cost"].count()
    out["mean_cac"] = g["acquisition_cost"].mean()
    out["total_cac"] = g["acquisition_cost"].sum(min_count=1)
    out["mean_clv"] = g["clv"].mean()
    n = out["customers"].to_numpy(dtype=float)
    lo, hi = interval(sims / n[:, None])
    out["clv_low"], out["clv_high"] = lo, hi
    out["realised_margin"] = realised_total / n
    out["mean_ltv"] = out["realised_margin"] + out["mean_clv"]
    out["ltv_cac"] = C.ltv_cac_ratio(out["mean_ltv"], out["mean_cac"])
    out["max_allowable_cac"] = C.max_allowable_cac(out["mean_ltv"], target_ratio=target_ratio)
    out["payback_months"] = C.payback_months(curves[:, 1:] / n[:, None], out["mean_cac"].to_numpy(), step_months=1.0)
    out["recommendation"] = C.recommendation(out["ltv_cac"], target_ratio=target_ratio)
    return out.reset_index(drop=True)


def ltv_tables(
    df: pd.DataFrame,
    realised: pd.DataFrame,
    realised_per_customer: np.ndarray,
    groups: Groups,
    clv_sums: list[np.ndarray],
    *,
    horizon_days: float,
    clv: ClvConfig,
    target_ratio: float,
    curve_months: int,
    cohort_min_customers: int = 1,
    cohort_credibility_k: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The channel and cohort tables and the channels' payback curves.

    Parameters
    ----------
    df : DataFrame
        Prepared scores, n rows.
    realised : DataFrame
        :func:`realised_margin` with a column ``row``: the customer's position in ``df``.
    realised_per_customer : ndarray, shape (n,)
        ``realised["margin"]`` summed per ``realised["row"]``, currency units.
    groups : Groups
        Channel and cohort codes of ``df``.
    clv_sums : list of ndarray
        Simulated CLV summed per group, shapes (n_channels, S) and (n_pairs, S)
        (:func:`serving.finance.simulate.simulate` with ``groups.groupings``).
    horizon_days : float
        H, days.
    clv : ClvConfig
        m, c, d, K of the scores' CLV.
    target_ratio : float
        Target LTV:CAC of the maximum allowable CAC and the recommendation.
    curve_months : int
        Months since acquisition in the cohorts' value curves.
    cohort_min_customers, cohort_credibility_k : int, float
        N and k of the cohorts' advice (:func:`cohort_advice`); the defaults give every cohort
        its own advice.

    Returns
    -------
    channels : DataFrame
        One row per channel, sorted: ``channel``, ``customers``, ``customers_with_cac``, ``mean_cac``,
        ``total_cac``, ``mean_clv``, ``clv_low``, ``clv_high`` (80 % interval of the mean CLV),
        ``realised_margin`` (per customer), ``mean_ltv``, ``ltv_cac``, ``max_allowable_cac``,
        ``payback_months``, ``recommendation``; money in currency units.
    cohorts : DataFrame
        The same per (cohort, channel), sorted, with ``age_months`` (of the cohort's youngest
        customer), the columns of :func:`cohort_advice` (its ``recommendation`` replaces the
        cohort's raw one) and the value curve per customer: ``realised_mNN`` up to that age and
        ``predicted_mNN`` from it, NN = 01..curve_months.
    channel_curves : DataFrame
        Mean cumulative margin per customer, rows ``months_since_acquisition`` 0..N, one column per
        channel: the payback curves of the report.
    """
    step = C.months_per_horizon(horizon_days)
    max_age = int(np.rint(df["age_days"].max() / C.MONTH_DAYS)) if len(df) else 0
    n_months = max(curve_months, max_age + math.ceil(clv.lifetime_horizons * step) + 1)
    cumulative = C.cumulative_margin(
        C.curve_matrix(df["expected_margin_curve"]), horizon_days=horizon_days,
        annual_discount_rate=clv.annual_discount_rate,
    )
    age_days = df["age_days"].to_numpy()

    def table(codes, n_groups, sim_sums, keys):
        curves = _value_curves(
            codes, n_groups, age_days, realised, cumulative, n_months=n_months, horizon_days=horizon_days
        )
        realised_total = np.bincount(codes, weights=realised_per_customer, minlength=n_groups)
        work = df.assign(_code=codes)
        return _group_table(work, keys, sim_sums, curves, realised_total, target_ratio=target_ratio), curves

    channels, channel_curves = table(groups.channel_code, groups.n_channels, clv_sums[0], ["channel"])
    cohorts, cohort_curves = table(groups.pair_code, groups.n_pairs, clv_sums[1], ["cohort", "channel"])
    cohorts = cohort_advice(
        cohorts, channels, target_ratio=target_ratio, min_customers=cohort_min_customers, k=cohort_credibility_k
    )

    # Cohort value curves: realised up to the cohort's age (its youngest customer), predicted after;
    # both columns hold the junction month so that the two lines meet.
    age_months = df.assign(_code=groups.pair_code).groupby("_code")["age_days"].min().to_numpy() // C.MONTH_DAYS
    cohorts.insert(3, "age_months", age_months.astype(int))
    per_customer = cohort_curves / cohorts["customers"].to_numpy(dtype=float)[:, None]
    t = np.arange(1, curve_months + 1)
    realised_cols = {f"realised_m{m:02d}": np.where(m <= age_months, per_customer[:, m], np.nan) for m in t}
    predicted_cols = {f"predicted_m{m:02d}": np.where(m >= age_months, per_customer[:, m], np.nan) for m in t}
    cohorts = pd.concat([cohorts, pd.DataFrame(realised_cols), pd.DataFrame(predicted_cols)], axis=1)
    cohorts = cohorts.sort_values(["cohort", "channel"], kind="stable").reset_index(drop=True)

    curves_frame = pd.DataFrame(
        (channel_curves / channels["customers"].to_numpy(dtype=float)[:, None]).T,
        columns=pd.Index(channels["channel"], name="channel"),
    ).rename_axis("months_since_acquisition")
    return channels, cohorts, curves_frame


def cohort_advice(
    cohorts: pd.DataFrame, channels: pd.DataFrame, *, target_ratio: float, min_customers: int, k: float
) -> pd.DataFrame:
    """Grow / hold / cut per cohort from its credibility-weighted LTV, none for a small cohort.

    With n the cohort's customers, Z = n / (n + k) (Bühlmann's credibility weight; k is the size
    whose own figures weigh half) and the credible LTV is Z · (cohort mean LTV) + (1 − Z) ·
    (channel mean LTV); ``credible_ltv_cac`` is it over the cohort's mean CAC, and the
    recommendation (:func:`serving.clv.recommendation`) reads that ratio. A cohort of fewer than
    ``min_customers`` gets no recommendation (empty) and the reason in ``recommendation_note``.

    Parameters
    ----------
    cohorts : DataFrame
        One row per (cohort, channel): ``channel``, ``customers``, ``mean_ltv`` and ``mean_cac``
        (currency units).
    channels : DataFrame
        One row per channel: ``channel``, ``mean_ltv``.
    target_ratio : float
        Target LTV:CAC.
    min_customers : int
        N, the fewest customers of a cohort with advice.
    k : float
        Credibility constant, customers (≥ 0; 0 = the cohort's own LTV).

    Returns
    -------
    DataFrame
        ``cohorts`` with ``credibility`` (Z, 0..1), ``credible_ltv`` (currency units),
        ``credible_ltv_cac``, ``recommendation`` (None below N) and ``recommendation_note``
        (None, or "too few customers (n < N)").
    """
    n = cohorts["customers"].to_numpy(dtype=float)
    z = n / (n + k) if k > 0 else np.ones_like(n)
    channel_ltv = cohorts["channel"].map(channels.set_index("channel")["mean_ltv"]).to_numpy(dtype=float)
    credible = z * cohorts["mean_ltv"].to_numpy(dtype=float) + (1.0 - z) * channel_ltv
    ratio = C.ltv_cac_ratio(credible, cohorts["mean_cac"].to_numpy(dtype=float))
    advice = C.recommendation(ratio, target_ratio=target_ratio)
    small = n < min_customers
    advice[small] = None
    note = np.where(small, f"too few customers (n < {min_customers})", None).astype(object)
    note[~small] = None
    return cohorts.assign(
        credibility=z, credible_ltv=credible, credible_ltv_cac=ratio, recommendation=advice, recommendation_note=note
    )
