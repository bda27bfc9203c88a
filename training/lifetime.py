"""The lifetime model of a champion: the dropout process, how it joins the boosters, the interval level.

:class:`LifetimeModel` is what training stores beside the two boosters (in the serving artifact)
and what scoring, the service and finance call to turn the boosters' next-horizon forecast into a
spend curve, lifetime CLV and intervals (:mod:`training.curve`):

>>> curve = champion.lifetime.curve(history, churn_probability=p, spend_if_active=s,
...                                 horizon_days=182, clv=clv_config)   # doctest: +SKIP

:func:`fit_lifetime_model` fits it at the training cutoff: the dropout process on the history up to
the cutoff only, the average season of the training windows, and the interval level by split
conformal calibration on a time-held-out window that ends at the cutoff (the latest training
origin's when the horizon is the boosters'; :func:`training.pipeline` chooses it).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.btyd.lifetime import DropoutState, LifetimeParams, fit_lifetime
from features.dates import day_number
from features.history import History, prepare_history
from training.config import ClvConfig, LifetimeConfig
from training.curve import SpendCurve, calibrate_level, spend_curve

log = logging.getLogger(__name__)

__all__ = ["LifetimeModel", "fit_lifetime_model", "training_season_index"]


class LifetimeModel(BaseModel):
    """Everything besides the boosters that the spend curve of a champion needs.

    Attributes
    ----------
    params : LifetimeParams
        The dropout process (Pareto/NBD + Gamma-Gamma, monthly purchase-rate indices) fitted on the
        history up to the training cutoff.
    model_horizon_days : int
        H_m, the boosters' label window, days.
    season_index : float or None
        Mean purchase-rate index of the boosters' training windows (None: their forecast is read
        for the next window's own season).
    alive_persistence, level_persistence : float
        See :class:`training.config.LifetimeConfig`.
    interval_level : float
        Central probability of the predictive distributions that gives the calibrated coverage.
    interval_coverage : float
        The coverage it was calibrated for.
    spend_scale : float
        Factor on the boosters' spend given a purchase (1: none): realised over predicted total
        spend on the time-held-out calibration window, with ``LifetimeConfig.calibrate_spend_level``.
    new_customer_params : LifetimeParams or None
        The dropout process new customers are valued by (``LifetimeConfig.new_customers``
        ``"process"``: fitted by ``new_customer_covariate`` on the same history as ``params``, the
        same object when they coincide); None: new customers are scored by the champion (also
        every champion trained before it existed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: LifetimeParams
    model_horizon_days: int = Field(ge=1)
    season_index: float | None = None
    alive_persistence: float = Field(ge=0, le=1)
    level_persistence: float = Field(ge=0, le=1)
    interval_level: float = Field(gt=0, lt=1)
    interval_coverage: float = Field(gt=0, lt=1)
    spend_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    new_customer_params: LifetimeParams | None = None

    def state(self, h: History) -> DropoutState:
        """The dropout process's posterior of every customer of ``h`` at its cutoff."""
        return DropoutState.from_history(h, self.params)

    def curve(
        self,
        customers: History | DropoutState,
        *,
        churn_probability,
        spend_if_active,
        horizon_days: int,
        clv: ClvConfig,
    ) -> SpendCurve:
        """Spend curve, lifetime CLV and interval moments of each customer (:func:`training.curve.spend_curve`).

        Parameters
        ----------
        customers : History or DropoutState
            The customers' history at the scoring date (n customers), or their dropout state
            (e.g. :meth:`DropoutState.new_customers` for customers just acquired).
        churn_probability, spend_if_active : array-like, shape (n,)
            The boosters' p and s over ``model_horizon_days``, in the order of ``customers`` (s is
        multiplied by ``spend_scale``).
        horizon_days : int
            H of each horizon of the curve, days.
        clv : ClvConfig
            Margin, cost to serve, annual discount rate and the cap K (``lifetime_horizons``).

        Returns
        -------
        SpendCurve
        """
        state = customers if isinstance(customers, DropoutState) else self.state(customers)
        return spend_curve(
            state,
            churn_probability=churn_probability,
            spend_if_active=np.asarray(spend_if_active, dtype=float) * self.spend_scale,
            model_horizon_days=self.model_horizon_days,
            horizon_days=horizon_days,
            n_horizons=clv.lifetime_horizons,
            margin=clv.gross_margin,
            cost_to_serve=clv.cost_to_serve,
            annual_discount_rate=clv.annual_discount_rate,
            alive_persistence=self.alive_persistence,
            level_persistence=self.level_persistence,
            model_season_index=self.season_index,
        )

    def process_curve(self, state: DropoutState, *, horizon_days: int, clv: ClvConfig) -> SpendCurve:
        """The dropout process's own spend curve, without the boosters (:func:`training.curve.spend_curve`).

        For customers the boosters know nothing of, e.g. :meth:`DropoutState.new_customers`: the
        boosters' inputs are replaced by the process's own view of a window of ``horizon_days``
        (P(no purchase) = 1 − π q(0, H), spend given a purchase η v G(0, H) / q(0, H)) and nothing
        of them persists, so every horizon is the process's: E_k = π η v G(window k), where π is
        P(alive), v the value of a purchase day, η its share kept after refunds, and G, q as in
        :mod:`training.curve`; in the first horizon spend given a purchase is at least one order
        (v), as for every customer. The interval moments are the process's own; the caller picks
        the level (new customers: the nominal ``interval_coverage``, :mod:`serving.lifetime`).

        Parameters
        ----------
        state : DropoutState
            n customers.
        horizon_days : int
            H of each horizon of the curve, days.
        clv : ClvConfig
            Margin, cost to serve, annual discount rate and the cap K.

        Returns
        -------
        SpendCurve
        """
        q = state.purchase_probability([0], [horizon_days])[:, 0]
        purchases = state.expected_purchases([0], [horizon_days])[:, 0]
        return spend_curve(
            state,
            churn_probability=1.0 - state.p_alive * q,
            spend_if_active=state.net_value_share * state.order_value * purchases / q,
            model_horizon_days=horizon_days,
            horizon_days=horizon_days,
            n_horizons=clv.lifetime_horizons,
            margin=clv.gross_margin,
            cost_to_serve=clv.cost_to_serve,
            annual_discount_rate=clv.annual_discount_rate,
            alive_persistence=0.0,
            level_persistence=0.0,
        )


def training_season_index(params: LifetimeParams, origins, weights, model_horizon_days: int) -> float:
    """Mean purchase-rate index over the label windows of the training origins, weighted by their rows.

    Parameters
    ----------
    params : LifetimeParams
        Its monthly indices.
    origins : sequence of date-like
        Training origins; origin o's window is the ``model_horizon_days`` days after it.
    weights : sequence of float
        Rows of each origin.
    model_horizon_days : int

    Returns
    -------
    float
        1.0 without seasonality.
    """
    days = np.array([day_number(pd.Timestamp(o).date()) for o in origins], dtype=np.int64)
    index = params.clock.elapsed(days + 1, days + 1 + model_horizon_days) / model_horizon_days
    w = np.asarray(weights, dtype=float)
    return float(np.sum(index * w) / np.sum(w)) if w.sum() > 0 else 1.0


def fit_lifetime_model(
    history,
    *,
    cutoff,
    model_horizon_days: int,
    origins,
    origin_rows,
    settings: LifetimeConfig,
    clv: ClvConfig,
    time_unit_days: float,
    validation=None,
    interval_level: float | None = None,
    spend_scale: float = 1.0,
) -> LifetimeModel:
    """Fit the lifetime model at the training cutoff.

    Parameters
    ----------
    history : Tables
        The tables cut at ``cutoff`` (nothing later is read).
    cutoff : date-like
        Training cutoff.
    model_horizon_days : int
        H_m.
    origins, origin_rows : sequences
        The training origins and their number of rows (for :func:`training_season_index`).
    settings : LifetimeConfig
    clv : ClvConfig
        Only the cap K and the arithmetic of the calibration curve (which does not change the level).
    time_unit_days : float
        Time unit of the dropout process (the BTYD features').
    validation : (origin, days, customer_ids, churn_probability, spend_if_active, actual_spend), optional
        A time-held-out window of the history (``days`` long from ``origin``, ending at the cutoff at
        the latest), customers known at its origin, the boosters' forecasts of them and their
        realised spend in it: the interval level is calibrated there (and, with
        ``settings.calibrate_spend_level``, the spend scale: realised over predicted total).
        Without it the level is the nominal coverage (uncalibrated).
    interval_level : float, optional
        A level calibrated before, in (0, 1), used instead (a refit on the whole history, which
        leaves no window to calibrate on, keeps the evaluation's level). Exclusive with ``validation``.
    spend_scale : float, optional
        Likewise, the spend scale calibrated before (with ``interval_level``).

    Returns
    -------
    LifetimeModel

    Raises
    ------
    ValueError
        If the dropout process cannot be fitted on the history, or both ``validation`` and
        ``interval_level`` are given.
    """
    h = prepare_history(history, cutoff)
    new_column = settings.new_customer_covariate if settings.new_customers == "process" else None

    def fit(column: str | None):
        return fit_lifetime(
            h, time_unit_days=time_unit_days, seasonal=settings.seasonal, seasonal_fit=settings.seasonal_fit,
            level_column=column, min_level_customers=settings.min_level_customers,
            level_prior_sd=settings.level_prior_sd, level_fit_customers=settings.level_fit_customers,
            count=settings.count, value_mean=settings.value_mean,
        )  # fmt: skip

    # One fit serves both processes when it can: fit_lifetime fits the process without levels first,
    # so the fit by the new customers' column, its levels left out, is the one process.
    fitted = fit(settings.dropout_covariate or new_column)
    params = fitted if settings.dropout_covariate else fitted.model_copy(update={"by_level": None})
    persistence = level_persistence(settings, params)
    log.info(
        "dropout process of the scored customers: %s; level_persistence %.2f; a purchase is %s; Gamma-Gamma's mean value %s",
        "one for every customer" if params.by_level is None else f"by customers.{params.by_level.column}", persistence,
        "a purchase day" if params.count == "purchase_days" else "an order",
        "its own" if params.value_scale == 1.0 else f"scaled by {params.value_scale:.3f} to the repeat buyers'",
    )  # fmt: skip
    new_customer_params = None
    if settings.new_customers == "process":
        if new_column in (None, settings.dropout_covariate):
            new_customer_params = params
        elif settings.dropout_covariate is None:
            new_customer_params = fitted
        else:
            new_customer_params = fit(new_column)
        log.info(
            "new customers: valued by the dropout process %s alone",
            "for every customer" if new_customer_params.by_level is None
            else f"by customers.{new_customer_params.by_level.column}",
        )  # fmt: skip
    else:
        log.info("new customers: valued by the champion's boosters and dropout process on made-up customers")
    season = training_season_index(params, origins, origin_rows, model_horizon_days) if settings.season_adjusted_boosters else None
    model = LifetimeModel(
        params=params,
        model_horizon_days=model_horizon_days,
        season_index=season,
        alive_persistence=settings.alive_persistence,
        level_persistence=persistence,
        interval_level=settings.interval_coverage,
        interval_coverage=settings.interval_coverage,
        new_customer_params=new_customer_params,
    )
    if interval_level is not None:
        if validation is not None:
            raise ValueError("pass either validation or interval_level, not both")
        return model.model_copy(update={"interval_level": float(interval_level), "spend_scale": float(spend_scale)})
    if validation is None:
        log.warning("no time-held-out training origin: the intervals use the nominal level %.2f, uncalibrated", settings.interval_coverage)
        return model
    origin, days, ids, p, s, actual = validation
    h_origin = prepare_history(history, origin)
    rows = h_origin.ids.get_indexer(pd.Index(ids))
    if (rows < 0).any():
        raise RuntimeError(f"origin {origin}: calibration rows of customers unknown at the origin")
    state = model.state(h_origin).select(rows)
    curve = model.curve(state, churn_probability=p, spend_if_active=s, horizon_days=days, clv=clv)
    if settings.calibrate_spend_level:
        predicted = float(curve.expected_spend[:, 0].sum())
        scale = float(np.sum(actual)) / predicted if predicted > 0 else 1.0
        if np.isfinite(scale) and scale > 0:
            model = model.model_copy(update={"spend_scale": scale})
            curve = model.curve(state, churn_probability=p, spend_if_active=s, horizon_days=days, clv=clv)
    level = calibrate_level(curve.spend_moments, actual, coverage=settings.interval_coverage)
    return model.model_copy(update={"interval_level": level})


def level_persistence(settings: LifetimeConfig, params: LifetimeParams) -> float:
    """``settings.level_persistence``, or when None its default for the process fitted (:class:`training.config.LifetimeConfig`)."""
    if settings.level_persistence is not None:
        return settings.level_persistence
    return 0.5 if params.by_level is not None else 0.0
