"""The finance budget of a scored customer base: computed here, written by :mod:`serving.finance.outputs`.

:func:`compute_budget` takes the batch scores (:class:`serving.scores.Scores`: one row per customer
and the scoring run behind them, written by ``clvcast score``) and the raw tables (or what it reads
of them, :class:`serving.finance.inputs.BudgetInputs`, reduced per customer where the tables are,
e.g. on the workers of a cluster), and returns a :class:`BudgetResult` whose frames are

- ``channels``: per acquisition channel, CAC, predicted CLV with an 80 % interval, realised margin,
  LTV:CAC, maximum allowable CAC, payback and a grow / hold / cut recommendation (:mod:`.ltv`);
- ``cohorts``: the same per acquisition month and channel, with the cumulative value curve per
  customer by month since acquisition (realised up to the scoring date, predicted after it); the
  advice of a cohort reads its credibility-weighted LTV, and a cohort smaller than the decisions'
  ``cohort_min_customers`` gets none (:func:`serving.finance.ltv.cohort_advice`);
- ``forecast``: revenue and margin of the current base per calendar month over the next 12 months
  with 80 % intervals, and the customers expected alive at each month's end; the first row is the
  rest of the scoring date's month (``partial_month``) unless the scoring date is a month's last
  day, and the ``cumulative_revenue*`` columns give the interval of the running total (the total's
  interval is not the sum of the monthly ones). How it is built: :mod:`.forecast`; the intervals:
  :mod:`.simulate`;
- ``segments``: each customer's CLV, tier and RFM segment (and referral credit), for a CRM;
- ``new_customer_clv``: the value of a customer just acquired, per channel (for the
  acquisition-budget endpoint, see :func:`serving.finance.acquisition.acquisition_budget`);

and the headline numbers of the report (``summary``). :func:`serving.finance.outputs.write_budget`
writes the frames as ``<name>.csv``, :func:`serving.finance.outputs.write_report` the HTML report.

The horizon and the CLV arithmetic (m, c, d, K) are those the scores were computed with (their run),
never a default; the BG/NBD behind the forecast uses the time unit of the champion's BTYD fit, and the
champion's parameters when it cannot be refitted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.btyd import BGNBDParams
from features.contract import Tables
from serving import clv as C
from serving.finance.acquisition import UNKNOWN_CHANNEL, acquisition_budget, new_customer_clv
from serving.finance.forecast import ForecastShape, expected_forecast, forecast_calendar, forecast_shape, seasonality_of_revenue
from serving.finance.inputs import BudgetInputs, budget_inputs
from serving.finance.ltv import Groups, ltv_tables
from serving.finance.simulate import interval, simulate
from serving.scores import SCORE_COLUMNS, Scores
from training.config import ClvConfig

__all__ = ["CLV_ARITHMETIC", "SEGMENT_COLUMNS", "BudgetInputs", "BudgetResult", "BudgetSettings", "budget_inputs", "check_scores", "compute_budget"]

#: Columns of the scores copied into ``segments.csv`` (then ``referral_credit`` when referrals are known).
SEGMENT_COLUMNS = ("customer_id", "clv", "clv_tier", "rfm_segment", "churn_probability", "p_alive", "expected_spend")
#: Fields of :class:`~training.config.ClvConfig` that the ``clv`` column of the scores depends on.
CLV_ARITHMETIC = ("gross_margin", "cost_to_serve", "annual_discount_rate", "lifetime_horizons")


class BudgetSettings(BaseModel):
    """How the budget is computed, beside the scores and the CLV decisions.

    Parameters
    ----------
    new_customer_max_age_days : int
        Customers at most this old (days since acquisition at the scoring date) define the
        new-customer CLV.
    forecast_months : int
        Whole calendar months of the revenue forecast after the scoring date's month (whose rest, if
        any, is a partial first row).
    curve_months : int
        Months since acquisition in the cohort value curves.
    n_simulations : int
        Draws behind the 80 % intervals.
    spend_cv : float
        Coefficient of variation of a customer's spend level around ``spend_if_active`` (gamma).
    common_cv : float
        Coefficient of variation of the base-wide multiplier (lognormal); 0.10 checked on the
        forecast backtests (:mod:`serving.finance.simulate`).
    seed : int
        Seed of the simulation.
    chunk_size : int
        Customers simulated at once (memory ≈ chunk_size · n_simulations · 50 bytes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    new_customer_max_age_days: int = Field(90, ge=0)
    forecast_months: int = Field(12, ge=1)
    curve_months: int = Field(36, ge=1)
    n_simulations: int = Field(200, ge=1)
    spend_cv: float = Field(0.5, ge=0, allow_inf_nan=False)
    common_cv: float = Field(0.10, ge=0, allow_inf_nan=False)
    seed: int = Field(0, ge=0)
    chunk_size: int = Field(20_000, ge=1)


@dataclass(frozen=True)
class BudgetResult:
    """The finance figures of a scored base, as frames.

    Attributes
    ----------
    channels, cohorts, forecast, segments, new_customer_clv : DataFrame
        The contents of the CSV files of the same names (see the module docstring); money in
        currency units. ``new_customer_clv`` is indexed by ``channel``, the others by position.
    channel_curves : DataFrame, shape (N + 1, n_channels)
        Mean cumulative margin per customer (rows: months since acquisition 0..N, columns: channels),
        realised then predicted; the payback curves of the report.
    summary : dict
        Headline numbers of the report: ``as_of`` (ISO date), ``customers`` (every customer acquired by
        the scoring date), ``customers_not_scored`` (of them, those the scores do not hold),
        ``transactions_before_acquisition`` (rows left out of the realised margin), ``total_clv``,
        ``mean_clv``, ``total_realised_margin``, ``total_cac``, ``overall_ltv_cac``,
        ``forecast_revenue`` (with ``_low`` and ``_high``), ``forecast_margin``, ``forecast_months`` (whole
        calendar months), ``forecast_start`` and ``forecast_end`` (ISO dates, both included),
        ``forecast_partial_month`` (True when the first row is the rest of the scoring date's month),
        ``forecast_decay`` (``"bgnbd"`` or ``"retention"``), ``forecast_seasonality`` (12 floats),
        ``total_referral_credit`` (None without referrals), ``diagnostics_run_id`` (the run the
        BTYD diagnostics come from, or None) and ``settings`` (horizon, CLV arithmetic, decisions
        and :class:`BudgetSettings` used).
    diagnostics : dict of str to DataFrame
        The BTYD diagnostic tables of the champion's training run (:data:`training.diagnostics.TABLES`)
        when given to :func:`compute_budget`; empty otherwise.
    """

    channels: pd.DataFrame
    cohorts: pd.DataFrame
    forecast: pd.DataFrame
    segments: pd.DataFrame
    new_customer_clv: pd.DataFrame
    channel_curves: pd.DataFrame
    summary: dict
    diagnostics: dict[str, pd.DataFrame] = field(default_factory=dict)


def compute_budget(
    tables: Tables | BudgetInputs,
    scores: Scores,
    *,
    decisions: ClvConfig | None = None,
    settings: BudgetSettings = BudgetSettings(),
    forecast_bgnbd: BGNBDParams | None = None,
    seasonality=None,
    new_customers: pd.DataFrame | None = None,
    diagnostics: dict[str, pd.DataFrame] | None = None,
) -> BudgetResult:
    """Channels, cohorts, forecast, segments and new-customer CLV of a scored customer base.

    Parameters
    ----------
    tables : Tables or BudgetInputs
        Raw tables; transactions give the realised margin, the BG/NBD summary and the seasonality,
        ``customers.referred_by`` the referrals. Or what the budget reads of them,
        :func:`serving.finance.inputs.budget_inputs` of these scores (e.g. gathered from the
        partitions of a cluster, :func:`serving.cluster.budget_inputs_on_cluster`): the result is the same.
    scores : Scores
        One row per customer with the columns of :data:`serving.scores.SCORE_COLUMNS`, and the run
        that produced them: its ``horizon_days`` is H, its ``clv`` the m, c, d, K of every CLV
        figure, its ``btyd`` the time unit (and the fallback parameters) of the forecast's BG/NBD.
    decisions : ClvConfig, optional
        Target LTV:CAC (maximum allowable CAC, recommendation) and the referral credit (share of a
        referred customer's CLV, minus the bonus paid per referral). Default: the scores' own
        ``run.clv``. Its m, c, d and K must be the scores'.
    settings : BudgetSettings
        Forecast length, simulation and new-customer settings.
    forecast_bgnbd : BGNBDParams, optional
        BG/NBD parameters for the forecast, in the champion's time unit
        (``scores.run.btyd.time_unit_days``); default: fitted on the history up to the scoring date.
    seasonality : array-like of 12 floats, optional
        Revenue index per calendar month; default: estimated from the history
        (:func:`serving.finance.forecast.seasonality_indices`).
    new_customers : DataFrame, optional
        The champion's curve of a customer acquired on the scoring date through each channel
        (:func:`serving.lifetime.new_customer_curves`, indexed by channel): ``new_customer_clv`` is
        its value from acquisition, and ``channels`` gets the acquisition decision at each
        channel's mean CAC (:func:`serving.finance.acquisition.acquisition_budget`, the function
        behind ``POST /acquisition_budget``). Without it, the new-customer CLV is the mean value of
        the young customers (see :func:`serving.finance.acquisition.new_customer_clv`).
    diagnostics : dict of str to DataFrame, optional
        BTYD diagnostic tables of the scores' training run (``scores.run.run_id``), by the names of
        :data:`training.diagnostics.TABLES` (:func:`training.diagnostics.read_table`): shown in the
        report, not used in any figure.

    Returns
    -------
    BudgetResult

    Raises
    ------
    ValueError
        If ``decisions`` has other CLV arithmetic than the scores (they must be re-scored), ``tables``
        are inputs of another scoring or other customers, or the scores break a rule (missing column, duplicate ``customer_id``, ``churn_probability``
        outside [0, 1], non-finite ``spend_if_active`` or ``clv``, ``as_of`` or ``horizon_days``
        other than the run's), naming the column and the first offending customers.

    Warns
    -----
    UserWarning
        When the ``clv`` column differs from the discounted sum of ``expected_margin_curve`` with
        the run's settings (the payback curves use the
        recomputation, the means the column); when BG/NBD cannot be fitted for the forecast.
    """
    run = scores.run
    clv = run.clv
    decisions = _decisions(clv, decisions)
    horizon_days = run.horizon_days
    as_of = pd.Timestamp(run.as_of)
    check_scores(scores)
    inputs = tables if isinstance(tables, BudgetInputs) else budget_inputs(tables, scores.frame[["customer_id", "acquired_at"]], run)
    df = _prepare(inputs, scores)
    if run.business != "subscription":  # there the CLV sums the whole survival curve, beyond the K horizons
        _warn_if_clv_differs(df, horizon_days=horizon_days, clv=clv)

    position = pd.Series(np.arange(len(df)), index=pd.Index(df["customer_id"].to_numpy()))
    realised = inputs.realised.assign(row=inputs.realised["customer_id"].map(position).to_numpy(dtype=np.int64))
    realised_per_customer = np.bincount(realised["row"], weights=realised["margin"], minlength=len(df))
    groups = Groups.of(df)
    shape = forecast_shape(
        inputs.summary, df["customer_id"], as_of, time_unit_days=run.btyd.time_unit_days, bgnbd=forecast_bgnbd,
        fallback_bgnbd=run.btyd.bgnbd,
        seasonality=seasonality_of_revenue(inputs.revenue, as_of) if seasonality is None else seasonality,
    )  # fmt: skip
    calendar = forecast_calendar(as_of, settings.forecast_months)
    sims = simulate(
        df["churn_probability"], df["spend_if_active"], groups.groupings, horizon_days=horizon_days, clv=clv,
        end_days=calendar["end_day"].to_numpy(), n_simulations=settings.n_simulations,
        spend_cv=settings.spend_cv, common_cv=settings.common_cv, seed=settings.seed,
        chunk_size=settings.chunk_size, shape=shape, clv_mean=df["clv"],
    )  # fmt: skip
    channels, cohorts, channel_curves = ltv_tables(
        df, realised, realised_per_customer, groups, sims["clv_sums"], horizon_days=horizon_days, clv=clv,
        target_ratio=decisions.target_ltv_cac, curve_months=settings.curve_months,
        cohort_min_customers=decisions.cohort_min_customers, cohort_credibility_k=decisions.cohort_credibility_k,
    )  # fmt: skip
    forecast = _forecast_table(df, calendar, shape, sims, horizon_days=horizon_days, clv=clv, settings=settings)
    segments = _segments_table(inputs.referred_by, df, decisions)
    new_clv = new_customer_clv(
        df.assign(as_of=as_of),
        max_age_days=settings.new_customer_max_age_days,
        realised_margin=pd.Series(realised_per_customer, index=df["customer_id"].to_numpy()),
        curves=new_customers,
    )
    # The models behind the values: the service checks them against the ones it serves.
    new_clv = new_clv.assign(churn_model_version=str(scores.run.churn_model_version),
                             spend_model_version=str(scores.run.spend_model_version))
    channels = _with_acquisition_decision(channels, new_clv, target_ratio=decisions.target_ltv_cac)
    summary = {
        "as_of": as_of.date().isoformat(),
        "customers": int(len(df)),
        # Acquired by the scoring date, counted at CLV 0 because the scores do not hold them.
        "customers_not_scored": int((df["rfm_segment"] == NOT_SCORED).sum()),
        # Realised margin counts from acquisition: these rows are left out of it, not lost unsaid.
        "transactions_before_acquisition": inputs.before_acquisition,
        "total_clv": float(df["clv"].sum()),
        "mean_clv": float(df["clv"].mean()) if len(df) else float("nan"),
        "total_realised_margin": float(realised_per_customer.sum()),
        "total_cac": float(df["acquisition_cost"].sum()),
        # Same rule as per channel: mean LTV over all customers / mean CAC over those with a CAC.
        "overall_ltv_cac": float(
            C.ltv_cac_ratio(
                (realised_per_customer.sum() + df["clv"].sum()) / max(len(df), 1), df["acquisition_cost"].mean()
            )
        ),
        "forecast_revenue": float(forecast["expected_revenue"].to_numpy().sum()),
        "forecast_revenue_low": float(forecast["cumulative_revenue_low"].iloc[-1]),
        "forecast_revenue_high": float(forecast["cumulative_revenue_high"].iloc[-1]),
        "forecast_margin": float(forecast["expected_margin"].to_numpy().sum()),
        "forecast_months": settings.forecast_months,
        "forecast_start": str(forecast["period_start"].iloc[0]),
        "forecast_end": str(forecast["period_end"].iloc[-1]),
        "forecast_partial_month": bool(forecast["partial_month"].iloc[0]),
        # How later months were projected (see "Revenue forecast" in serving.finance.forecast).
        "forecast_decay": "bgnbd" if shape.bgnbd is not None else "retention",
        "forecast_seasonality": [float(v) for v in shape.seasonality],
        "total_referral_credit": float(segments["referral_credit"].sum()) if "referral_credit" in segments else None,
        "diagnostics_run_id": run.run_id if diagnostics else None,
        "settings": {
            "horizon_days": horizon_days,
            "margin": clv.gross_margin,
            "cost_to_serve": clv.cost_to_serve,
            "annual_discount_rate": clv.annual_discount_rate,
            "lifetime_horizons": clv.lifetime_horizons,
            "target_ratio": decisions.target_ltv_cac,
            "cohort_min_customers": decisions.cohort_min_customers,
            "cohort_credibility_k": decisions.cohort_credibility_k,
            "referral_share": decisions.referral_share,
            "referral_bonus": decisions.referral_bonus,
            "new_customer_max_age_days": settings.new_customer_max_age_days,
            "n_simulations": settings.n_simulations,
            "spend_cv": settings.spend_cv,
            "common_cv": settings.common_cv,
            "seed": settings.seed,
        },
    }
    return BudgetResult(
        channels=channels,
        cohorts=cohorts,
        forecast=forecast,
        segments=segments,
        new_customer_clv=new_clv,
        channel_curves=channel_curves,
        summary=summary,
        diagnostics=dict(diagnostics or {}),
    )


def _with_acquisition_decision(channels: pd.DataFrame, new_clv: pd.DataFrame, *, target_ratio: float) -> pd.DataFrame:
    """``channels`` with the new-customer CLV and the decision ``POST /acquisition_budget`` gives at the mean CAC.

    Columns added: ``new_customer_clv``, ``new_customer_ltv_cac`` (None where the CAC is 0 or
    unknown), ``new_customer_max_allowable_cac`` and ``acquisition_recommendation`` (``unknown``
    without a CAC or a new-customer CLV).
    """
    rows = []
    for c, cac in zip(channels["channel"].astype(str), channels["mean_cac"].to_numpy(dtype=float)):
        if np.isfinite(cac):
            rows.append(acquisition_budget([{"channel": c, "cac": cac}], new_clv, target_ratio=target_ratio)[0])
        else:  # no CAC recorded: the value and the allowance, no ratio nor decision
            row = acquisition_budget([{"channel": c, "cac": 0.0}], new_clv, target_ratio=target_ratio)[0]
            rows.append({**row, "ltv_cac": None, "recommendation": "unknown"})
    return channels.assign(
        new_customer_clv=[r["new_customer_clv"] for r in rows],
        new_customer_ltv_cac=[r["ltv_cac"] for r in rows],
        new_customer_max_allowable_cac=[r["max_allowable_cac"] for r in rows],
        acquisition_recommendation=[r["recommendation"] for r in rows],
    )


def _decisions(scored_with: ClvConfig, decisions: ClvConfig | None) -> ClvConfig:
    """The decisions to use: ``decisions`` if its CLV arithmetic is the scores', else a ValueError."""
    if decisions is None:
        return scored_with
    differ = [name for name in CLV_ARITHMETIC if getattr(decisions, name) != getattr(scored_with, name)]
    if differ:
        detail = ", ".join(f"{n} {getattr(scored_with, n)} (scores) vs {getattr(decisions, n)} (budget)" for n in differ)
        raise ValueError(
            f"scores: computed with other CLV settings than this budget's: {detail}; re-score with these "
            "settings (clvcast score) or budget with the scores' own"
        )
    return decisions


def _rows(frame: pd.DataFrame, bad) -> str:
    return f"{int(np.sum(bad))} row(s), first: {frame.loc[bad, 'customer_id'].head(3).tolist()}"


def check_scores(scores: Scores) -> None:
    """The rules of the scores that the budget relies on; a ValueError names the column and rows.

    :func:`compute_budget` checks them first; so does a cluster before it sends the scores' customers
    to the partitions (:func:`serving.cluster.budget_inputs_on_cluster`).
    """
    frame, run = scores.frame, scores.run
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"scores: missing column(s) {missing}; expected the columns of `clvcast score`")
    dup = frame["customer_id"].duplicated().to_numpy()
    if dup.any():
        raise ValueError(f"scores: column 'customer_id': must be unique: {_rows(frame, dup)}")
    p = frame["churn_probability"].to_numpy(dtype=float)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(f"scores: column 'churn_probability': must be in [0, 1]: {_rows(frame, bad)}")
    for col in ("spend_if_active", "clv"):
        bad = ~np.isfinite(frame[col].to_numpy(dtype=float))
        if bad.any():
            raise ValueError(f"scores: column '{col}': must be finite: {_rows(frame, bad)}")
    bad = (pd.to_datetime(frame["as_of"]).dt.normalize() != pd.Timestamp(run.as_of)).to_numpy()
    if bad.any():
        raise ValueError(f"scores: column 'as_of': must be {run.as_of}, the scoring run's: {_rows(frame, bad)}")
    bad = frame["horizon_days"].to_numpy(dtype=float) != float(run.horizon_days)
    if bad.any():
        raise ValueError(
            f"scores: column 'horizon_days': must be {run.horizon_days}, the scoring run's: {_rows(frame, bad)}"
        )


def _unscored(inputs: BudgetInputs, run) -> pd.DataFrame:
    """Rows for the customers acquired by the scoring date that the scores do not hold (``inputs.customers``).

    Every customer known at the scoring date (:data:`features.population.KNOWN_KINDS`) counts in
    CAC and cohorts; one the scores left out (no prospect model, or scores of another book) is
    valued at nothing to come: churn probability 1, P(alive), spend, CLV, their intervals and the
    curves (K = the run's lifetime horizons) 0. Its realised margin still counts.
    """
    missing = inputs.customers[~inputs.customers["scored"].to_numpy()]
    n = len(missing)
    return pd.DataFrame(
        {
            "customer_id": missing.index.astype("str"),
            "as_of": run.as_of,
            "horizon_days": run.horizon_days,
            "churn_probability": 1.0,
            "p_alive": 0.0,
            "spend_if_active": 0.0,
            "expected_spend": 0.0,
            "expected_spend_lower": 0.0,
            "expected_spend_upper": 0.0,
            "clv_horizon": 0.0,
            "clv": 0.0,
            "clv_lower": 0.0,
            "clv_upper": 0.0,
            "expected_lifetime_days": 0.0,
            "expected_spend_curve": [np.zeros(run.clv.lifetime_horizons) for _ in range(n)],
            "expected_margin_curve": [np.zeros(run.clv.lifetime_horizons) for _ in range(n)],
            "clv_tier": None,
            "rfm_segment": NOT_SCORED,
            "channel": missing["channel"].to_numpy(),
            "acquired_at": missing["acquired_at"].to_numpy(),
            "acquisition_cost": missing["acquisition_cost"].to_numpy(dtype=float),
        }
    )


#: ``rfm_segment`` of a customer acquired by the scoring date whom the scores do not hold.
NOT_SCORED = "not scored"


def _prepare(inputs: BudgetInputs, scores: Scores) -> pd.DataFrame:
    """One row per customer with the fields the finance outputs need (see :mod:`serving.finance.ltv`).

    The scored customers and those acquired by the scoring date that the scores left out
    (:func:`_unscored`), in ``customer_id`` order: the simulation draws customer by customer in
    this order, so the intervals of a book do not depend on the order of its scores (a cluster's
    dataset is in partition order, a file in the order it was written); acquisition days as
    ``inputs`` prepared them.
    """
    run = scores.run
    basis = (run.as_of, run.horizon_days, run.clv.gross_margin, run.clv.cost_to_serve, run.btyd.time_unit_days)
    if inputs.basis != basis:
        raise ValueError(
            f"budget inputs: built for (as_of, horizon_days, gross_margin, cost_to_serve, time_unit_days) = {inputs.basis}, "
            f"the scores are {basis}: build them from these scores"
        )
    as_of = pd.Timestamp(run.as_of)
    unscored = _unscored(inputs, run)
    df = scores.frame.copy()
    if len(unscored):
        df = pd.concat([df, unscored.astype({"channel": "str"})], ignore_index=True)
    df["customer_id"] = df["customer_id"].astype("str")
    df["channel"] = df["channel"].astype("str").where(df["channel"].notna(), UNKNOWN_CHANNEL)
    df["acquisition_cost"] = pd.to_numeric(df["acquisition_cost"], errors="coerce").astype(float)
    acquired = df["customer_id"].map(inputs.customers["acquired_at"]).astype("datetime64[ns]")
    if acquired.isna().any() or len(inputs.customers) != len(df):
        lacking = df.loc[acquired.isna().to_numpy(), "customer_id"].head(3).tolist()
        raise ValueError(f"budget inputs: built for other customers than the scores' ({len(inputs.customers)} customers "
                         f"vs {len(df)}; scored customers missing: {lacking})")  # fmt: skip
    df["acquired_at"] = acquired
    df["age_days"] = ((as_of - df["acquired_at"]).dt.days).clip(lower=0).astype(float)
    df["cohort"] = df["acquired_at"].dt.strftime("%Y-%m")
    return df.sort_values("customer_id", kind="stable", ignore_index=True)


def _warn_if_clv_differs(df: pd.DataFrame, *, horizon_days: float, clv: ClvConfig) -> None:
    """Warn when the ``clv`` column is not the discounted sum of the scores' ``expected_margin_curve``.

    The means of the outputs use the column; the intervals and payback curves recompute the CLV from
    p and s with the run's settings. A frame whose column was edited or computed otherwise would
    show two CLVs that do not agree: the warning says so rather than stopping the budget.
    """
    expected = C.lifetime_clv(
        C.curve_matrix(df["expected_margin_curve"]), horizon_days=horizon_days, annual_discount_rate=clv.annual_discount_rate
    )
    off = ~np.isclose(expected, df["clv"].to_numpy(dtype=float), rtol=1e-4, atol=1e-6)
    if off.any():
        warnings.warn(
            f"scores: column 'clv' differs from the CLV recomputed from expected_margin_curve with the scoring run's horizon_days="
            f"{horizon_days} and CLV settings for {int(off.sum())} of {len(df)} customers: the intervals "
            "and payback curves use the recomputed CLV, the means use the column",
            stacklevel=3,
        )


def _forecast_table(
    df: pd.DataFrame,
    calendar: pd.DataFrame,
    shape: ForecastShape,
    sims: dict,
    *,
    horizon_days: float,
    clv: ClvConfig,
    settings: BudgetSettings,
) -> pd.DataFrame:
    """Expected revenue, margin and customers alive per calendar month, with the simulated 80 % intervals.

    ``calendar`` is :func:`serving.finance.forecast.forecast_calendar` of the scoring date; its
    columns but ``end_day`` lead the table.
    """
    revenue, margin, active = expected_forecast(
        df["churn_probability"], df["spend_if_active"], p_alive=df["p_alive"], horizon_days=horizon_days,
        margin=clv.gross_margin, cost_to_serve=clv.cost_to_serve, end_days=calendar["end_day"].to_numpy(),
        shape=shape, chunk_size=settings.chunk_size,
    )  # fmt: skip
    rev_lo, rev_hi = interval(sims["revenue"])
    mar_lo, mar_hi = interval(sims["margin"])
    cum_lo, cum_hi = interval(np.cumsum(sims["revenue"], axis=0))
    return calendar.drop(columns="end_day").assign(
        expected_revenue=revenue,
        revenue_low=rev_lo,
        revenue_high=rev_hi,
        expected_margin=margin,
        margin_low=mar_lo,
        margin_high=mar_hi,
        expected_active_customers=active,
        cumulative_revenue=np.cumsum(revenue),
        cumulative_revenue_low=cum_lo,
        cumulative_revenue_high=cum_hi,
    )


def _segments_table(referred_by: pd.Series | None, df: pd.DataFrame, decisions: ClvConfig) -> pd.DataFrame:
    """:data:`SEGMENT_COLUMNS` of the scores, and ``referral_credit`` when ``customers.referred_by`` exists."""
    segments = df[list(SEGMENT_COLUMNS)].copy()
    if referred_by is not None:
        credit = C.referral_credit(
            referred_by,
            df.set_index("customer_id")["clv"],
            referral_share=decisions.referral_share,
            referral_bonus=decisions.referral_bonus,
        )
        segments["referral_credit"] = segments["customer_id"].map(credit).fillna(0.0).to_numpy(dtype=float)
    return segments
