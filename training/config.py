"""The one typed configuration of clvcast: features, training, CLV arithmetic and monitoring thresholds.

Built in one place, :func:`load_config`, from (lowest to highest priority) the defaults, a YAML/JSON
file (``path``, else the file named by ``CLVCAST_CONFIG``), environment variables
``CLVCAST_<SECTION>__<KEY>`` (e.g. ``CLVCAST_TRAINING__HORIZON_DAYS=91``) and keyword overrides (the
CLI flags), and logged whole to MLflow through :meth:`Config.to_flat_dict`. Every model is a frozen
pydantic model that refuses unknown keys, so a typo never silently falls back to a default and a
run's settings cannot change after they were logged.

pydantic does the validation; the three sources are merged here (a few lines) rather than through
pydantic-settings, whose sources are fixed per class while the file is chosen per call.

File format (every key optional)::

    features:
      windows_days: [30, 90, 180, 365]
    training:
      horizon_days: 182
      spend_objective: tweedie
      churn_params: {num_leaves: 15, learning_rate: 0.05}
    clv:
      gross_margin: 0.3
    scoring:
      block_customers: 100000
    business: subscription     # auto (default: detected from the data), retail or subscription: see Config.business
    subscription:
      plans: {starter: 29, growth: 79, scale: 199}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.config import FeatureConfig

ChurnDefinition = Literal["purchase", "cancel"]
SpendObjective = Literal["tweedie", "gamma", "regression", "regression_l1", "huber"]
ChurnCalibration = Literal["none", "isotonic"]
Business = Literal["auto", "retail", "subscription"]

#: Environment variable naming the config file when no path is given.
CONFIG_FILE_ENV = "CLVCAST_CONFIG"
#: Prefix of the environment variables that set single keys.
ENV_PREFIX = "CLVCAST_"

AGE_DEPENDENT_FEATURES = (
    "tenure_days",
    "days_since_acquisition",
    "frequency",
    "purchase_count",
    "total_spend",
    "refund_count",
    "refund_amount",
)
# Log-offset features of the BG/NBD + Gamma-Gamma start (see TrainingConfig.btyd_offset).
# The order value floors the spend given a purchase (a window with a purchase holds one order or more).
BTYD_OFFSET_FEATURES = ("btyd_p_no_purchase", "btyd_spend_if_active", "btyd_expected_order_value")


class ConfigError(ValueError):
    """A configuration file, variable or override breaks a rule; the message names the key and the rule."""


_FROZEN = ConfigDict(frozen=True, extra="forbid")
_Number = Field(allow_inf_nan=False)


class LightGBMParams(BaseModel):
    """Hyperparameters of one LightGBM model (names as in the ``lightgbm`` scikit-learn API).

    Parameters
    ----------
    num_boost_round : int
        Maximum number of trees; early stopping on the time-held-out slice usually stops sooner.
    learning_rate : float
        Shrinkage per tree.
    num_leaves : int
        Maximum leaves per tree.
    min_child_samples : int
        Minimum rows per leaf. High by default: customer data is noisy and rows of one customer
        repeat across stacked origins, so small leaves memorise customers.
    subsample : float
        Row fraction per bagging round (used every ``subsample_freq`` trees).
    subsample_freq : int
        Bagging frequency; 0 turns bagging off.
    colsample_bytree : float
        Feature fraction per tree.
    reg_lambda : float
        L2 regularisation of leaf values.
    max_bin : int
        Histogram bins per feature.
    min_split_gain : float
        Minimum loss reduction to split.
    """


    model_config = _FROZEN

    num_boost_round: int = Field(400, ge=1)
    learning_rate: float = Field(0.05, gt=0, allow_inf_nan=False)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(100, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0, allow_inf_nan=False)
    max_bin: int = Field(255, ge=2)
    min_split_gain: float = Field(0.0, ge=0, allow_inf_nan=False)


# Small trees with large leaves: customers repeat across stacked origins, so bigger trees memorise
# them (on CDNOW pseudo-holdouts 63 leaves lost 0.01 churn AUC; 15 leaves x 200 rows beat the
# generic 31 x 100 on decile MAPE, 0.107 vs 0.149, at the same MAE). More rounds, since the trees
# only correct the BTYD start.
_RECIPE_PARAMS = LightGBMParams(num_leaves=15, min_child_samples=200, num_boost_round=600)


class TrainingConfig(BaseModel):
    """How the churn and spend models are trained and judged.

    Parameters
    ----------
    horizon_days : int
        Forecast horizon H in days: the scores' churn probability and expected spend are over
        (cutoff, cutoff + H], lifetime CLV sums K horizons of H days, and the holdout window is H
        days long. Default 182 (half a year): long enough that most active customers buy again
        (CDNOW median repeat gap is ~2 months), short enough to leave several training origins in
        two years of history, and the standard CDNOW benchmark protocol.
    label_horizon_days : int, optional
        Label window H_m of the boosters: churn = no purchase in (origin, origin + H_m], spend =
        their sum. The BTYD features use the same horizon unless ``features.btyd_horizon_days`` is
        set. Default (None): H when the history up to the cutoff holds ``n_cutoffs`` whole training
        windows of H days, else the longest H / j (j = 2, 3, ...) that does (CDNOW's 39-week
        protocol: 273 / 3 = 91 days). Horizons other than H_m come from the spend curve
        (:mod:`training.curve`), which spreads the boosters' forecast in time with the dropout process.
    n_cutoffs : int
        Number of rolling training origins stacked into the training set. Their label windows end
        on or before the evaluation cutoff, so the evaluation window is never seen in training.
        Origins before the first purchase are dropped.
    step_days : int
        Days between consecutive training origins. Default 13 origins 14 days apart: half a year
        of origins, so the models see customers at many ages (on CDNOW, step 7 did no better than
        14 at twice the rows).
    min_history_days : int
        Origins less than this many days after the first purchase are dropped: there the history
        cannot identify BG/NBD (a fit six days in gave P(no purchase) up to 1 and poisoned the
        boosters' start). 0 keeps every origin on or after the first purchase.
    drop_unidentified_origins : bool
        Leave out the training origins whose BG/NBD fit is unidentified (a shape parameter r, a or b
        outside 1e-3 .. 1e3, :func:`training.training_set.unidentified_fit`): on CDNOW, the first six
        weeks. Only with ``btyd_offset`` (the boosters start from that fit). Chosen over
        ``min_history_days`` on CDNOW pseudo-holdouts (BENCHMARKS.md, "Lifetime CLV").
    validation_cutoffs : int
        How many of the latest training origins form the time-held-out slice used for early
        stopping and for the isotonic calibration of the churn probability; 0 trains on every
        origin for ``num_boost_round`` trees without calibration.
    early_stopping_rounds : int
        Stop when the validation loss has not improved for this many trees; 0 disables.
    churn_definition : {"purchase", "cancel"}
        ``"purchase"``: non-contractual churn, no purchase in the window; ``"cancel"``:
        contractual, a ``cancel`` event in the window (needs an events table).
    churn_params, spend_params : LightGBMParams
        Hyperparameters of the churn classifier and of the spend regressor; by default 15 leaves,
        200 rows per leaf, up to 600 trees.
    spend_objective : {"tweedie", "gamma", "regression", "regression_l1", "huber"}
        Loss of the spend regressor. Tweedie by default: spend given a purchase is right-skewed.
        Measured on CDNOW at cutoff 1997-09-30, horizon 91 days (before the benchmark holdout),
        expected-spend MAE / RMSE / decile MAPE / total vs actual 299k: tweedie 14.95 / 43.4 /
        0.174 / 260k; gamma 14.88 / 44.6 / 0.189 / 250k; l2 15.03 / 44.2 / 0.177 / 265k; l1
        14.21 / 46.5 / 0.351 / 206k; huber 16.00 / 50.0 / 0.190 / 241k. Tweedie has the best RMSE
        and decile totals and an MAE within 0.5% of the best smooth loss; l1's lower MAE comes
        from predicting the median, which misses totals by a third.
    tweedie_variance_power : float
        Tweedie power p in (1, 2); only used with ``spend_objective="tweedie"``.
    btyd_offset : bool
        Boost from the BG/NBD + Gamma-Gamma forecast instead of from a constant: the churn
        classifier starts from the log-odds of ``btyd_p_no_purchase`` and the spend regressor from
        the log of ``btyd_spend_if_active`` (BTYD's spend given a purchase, never below
        ``btyd_expected_order_value``), so the trees learn corrections to a model that already
        extrapolates with the customer's age. Needs those features (:data:`BTYD_OFFSET_FEATURES`)
        and a log-link spend objective (tweedie, gamma).
    exclude_features : tuple of str
        Feature columns the models do not see. By default :data:`AGE_DEPENDENT_FEATURES`.
    churn_calibration : {"none", "isotonic"}
        ``"isotonic"`` maps the classifier's probability through an isotonic regression fitted on
        the time-held-out slice. Off by default: with the BTYD offset the classifier is already
        calibrated by its log loss, and the slice's churn rate (younger customers) is not the
        prediction date's, so the map moved the forecast the wrong way.

    How the defaults were chosen: on CDNOW pseudo-holdouts that end before the benchmark window
    (cutoff 1997-07-31 and 1997-09-30, horizon 91 days, origins every 7 or 14 days back to January
    1997); see ``BENCHMARKS.md``.
    refit : bool
        After the champion decision on the held-out window, fit the chosen configuration again on
        origins up to the last day of the data (the last origin's label window ends on that day)
        and register that model, with the held-out metrics of the evaluated one kept on the
        version. Without it the registered model never learns from the final H days. A rejected
        run is not refitted: its evaluated models are registered for inspection.
    seed : int
        Seed of every random choice (bagging, feature fraction). Together with ``num_threads`` and
        LightGBM's ``deterministic`` mode it makes the same data + config give the same metrics.
    num_threads : int
        LightGBM threads. Fixed rather than "all cores" so results do not depend on the machine.
        1 by default: on books up to a few hundred thousand rows OpenMP threads cost more than they
        gain whenever other processes share the cores (measured on CDNOW's 94k training rows on a
        busy 2-core machine: 2.1 s per 100 trees with 1 thread, 14.6 s with 2). Raise it for large
        books on a dedicated machine.
    sample_customers : int, optional
        Train and evaluate on a deterministic sample of about this many customers (>= 1) instead of
        the whole book; None (default) uses every customer. A customer is kept, with all of its rows
        in every table, when a stable 64-bit hash of its id is below ``min(1, N / customers of the
        book) * 2**64`` (:mod:`features.sample`): the same customers in every run and on every
        machine, and a larger N's sample holds a smaller N's. The sample is taken before anything
        else (origins, holdout, lifetime model, baselines, refit); scoring still scores everyone.
        With ``--cluster`` the workers read the book and only the sample reaches the client. Also
        ``CLVCAST_TRAINING__SAMPLE_CUSTOMERS``.
    """


    model_config = _FROZEN

    horizon_days: int = Field(182, ge=1)
    label_horizon_days: int | None = Field(None, ge=1)
    n_cutoffs: int = Field(13, ge=1)
    step_days: int = Field(14, ge=1)
    min_history_days: int = Field(0, ge=0)
    validation_cutoffs: int = Field(1, ge=0)
    early_stopping_rounds: int = Field(50, ge=0)
    churn_definition: ChurnDefinition = "purchase"
    churn_params: LightGBMParams = _RECIPE_PARAMS
    spend_params: LightGBMParams = _RECIPE_PARAMS
    spend_objective: SpendObjective = "tweedie"
    tweedie_variance_power: float = Field(1.5, gt=1, lt=2)
    btyd_offset: bool = True
    drop_unidentified_origins: bool = True
    exclude_features: tuple[str, ...] = AGE_DEPENDENT_FEATURES
    churn_calibration: ChurnCalibration = "none"
    refit: bool = True
    seed: int = 42
    num_threads: int = Field(1, ge=1, description="a fixed count keeps runs reproducible")
    sample_customers: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if not self.validation_cutoffs < self.n_cutoffs:
            raise ValueError(
                f"validation_cutoffs must be < n_cutoffs ({self.n_cutoffs}): training needs at least one origin"
            )
        if self.btyd_offset and self.spend_objective not in ("tweedie", "gamma"):
            raise ValueError(f"btyd_offset needs a log-link spend_objective (tweedie or gamma), got {self.spend_objective!r}")
        clash = sorted(set(BTYD_OFFSET_FEATURES) & set(self.exclude_features)) if self.btyd_offset else []
        if clash:
            raise ValueError(f"exclude_features must keep {clash}: btyd_offset starts from them")
        return self


class ClvConfig(BaseModel):
    """Parameters of the CLV and CAC arithmetic (used by serving and the finance report).

    Parameters
    ----------
    gross_margin : float
        m, share of spend kept as margin, in [0, 1].
    cost_to_serve : float
        c, cost per active customer per horizon, in currency units.
    annual_discount_rate : float
        d, yearly discount rate; per horizon δ = (1 + d)^(H/365) − 1.
    lifetime_horizons : int
        K, number of horizons summed in lifetime CLV (the lifetime cap). Default 10 (five years at
        H = 182 days): beyond that a forecast is a guess that discounting barely dampens.
    target_ltv_cac : float
        Target LTV:CAC ratio; maximum allowable CAC = mean CLV / target.
    referral_share : float
        Share of a referred customer's CLV credited to the referrer, in [0, 1].
    referral_bonus : float
        Referral bonus paid per referred customer, in currency units; deducted from the credit.
    cohort_min_customers : int
        N: a cohort (acquisition month × channel) of fewer customers gets no grow / hold / cut
        advice, only the reason ("too few customers (n < N)"). Default 30: below it a cohort's
        mean CLV swings with a few customers (the 21-customer cohorts of the demo flipped advice
        from month to month).
    cohort_credibility_k : float
        k of the Bühlmann credibility weight Z = n / (n + k) of a cohort of n customers: its advice
        reads Z · (cohort mean LTV) + (1 − Z) · (its channel's mean LTV), over the cohort's mean
        CAC. k is the cohort size whose own figures get half the weight; default 50 customers. 0
        uses the cohort's own LTV alone.
    """

    model_config = _FROZEN

    gross_margin: float = Field(0.3, ge=0, le=1)
    cost_to_serve: float = Field(0.0, ge=0, allow_inf_nan=False)
    annual_discount_rate: float = Field(0.10, gt=-1, allow_inf_nan=False)
    lifetime_horizons: int = Field(10, ge=1)
    target_ltv_cac: float = Field(3.0, gt=0, allow_inf_nan=False)
    referral_share: float = Field(0.1, ge=0, le=1)
    referral_bonus: float = Field(0.0, ge=0, allow_inf_nan=False)
    cohort_min_customers: int = Field(30, ge=1)
    cohort_credibility_k: float = Field(50.0, ge=0, allow_inf_nan=False)


class ScoringConfig(BaseModel):
    """How ``clvcast score`` and ``clvcast features`` run in this process.

    Parameters
    ----------
    block_customers : int
        Customers with a purchase scored (:func:`serving.scoring.score_to_file`) or given feature
        rows (:func:`features.build.feature_blocks`) at a time: features, predictions, drivers and
        curves of one block are built, written and freed before the next, so the memory follows the
        block, not the book. The output is the same, to the last bit, for every value from 8 (fewer
        would explain a block's customers by another computation). Default 100,000.
    """

    model_config = _FROZEN

    block_customers: int = Field(100_000, ge=8)


class MonitorConfig(BaseModel):
    """Thresholds of ``clvcast monitor``: when drift, a segment's move or realised error is an alert.

    Drift compares the latest scoring with the reference its model stored at training (features
    and predictions binned at the reference's deciles, :mod:`training.reference`).

    Parameters
    ----------
    psi_bins : int
        Bins of the population stability index: quantiles of the reference (10, deciles, is the
        convention of the credit-scoring literature the PSI comes from). Tied quantiles merge bins.
    psi_warn, psi_alert : float
        PSI = Σ (a − e) ln(a / e) over bins, with e and a the reference and current shares. The
        conventional reading (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, "Statistical
        properties of the population stability index", 2018): below 0.1 no significant change,
        0.1–0.25 a moderate shift worth a look, above 0.25 a significant shift.
    ks_warn, ks_alert : float
        Kolmogorov–Smirnov statistic D (largest gap between the two CDFs) that warns and alerts.
        Set to the D of a normal mean shift whose PSI sits at the two PSI conventions: a shift of
        δ standard deviations has PSI ≈ δ² and D = 2Φ(δ/2) − 1, so PSI 0.1 ↔ D 0.125 and
        PSI 0.25 ↔ D 0.197. A large book makes every tiny shift significant, so D, not the
        p-value, carries the threshold.
    ks_pvalue : float
        D counts only when the KS test's p-value is below this (a small book's D is noisy).
    drift_min_importance : float
        Share of the two models' total gain (mean of the churn and spend shares) a feature needs
        for its drift to be an alert; the others are reported with their status but do not alert.
        A drifted feature the models barely use does not move the predictions (measured on the
        synthetic book: sparse cancel-event trend features reach PSI 0.3–0.5 from one month to
        the next with a gain share under 1 %, while the prediction PSI stays below 0.05).
        Prediction drift always alerts.
    segment_columns : tuple of str
        Score columns whose segments are watched for moves between consecutive scorings.
        Acquisition channel by default: a customer's channel does not change, whereas CLV tiers
        and RFM segments are re-cut at every scoring (customers move between them by design).
    segment_metrics : tuple of str
        Score columns (non-negative money) whose segment totals are compared.
    segment_change_alert : float
        A segment moves when, over the customers scored at both dates, its relative change of a
        metric differs from the rest of the book's by at least this much (0.10 = ten points):
        changes common to the book, such as the season, cancel out. Ten points is where a move
        starts to change a channel's LTV:CAC band; it is a business choice, not a statistical one.
    segment_z_alert : float
        ... and the difference is at least this many standard errors (customers independent, ratio
        estimator). 4.0 keeps the family-wise false-alarm rate near 1 % a year for six channels,
        two metrics and monthly scorings (Bonferroni: 0.01 / 144 two-sided is z = 3.97).
    segment_min_customers : int
        Segments with fewer customers are reported but never alert.
    bias_alert : float
        Realised performance: |total predicted − total actual| / |total actual| of the latest
        matured scoring that alerts. 0.2: the synthetic book's matured 91-day scorings stay within
        ±0.11 while nothing changes.
    segment_bias_alert : float
        Realised performance per segment: the segment's actual / predicted spend differs from the
        rest of the book's by at least this much (and by ``segment_z_alert`` standard errors).
    auc_drop_alert : float
        Realised churn AUC of the latest matured scoring this far below the model's holdout AUC
        alerts.
    """

    model_config = _FROZEN

    psi_bins: int = Field(10, ge=2)
    psi_warn: float = Field(0.10, gt=0, allow_inf_nan=False)
    psi_alert: float = Field(0.25, gt=0, allow_inf_nan=False)
    ks_warn: float = Field(0.125, gt=0, le=1)
    ks_alert: float = Field(0.20, gt=0, le=1)
    ks_pvalue: float = Field(0.01, gt=0, lt=1)
    drift_min_importance: float = Field(0.05, ge=0, le=1)
    segment_columns: tuple[str, ...] = ("channel",)
    segment_metrics: tuple[str, ...] = ("clv", "expected_spend")
    segment_change_alert: float = Field(0.10, gt=0, allow_inf_nan=False)
    segment_z_alert: float = Field(4.0, gt=0, allow_inf_nan=False)
    segment_min_customers: int = Field(100, ge=1)
    bias_alert: float = Field(0.20, gt=0, allow_inf_nan=False)
    segment_bias_alert: float = Field(0.25, gt=0, allow_inf_nan=False)
    auc_drop_alert: float = Field(0.05, gt=0, le=1)

    @model_validator(mode="after")
    def _warn_below_alert(self) -> MonitorConfig:
        for warn, alert in (("psi_warn", "psi_alert"), ("ks_warn", "ks_alert")):
            if getattr(self, warn) > getattr(self, alert):
                raise ValueError(f"{warn} must be <= {alert}")
        return self


class SubscriptionModeConfig(BaseModel):
    """How invoices are read in subscription mode (``business: subscription``).

    Parameters
    ----------
    billing_months : int
        Months one invoice pays (1 monthly, 12 annual).
    plans : dict of str to float
        Price list, plan name -> monthly price in currency units; empty: a plan is named by its MRR.
    segment_by : tuple of str
        Segments of the contractual (sBG) fits, among ``plan`` and ``channel``.
    min_churned : int
        Ended subscriptions a segment needs for its own fit; fewer and it takes its plan's, then
        the pooled fit.
    survival : str
        The contractual survival model (:mod:`serving.contractual`): ``frailty`` (the default: the
        discrete-time cancel hazard by tenure band, plan and channel with gamma frailty) or ``sbg``
        (the sBG per segment, two-stage with ``late_tenure_periods``).
    hazard_bands : tuple of int
        First tenure (billing periods) of each band of the frailty hazard's baseline, strictly
        increasing from 0; each subscriber's hazard is flat after the last.
    late_tenure_periods : int
        Renewals after which a second sBG, fitted on the subscriptions that lasted that long, takes
        over (:mod:`serving.contractual`, ``survival: sbg``); 0 = one sBG for every tenure.
    grace_days : int
        Days after the end of a paid period during which a late renewal keeps the customer active.
    returns : bool
        Value the returns of subscribers after their subscription ends (a split-population
        geometric gap fitted on the history, :mod:`features.btyd.returns`) in the CLV of running
        and new subscribers; a cancelled or churned customer's own returns are never scored.
    """

    model_config = _FROZEN

    billing_months: int = Field(1, ge=1)
    plans: dict[str, float] = Field(default_factory=dict)
    segment_by: tuple[Literal["plan", "channel"], ...] = ("plan", "channel")
    min_churned: int = Field(30, ge=1)
    survival: Literal["frailty", "sbg"] = "frailty"
    hazard_bands: tuple[int, ...] = (0, 1, 2, 3, 6, 12, 18)
    late_tenure_periods: int = Field(12, ge=0)
    grace_days: int = Field(0, ge=0)
    returns: bool = True


class LifetimeConfig(BaseModel):
    """How the spend curve (lifetime CLV, horizons other than the boosters') is built (:mod:`training.curve`).

    Parameters
    ----------
    seasonal : bool
        Estimate a purchase-rate index per calendar month with the dropout process
        (:func:`features.btyd.lifetime.fit_lifetime`; needs 12 complete months of history, flat
        otherwise).
    seasonal_fit : bool
        Fit the dropout process again with purchases on the seasonal clock of its indices and the
        lifetime in calendar time, so that the season is not read as dropout
        (:func:`features.btyd.lifetime.fit_lifetime`, module docstring "Fitting with the
        season"). Needs ``seasonal`` and 12 complete months of history. With ``dropout_covariate``
        the levels' effects are fitted with the season too.
        Fitted in calendar time instead, the lifetime CLV depends on the month of the training
        cutoff: on four development books, 0.92 to 1.03 of the realised margin trained at the end
        of June and 1.05 to 1.24 at the end of December; with the season 0.97 to 1.08 and 0.99 to
        1.17 (BENCHMARKS.md, "Lifetime CLV").
    count : {"purchase_days", "orders"}
        What the dropout process counts as a purchase (:attr:`features.btyd.lifetime.LifetimeParams.count`):
        purchase days, same-day purchases merged (the default, the convention of the published
        BTYD fits such as CDNOW's), or each order. Merging a Poisson stream of orders into days
        puts the fitted dropout shape low and the tail long: on books simulated from the process,
        about 7 % at the tenth horizon (BENCHMARKS.md, "How far 18 months of history let a fit place the
        tail").
    value_mean : {"gamma_gamma", "empirical"}
        The population mean value of a purchase in the dropout process: Gamma-Gamma's own, or the
        mean over the repeat buyers of their mean repeat purchase value (the default; Gamma-Gamma's
        ``v`` scaled to it, its shapes kept: :func:`features.btyd.lifetime.fit_lifetime`). Gamma-Gamma
        reads the customers' mean values as inverse gamma: on the synthetic books, whose customers'
        means are gamma, its mean was 8 % above the repeat buyers' on all six development books, and
        new customers were valued 3–14 % above their expectation on five of them; on CDNOW the
        two agree (scale 0.994–0.996). It moves the new customers' CLV and the tail's value, not the
        boosters' horizons (BENCHMARKS.md, "Gamma-Gamma's mean value").
    season_adjusted_boosters : bool
        Read the boosters' forecast as that of a window of the average season of their training
        windows, rather than of the next window's season: they have no calendar, and their training
        windows (origins over half a year) hold more or less of the peak months than the window
        ahead.
    alive_persistence : float
    level_persistence : float or None
        How much of the boosters' view lasts beyond their horizon, in [0, 1]: their probability that
        the customer is alive (1 keeps it, 0 returns to the dropout process's P(alive)) and their
        spend level relative to the dropout process's (1 keeps it, 0 returns to Gamma-Gamma's).
        ``level_persistence`` None (the default): 0.5 when the process is fitted by level
        (``dropout_covariate``), 0 with one process, each chosen on the development books with
        that process.
    interval_coverage : float
        Share of customers the intervals are calibrated to cover, in (0, 1).
    calibrate_spend_level : bool
        Scale the boosters' spend given a purchase so that their total on the time-held-out
        calibration window (the one the intervals are calibrated on) equals what was spent there
        (:attr:`training.lifetime.LifetimeModel.spend_scale`). Off: on the CDNOW pseudo-holdouts it
        brought the total 1 to 3 points closer, on the synthetic books it moved the worst horizon
        further from what customers spent (0.105 off on seed 3).
    dropout_covariate : str or None
        A ``customers`` column (categorical) by whose levels the dropout process is fitted
        (:mod:`features.btyd.covariates`): each level's purchase rate, dropout rate and purchase-day
        value scale on the base's, so a channel whose customers leave faster decays faster beyond
        the boosters' horizon. None (the default), or a book without the column, or fewer than two
        levels with ``min_level_customers``: one process for every customer. With ``seasonal_fit``
        and 12 complete months the levels' effects are fitted with the season in the likelihood
        (:func:`features.btyd.covariates.fit_seasonal_pareto_nbd_by_level`). ``channel`` narrowed the channels' spread of the lifetime CLV on
        the development and the benchmark books, but moved the total and the late horizons further
        from the realised margin on the benchmark books (BENCHMARKS.md, "The dropout process by
        channel as the default: the benchmark run"), so it stays an option. With the season the
        fit by level costs little more than one process's (1.4 s against 0.8 s on 3,723
        customers); in calendar time about 3 ms per customer of its sample.
    new_customers : str
        How a customer just acquired is valued (``new_customer_clv.csv``, ``POST
        /acquisition_budget``, ``channels.csv``): ``"process"`` (the default), by the dropout
        process fitted by ``new_customer_covariate`` alone, the prior of a customer of that level
        with its first purchase made (:meth:`training.lifetime.LifetimeModel.process_curve`);
        ``"champion"``, by the champion's boosters and process on made-up customers with one order
        (:func:`serving.lifetime.new_customer_curves`). Why: the boosters learn from customers at
        training origins, almost none of them on their acquisition day, and their forecast for a
        one-order customer hardly differs by channel. On the eight development book-cutoffs the
        new-customer CLV per channel was off the cohorts' expectation by a mean abs(log ratio) of
        0.11 with the process by channel against 0.37 with the champion (BENCHMARKS.md, "New
        customers from the dropout process by channel").
    new_customer_covariate : "channel" or None
        The ``customers`` column the new customers' process is fitted by: ``"channel"`` (the
        default; a new customer is known by its channel, the only attribute ``clvcast budget`` and
        ``POST /acquisition_budget`` know it by), or None for one process. One process too when the
        book has no such column. One fit serves both when ``dropout_covariate`` is None (the
        process by channel without its levels is the one process) or names the same column.
    min_level_customers : int
        Fewest customers a level needs at the training cutoff for its own effects.
    level_prior_sd : float
        Standard deviation of the normal prior of the level effects (log scale).
    level_fit_customers : int
        The fit by level runs on a random sample of at most this many customers: a few parameters
        per level need far fewer customers than a large book has.

    How the defaults were chosen: on synthetic books other than the benchmark's (seeds 2 and 3,
    same protocol) and CDNOW pseudo-holdouts that end before the benchmark windows; see
    BENCHMARKS.md, "Lifetime CLV".
    """

    model_config = _FROZEN

    seasonal: bool = True
    seasonal_fit: bool = True
    count: Literal["purchase_days", "orders"] = "purchase_days"
    value_mean: Literal["gamma_gamma", "empirical"] = "empirical"
    season_adjusted_boosters: bool = True
    alive_persistence: float = Field(1.0, ge=0, le=1)
    level_persistence: float | None = Field(None, ge=0, le=1)
    interval_coverage: float = Field(0.8, gt=0, lt=1)
    calibrate_spend_level: bool = False
    dropout_covariate: str | None = None
    new_customers: Literal["process", "champion"] = "process"
    new_customer_covariate: Literal["channel"] | None = "channel"
    min_level_customers: int = Field(30, ge=1)
    level_prior_sd: float = Field(1.0, gt=0, allow_inf_nan=False)
    level_fit_customers: int = Field(50_000, ge=100)


class Config(BaseModel):
    """Everything a run depends on: feature, training, lifetime, CLV and monitoring settings.

    ``features.btyd_horizon_days`` follows the boosters' label horizon
    (``training.label_horizon_days``, else ``training.horizon_days``) unless it is set.

    ``business`` is ``retail`` (non-contractual: churn is no purchase in the window) or
    ``subscription`` (contractual: invoices and ``cancel`` events, churn is cancelling in the window;
    :mod:`features.subscription`, :mod:`serving.contractual`). In subscription mode
    ``training.churn_definition`` is ``cancel`` (set so when not given; ``purchase`` is refused).
    ``auto`` (the default): a training run detects it from the history up to its cutoff
    (:func:`features.subscription.detect_business`), says which and why in the log and its MLflow
    tags, and runs as that mode (:func:`with_business`); set ``retail`` or ``subscription`` to
    decide. Models of different ``business`` or ``churn_definition`` are never compared by the
    champion rule.
    """

    model_config = _FROZEN

    business: Business = "auto"
    features: FeatureConfig = FeatureConfig()
    training: TrainingConfig = TrainingConfig()
    lifetime: LifetimeConfig = LifetimeConfig()
    clv: ClvConfig = ClvConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitor: MonitorConfig = MonitorConfig()
    subscription: SubscriptionModeConfig = SubscriptionModeConfig()

    @model_validator(mode="before")
    @classmethod
    def _subscription_churns_by_cancelling(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("business") != "subscription":
            return data
        training = data.get("training")
        training = training.model_dump() if isinstance(training, BaseModel) else dict(training or {})
        if training.get("churn_definition", "cancel") != "cancel":
            raise ValueError(
                "training.churn_definition must be 'cancel' with business: subscription (churn is cancelling), "
                f"got {training['churn_definition']!r}"
            )
        return {**data, "training": {**training, "churn_definition": "cancel"}}

    @model_validator(mode="before")
    @classmethod
    def _btyd_horizon_follows_the_label_horizon(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        features = data.get("features")
        features = features.model_dump() if isinstance(features, BaseModel) else dict(features or {})
        if "btyd_horizon_days" not in features:
            training = data.get("training")
            training = training.model_dump() if isinstance(training, BaseModel) else dict(training or {})
            horizon = training.get("label_horizon_days") or training.get("horizon_days", TrainingConfig().horizon_days)
            if isinstance(horizon, int) and horizon >= 1:  # an invalid horizon is reported once, as itself
                features["btyd_horizon_days"] = horizon
        return {**data, "features": features}

    @model_validator(mode="after")
    def _btyd_offset_horizon(self) -> Config:
        label = self.training.label_horizon_days or self.training.horizon_days
        if self.training.btyd_offset and self.features.btyd_horizon_days != label:
            raise ValueError(
                f"features.btyd_horizon_days must equal the label horizon ({label}: training.label_horizon_days, "
                "else training.horizon_days) with btyd_offset: the models start from the BTYD forecast over "
                f"the label horizon, got {self.features.btyd_horizon_days}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples become lists), the inverse of :func:`config_from_dict`."""
        return json.loads(self.model_dump_json())

    def to_flat_dict(self) -> dict[str, Any]:
        """Flat ``{"training.churn_params.num_leaves": 31, ...}`` for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


_SECTIONS: dict[str, type[BaseModel]] = {
    "features": FeatureConfig, "training": TrainingConfig, "lifetime": LifetimeConfig, "clv": ClvConfig,
    "scoring": ScoringConfig, "monitor": MonitorConfig, "subscription": SubscriptionModeConfig,
}
#: Settings at the top level of the file, beside the sections (``CLVCAST_BUSINESS`` in the environment).
_TOP_LEVEL = ("business",)


def load_config(path: str | Path | None = None, /, *, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the configuration from the defaults, a file, the environment and overrides.

    Parameters
    ----------
    path : str or Path, optional
        A ``.yaml``/``.yml`` or ``.json`` file with the sections ``features``, ``training``, ``lifetime``,
        ``clv``, ``scoring``, ``monitor``, ``subscription`` and the top-level ``business``.
        Default: the file named by ``CLVCAST_CONFIG``, if set.
    environ : mapping, optional
        The environment to read ``CLVCAST_CONFIG`` and ``CLVCAST_<SECTION>__<KEY>`` from; default
        ``os.environ``.
    **overrides
        Values that win over everything else, typically CLI flags. A key is either a field name
        that is unique across sections (``horizon_days``, ``gross_margin``, ``target_ltv_cac``) or
        a path joined by double underscores (``training__churn_params__num_leaves``). ``None``
        values are ignored, so unset CLI flags can be passed through as they are.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, wrong type or a value outside its range, naming the key.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_FILE_ENV):
        path = env[CONFIG_FILE_ENV]
    data = _read_file(Path(path)) if path is not None else {}
    init = _apply_overrides({}, overrides)
    return _build(data, init, env)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (as read from a file or MLflow); no environment."""
    return _build(dict(data), {}, {})


def with_business(config: Config, business: Literal["retail", "subscription"]) -> Config:
    """``config`` running as ``business`` (a detected mode): subscription churns by cancelling.

    Raises
    ------
    ConfigError
        If ``business`` is neither ``retail`` nor ``subscription``.
    """
    if business not in ("retail", "subscription"):
        raise ConfigError(f"business: rule 'retail or subscription once decided': got {business!r}")
    data = config.to_dict()
    data["business"] = business
    if business == "subscription":
        data["training"]["churn_definition"] = "cancel"
    return config_from_dict(data)


def with_overrides(config: Config, **overrides: Any) -> Config:
    """A validated copy of ``config`` with overrides applied as in :func:`load_config`."""
    data = config.to_dict()
    if data["features"]["btyd_horizon_days"] == (data["training"]["label_horizon_days"] or data["training"]["horizon_days"]):
        # The BTYD horizon follows the label horizon: a new horizon carries it along.
        del data["features"]["btyd_horizon_days"]
    return _build(_apply_overrides(data, overrides), {}, {})


def _build(file_data: Mapping[str, Any], init: dict[str, Any], env: Mapping[str, str]) -> Config:
    if not isinstance(file_data, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(file_data).__name__}")
    unknown = set(file_data) - set(_SECTIONS) - set(_TOP_LEVEL)
    if unknown:
        raise ConfigError(f"config: unknown section(s) {sorted(unknown)}; expected {sorted(_SECTIONS)}")
    # Sections as one merged mapping, lowest priority first: the file, then the environment, then
    # the overrides; the "before" validator sees which keys were set at all.
    merged = _deep_merge(_deep_merge(dict(file_data), _env_values(env)), init)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """``CLVCAST_<SECTION>__<KEY>[__<KEY>]`` variables as a nested dict; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if not (parts[0] in _SECTIONS and len(parts) > 1 or parts == [parts[0]] and parts[0] in _TOP_LEVEL):
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment {name}: cannot parse {raw!r}: {exc}") from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    """One line per broken rule: ``config training.horizon_days: Input should be >= 1 (got 0)``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        got = f" (got {error['input']!r})" if error["type"] not in ("extra_forbidden", "value_error", "missing") else ""
        lines.append(f"config {where or '(top level)'}: {message}{got}")
    return "\n".join(lines)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path}: cannot parse: {first_line}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    return data


def _leaf_index() -> dict[str, list[tuple[str, ...]]]:
    index: dict[str, list[tuple[str, ...]]] = {}
    for section, cls in _SECTIONS.items():
        for name in cls.model_fields:
            index.setdefault(name, []).append((section, name))
    return index


def _resolve_override(key: str) -> tuple[str, ...]:
    if key in _TOP_LEVEL:
        return (key,)
    if "__" in key:
        parts = tuple(key.split("__"))
        if parts[0] not in _SECTIONS:
            raise ConfigError(f"override {key!r}: unknown section {parts[0]!r}")
        return parts
    matches = _leaf_index().get(key, [])
    if not matches:
        raise ConfigError(f"unknown config override {key!r}")
    if len(matches) > 1:
        options = ", ".join("__".join(m) for m in matches)
        raise ConfigError(f"override {key!r} is ambiguous; use one of {options}")
    return matches[0]


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None:
            continue
        parts = _resolve_override(key)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key {'.'.join(parts)!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


__all__ = [
    "AGE_DEPENDENT_FEATURES",
    "BTYD_OFFSET_FEATURES",
    "Business",
    "CONFIG_FILE_ENV",
    "ChurnCalibration",
    "ChurnDefinition",
    "ClvConfig",
    "Config",
    "ConfigError",
    "LifetimeConfig",
    "LightGBMParams",
    "MonitorConfig",
    "ScoringConfig",
    "SpendObjective",
    "SubscriptionModeConfig",
    "TrainingConfig",
    "config_from_dict",
    "load_config",
    "with_business",
    "with_overrides",
]
