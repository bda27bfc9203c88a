"""The dropout process behind lifetime CLV: Pareto/NBD with a seasonal purchase rate and Gamma-Gamma values.

Why this model
--------------
Lifetime CLV needs the probability that a customer is still a customer, and how fast that decays,
over years; P(no purchase in H) is not it. Pareto/NBD [1]_ keeps the two clocks apart: while alive
a customer buys at Poisson rate lambda ~ Gamma(r, alpha); the lifetime is exponential with rate
mu ~ Gamma(s, beta). (BG/NBD's dropout happens only at a purchase, so a frequent buyer's lifetime
shrinks with its rate: on a five-year synthetic backtest its lifetime value was 1.5 times the
realised margin; see BENCHMARKS.md.)

Seasonality
-----------
Customers buy more in some calendar months. Here the purchase rate while alive is lambda · s(t),
s the index of t's calendar month (mean 1 over the year), while the lifetime stays in calendar
time: a purchase clock Λ(t) = ∫ s runs faster in December, the dropout clock does not. (Running
both on the seasonal clock inflated the survival of young customers: over five years the alive
base's expected survival was 25 % above the truth on a synthetic book, 5 % with the calendar
dropout clock; BENCHMARKS.md.) The population parameters are fitted with the season in the
likelihood (next section), or as a plain Pareto/NBD in calendar time (the summary of
:func:`features.btyd.summary_from_transactions`) with ``seasonal_fit=False`` or under 12 complete
months of history. By level of an attribute, the levels' effects are fitted with the same likelihood
as the process (:mod:`features.btyd.covariates`). The monthly indices are the observed repeat
purchase days of each calendar month of the history over those the fitted model expects from the
customers acquired by then (each acquisition cohort's unconditional E[X(t)], [2]_ Section 4),
rescaled to mean 1. Unlike a revenue-per-month index this
needs no trend model: the expectation already follows the growth and ageing of the book.

Fitting with the season
-----------------------
Fitted as a plain Pareto/NBD in calendar time, the process reads the season as dropout: after a
quiet spring the last purchases look old and the lifetimes short, after December they look long
(on four synthetic development books the lifetime CLV was 0.92 to 1.03 of the realised margin
trained at the end of June and 1.05 to 1.24 at the end of December; BENCHMARKS.md, "The fit with
the season"). With ``fit_clock = "seasonal"`` the process is fitted by the likelihood of this
very model, purchases on the seasonal clock and the lifetime in calendar time
(:mod:`features.btyd.seasonal_pareto`): first with a flat clock (Pareto/NBD's own likelihood, to
1e-4), whose fit gives the indices, then with the clock of those indices. The indices are then
estimated again with the second fit (a further round moved them by under 0.01), so the stored
indices are not exactly those the fit used. P(alive) is that model's.

Quantities given alive at T
---------------------------
Given the history and alive at T, lambda ~ Gamma(r+x, alpha+Λ_T) and mu ~ Gamma(s, beta+T),
independent ([2]_, Section 6: the alive term of the likelihood is the product of the two gamma
kernels; with the seasonal rate the purchase kernel is lambda^x exp(-lambda Λ_T), Λ_T the
seasonal exposure from the first purchase to T). P(alive) is Pareto/NBD's in calendar time, the
approximation of this model (exact without seasonality), or with ``fit_clock = "seasonal"`` this
model's own (:func:`features.btyd.seasonal_pareto.seasonal_pareto_nbd_probability_alive`). With
B = beta+T and times u after T:

- survival S(u) = P(alive at T+u | alive at T) = E[exp(-mu u)] = (B / (B+u))^s;
- expected purchases in (T+a, T+b]: E[lambda] ∫_a^b s(u) S(u) du, the integral in closed form on
  each calendar month (s is constant there): ∫ S = B [(B/(B+u))^(s-1)] / (1 - s) between the bounds;
- probability of a purchase in (T+a, T+b]: S(a) E[∫_a^b lambda s(t) exp(-lambda (Λ(t) - Λ(a))) exp(-mu' (t - a)) dt]
  with mu' ~ Gamma(s, B+a) (a customer alive at T+a): the first event of the two clocks is a
  purchase, before b. In seasonal time v = Λ(t) - Λ(a) and then l = (r+x) log(1 + v/(alpha+Λ_T))
  the integral is ∫ e^(-l) (B'/(B' + t(v(l)) - a))^s dl, smooth, by Gauss-Legendre;
- expected remaining lifetime up to a cap: ∫_0^cap S(u) du.

References
----------
.. [1] Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987). Counting your customers: who are
   they and what will they do next? *Management Science* 33(1), 1-24.
.. [2] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and related
   expressions. http://brucehardie.com/notes/009/
.. [3] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. *Journal of Marketing Research* 42(4), 415-430 (Gamma-Gamma).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.special import exprel

from features.btyd.covariates import (
    fit_gamma_gamma_by_level,
    fit_pareto_nbd_by_level,
    fit_seasonal_pareto_nbd_by_level,
    level_codes,
)
from features.btyd.gamma_gamma import GammaGammaParams, fit_gamma_gamma, gamma_gamma_expected_value
from features.btyd.pareto_nbd import ParetoNBDParams, fit_pareto_nbd, pareto_nbd_probability_alive
from features.btyd.seasonal import MONTHS, SeasonalClock
from features.btyd.seasonal_pareto import SeasonalHistory, fit_seasonal_pareto_nbd, month_pieces, seasonal_pareto_nbd_probability_alive
from features.btyd.summary import btyd_summary, check_count
from features.history import History, arrow_strings, lookup

log = logging.getLogger(__name__)

__all__ = ["SEASONALITY_MIN_MONTHS", "DropoutState", "LevelEffects", "LifetimeParams", "fit_lifetime", "level_values", "net_value_share",
           "time_alive"]

#: Fewest complete calendar months of history for a seasonality estimate (every month seen once).
SEASONALITY_MIN_MONTHS = 12
#: Most customers the fit with the season runs on (:func:`fit_lifetime`): its likelihood costs about
#: a month piece per month since the last purchase, per customer.
SEASONAL_FIT_CUSTOMERS = 50_000
#: Most month pieces of the sample it runs on (about 0.3 GB and 1 to 2 s per evaluation).
SEASONAL_FIT_PIECES = 500_000
#: ``value_mean="empirical"``: fewest repeat buyers with a value to scale Gamma-Gamma's mean on.
VALUE_SCALE_MIN_BUYERS = 100
#: The quantile each repeat buyer's mean value is winsorised at before the mean.
VALUE_SCALE_WINSOR = 0.999
#: Scales outside these bounds are not taken (Gamma-Gamma's own mean is kept, with a warning).
VALUE_SCALE_BOUNDS = (0.5, 2.0)
# Gauss-Legendre nodes of the purchase-probability integral, and where its log variable is cut off
# (e^-45 of the mass is left out).
_GL_NODES = 32
_L_CUT = 45.0


class LevelEffects(BaseModel):
    """The dropout process by level of a customer attribute (:mod:`features.btyd.covariates`).

    Parameters
    ----------
    column : str
        The ``customers`` column (e.g. ``channel``).
    levels : tuple of str
        Its values with their own effects; any other value (or none) takes the base.
    pareto, gamma_gamma : ParetoNBDParams, GammaGammaParams
        The base: a customer without a level.
    pareto_by_level, gamma_gamma_by_level : tuples, one per level
        Each level's parameters (r, s, p and q shared with the base).
    customers_by_level : tuple of int
        Customers of each level in the fit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    levels: tuple[str, ...]
    pareto: ParetoNBDParams
    gamma_gamma: GammaGammaParams
    pareto_by_level: tuple[ParetoNBDParams, ...]
    gamma_gamma_by_level: tuple[GammaGammaParams, ...]
    customers_by_level: tuple[int, ...]

    def rate_multipliers(self) -> dict[str, dict[str, float]]:
        """Per level: its mean purchase rate, dropout rate and purchase-day value over the base's."""
        return {
            level: {
                "purchase_rate": self.pareto.alpha / pn.alpha,
                "dropout_rate": self.pareto.beta / pn.beta,
                "order_value": gg.v / self.gamma_gamma.v,
            }
            for level, pn, gg in zip(self.levels, self.pareto_by_level, self.gamma_gamma_by_level, strict=True)
        }

    def table(self) -> pd.DataFrame:
        """One row per level (and ``(base)``): customers, the three multipliers, alpha, beta and v."""
        multipliers = self.rate_multipliers()
        rows = [
            {self.column: level, "customers": n, **multipliers[level], "alpha": pn.alpha, "beta": pn.beta, "v": gg.v}
            for level, n, pn, gg in zip(self.levels, self.customers_by_level, self.pareto_by_level, self.gamma_gamma_by_level, strict=True)
        ]
        rows.append({self.column: "(base)", "customers": None, "purchase_rate": 1.0, "dropout_rate": 1.0, "order_value": 1.0,
                     "alpha": self.pareto.alpha, "beta": self.pareto.beta, "v": self.gamma_gamma.v})  # fmt: skip
        return pd.DataFrame(rows).astype({"customers": "Int64"}).set_index(self.column)


class LifetimeParams(BaseModel):
    """Population parameters of the dropout process, fitted on the history up to one cutoff.

    Parameters
    ----------
    pareto : ParetoNBDParams
        Pareto/NBD (``alpha`` and ``beta`` per ``time_unit_days`` days), fitted as ``fit_clock`` says.
    gamma_gamma : GammaGammaParams
        Gamma-Gamma of the value of a purchase day (of an order with ``count`` ``"orders"``).
    seasonality : tuple of 12 float
        Purchase-rate index per calendar month, January first, mean 1 (all ones: no seasonality).
    time_unit_days : float
        Days per time unit of ``pareto``.
    by_level : LevelEffects or None
        The process by level of a customer attribute; customers take their level's parameters
        (None: everyone takes ``pareto`` and ``gamma_gamma``, which are always the fit without levels).
    fit_clock : {"calendar", "seasonal"}
        How ``pareto`` was fitted, and so how :class:`DropoutState` computes P(alive): as a plain
        Pareto/NBD in calendar time, or with purchases on the seasonal clock of ``seasonality``
        (module docstring, "Fitting with the season").
    net_value_share : float
        Share of the value bought that the book keeps after refunds, in [0, 1]: 1 − refunds ÷
        purchases over the history (:func:`net_value_share`). Gamma-Gamma's values are those of
        purchase days, refunds excluded (:func:`features.btyd.summary.btyd_summary`), while spend
        and CLV are net: the spend curve's tail takes Gamma-Gamma's value times this share. One
        share for the book, also with ``by_level``. 1 for a champion fitted before it was
        estimated.
    count : {"purchase_days", "orders"}
        What the process counts as a purchase (:func:`features.btyd.summary.btyd_summary`): a
        purchase day, same-day purchases merged (the published fits' convention, and every
        champion's before this setting), or each order. ``pareto``'s purchase rate and
        ``gamma_gamma``'s values are then per order, and :class:`DropoutState` reads a history the
        same way. Merging a Poisson stream of orders into days puts the dropout shape low and the
        tail long (BENCHMARKS.md, "How far 18 months of history let a fit place the tail").
    value_scale : float
        The factor Gamma-Gamma's ``v`` was multiplied by after its fit (also by level), so that its
        population mean value of a purchase equals the mean over the repeat buyers of their mean
        repeat purchase value (``value_mean="empirical"`` of :func:`fit_lifetime`); 1 when the fit
        is Gamma-Gamma's own.
    orders_per_first_day : float
        With ``count="orders"``, the mean number of orders on a customer's first purchase day in the
        history the process was fitted on (≥ 1), so that a new customer's first purchase day is
        worth this many of Gamma-Gamma's orders (:meth:`mean_order_value`); 1 with purchase days.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pareto: ParetoNBDParams
    gamma_gamma: GammaGammaParams
    seasonality: tuple[float, ...] = (1.0,) * MONTHS
    time_unit_days: float = Field(7.0, gt=0)
    by_level: LevelEffects | None = None
    fit_clock: Literal["calendar", "seasonal"] = "calendar"
    net_value_share: float = Field(1.0, ge=0, le=1)
    count: Literal["purchase_days", "orders"] = "purchase_days"
    orders_per_first_day: float = Field(1.0, ge=1, allow_inf_nan=False)
    value_scale: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_clock(self) -> LifetimeParams:
        if self.count == "purchase_days" and self.orders_per_first_day != 1.0:
            raise ValueError(f"orders_per_first_day: rule '1 when count is purchase_days': got {self.orders_per_first_day}")
        if self.fit_clock == "seasonal" and self.by_level is not None:
            # Necessary, not sufficient: a calendar fit by level shares one r and s too.
            shared = {(pn.r, pn.s) for pn in (self.by_level.pareto, *self.by_level.pareto_by_level)}
            if len(shared) != 1:
                raise ValueError(
                    "fit_clock 'seasonal' with by_level: every level must share one r and s "
                    "(the seasonal fit by level: features.btyd.covariates.fit_seasonal_pareto_nbd_by_level)"
                )
        return self

    @field_validator("seasonality")
    @classmethod
    def _twelve_months(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        SeasonalClock(value)  # raises on anything but 12 positive finite numbers
        return value

    @property
    def clock(self) -> SeasonalClock:
        return SeasonalClock(self.seasonality)

    def customer_params(self, level_values=None) -> tuple[np.ndarray, list[ParetoNBDParams], list[GammaGammaParams]]:
        """Each customer's level code and the parameters of every level (:attr:`by_level`).

        Parameters
        ----------
        level_values : array-like of str, shape (n,), optional
            The customers' values of ``by_level.column`` (missing or unseen: the base).

        Returns
        -------
        codes : ndarray of int, shape (n,)
            −1: the base (no level, or no :attr:`by_level`); else the position in ``by_level.levels``.
        pareto, gamma_gamma : list
            Parameters indexed by code + 1 (the base first).
        """
        if self.by_level is None:
            n = 0 if level_values is None else len(level_values)
            return np.full(n, -1, dtype=np.int64), [self.pareto], [self.gamma_gamma]
        effects = self.by_level
        codes = level_codes(level_values, effects.levels) if level_values is not None else np.zeros(0, dtype=np.int64)
        return codes, [effects.pareto, *effects.pareto_by_level], [effects.gamma_gamma, *effects.gamma_gamma_by_level]

    def mean_order_value(self, level_values) -> np.ndarray:
        """Mean value of a first purchase day of a customer of each level, shape (n,).

        Gamma-Gamma's mean value of a purchase, p v / (q − 1): of a purchase day, or with
        ``count="orders"`` of an order times :attr:`orders_per_first_day`. NaN where q ≤ 1 (no
        finite mean). Without :attr:`by_level`, the population's for everyone.
        """
        codes, _, ggs = self.customer_params(level_values)
        means = np.array([g.p * g.v / (g.q - 1.0) if g.q > 1 else np.nan for g in ggs])
        return means[codes + 1] * self.orders_per_first_day


def fit_lifetime(
    h: History,
    *,
    time_unit_days: float = 7.0,
    seasonal: bool = True,
    seasonal_fit: bool = True,
    level_column: str | None = None,
    min_level_customers: int = 30,
    level_prior_sd: float = 1.0,
    level_fit_customers: int = 50_000,
    count: Literal["purchase_days", "orders"] = "purchase_days",
    value_mean: Literal["gamma_gamma", "empirical"] = "gamma_gamma",
) -> LifetimeParams:
    """Fit the dropout process (Pareto/NBD + Gamma-Gamma, seasonal purchase rate) on the history ``h``.

    Seasonality needs ``seasonal=True`` and at least :data:`SEASONALITY_MIN_MONTHS` complete calendar
    months between the first purchase and the cutoff; otherwise the indices are all 1.

    With ``level_column`` (a ``customers`` column, e.g. ``channel``) the process is also fitted by
    level of that attribute (:mod:`features.btyd.covariates`): each value held by at least
    ``min_level_customers`` customers gets its own purchase-rate, dropout-rate and value scales.
    Nothing is fitted by level (``by_level`` None, and a log line says why) when the column is
    absent or fewer than two values qualify.

    Parameters
    ----------
    h : History
        Purchases up to the cutoff.
    time_unit_days : float
        Days per time unit of the fit (7: weeks, which reproduces the published CDNOW fit).
    seasonal : bool
        Estimate the monthly indices (module docstring).
    seasonal_fit : bool
        With ``seasonal`` and 12 complete months, fit with purchases on the seasonal clock
        (module docstring, "Fitting with the season"); ``fit_clock`` of the result is then
        ``seasonal``, and with ``level_column`` the levels' effects are fitted with the season
        too (:func:`features.btyd.covariates.fit_seasonal_pareto_nbd_by_level`). On a random
        sample (seed 0) of at most :data:`SEASONAL_FIT_CUSTOMERS` customers and
        :data:`SEASONAL_FIT_PIECES` month pieces.
    level_column : str, optional
        The customers' attribute to fit by level.
    min_level_customers : int
        Fewest customers of a level with its own effects (the others take the base).
    level_prior_sd : float
        Standard deviation of the effects' normal prior (log scale).
    level_fit_customers : int
        The fit by level runs on a random sample of at most this many customers (seed 0): a few
        parameters per level need far fewer customers than a large book has. With the season,
        the fit by level runs on the seasonal fit's sample, at most this many of them.
    count : {"purchase_days", "orders"}
        What a purchase is, in every fit and in the indices (:attr:`LifetimeParams.count`).
    value_mean : {"gamma_gamma", "empirical"}
        The population mean value of a purchase: Gamma-Gamma's own, p v / (q − 1) (this function's
        default, the textbook model), or the mean over the repeat buyers of their mean repeat
        purchase value (``LifetimeConfig.value_mean``'s default), by scaling ``v`` (the shapes p
        and q still Gamma-Gamma's, so a mean matched, not a joint fit; :attr:`LifetimeParams.value_scale`;
        guarded: :func:`_empirical_value_scale`). Gamma-Gamma's customers' mean values are inverse
        gamma; where they are not, its mean can be off (8 % high on the synthetic books, whose
        customers' mean values are gamma; BENCHMARKS.md). The repeat buyers' mean estimates the
        population's as far as value is independent of frequency, as Gamma-Gamma assumes. By level,
        the one factor scales every level, whose own p and q are fitted on a sample: the mixture's
        mean is then near the target, not exactly on it. A customer's expected value moves by
        p (c − 1) v / (p x + q − 1): the whole factor c at x = 0 (a new customer), less with each
        repeat purchase.

    Returns
    -------
    LifetimeParams

    Raises
    ------
    ValueError
        If Pareto/NBD or Gamma-Gamma cannot be fitted (e.g. no repeat purchase), naming the cutoff;
        if ``count`` or ``value_mean`` is none of its values.
    """
    if value_mean not in ("gamma_gamma", "empirical"):
        raise ValueError(f"value_mean: rule 'gamma_gamma or empirical': got {value_mean!r}")
    summary = btyd_summary(h, time_unit_days, count=count)
    with_season = seasonal and len(_month_bounds(h)[0]) >= SEASONALITY_MIN_MONTHS
    fit_clock = "seasonal" if with_season and seasonal_fit else "calendar"
    try:
        gamma_gamma = fit_gamma_gamma(summary.frequency, summary.monetary_value)
        if fit_clock == "seasonal":
            # Both fits by the seasonal likelihood's quadrature: first with a flat clock (Pareto/NBD
            # itself, for the indices), then with the clock of those indices.
            whole = seasonal_history(h, count=count)
            sample = _fit_sample_index(whole)
            rows = whole.select(sample)
            pareto = fit_seasonal_pareto_nbd(rows, SeasonalClock(), time_unit_days=time_unit_days)
            clock = SeasonalClock(_seasonality(h, pareto, time_unit_days, count=count))
            pareto = fit_seasonal_pareto_nbd(rows, clock, time_unit_days=time_unit_days, start=pareto)
        else:
            pareto = fit_pareto_nbd(summary.frequency, summary.recency, summary.T)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"cutoff {h.cutoff}: cannot fit the dropout process (Pareto/NBD + Gamma-Gamma): {exc}") from exc
    indices = _seasonality(h, pareto, time_unit_days, count=count) if with_season else np.ones(MONTHS)
    by_level = None
    if level_column is not None:
        by_level = _fit_by_level(
            h, summary, level_column, pareto, gamma_gamma, min_level_customers, level_prior_sd, level_fit_customers,
            season=(rows, sample, clock, time_unit_days) if fit_clock == "seasonal" else None,
        )  # fmt: skip
    value_scale = 1.0
    if value_mean == "empirical":
        value_scale = _empirical_value_scale(summary, gamma_gamma)
        gamma_gamma = _scaled(gamma_gamma, value_scale)
        if by_level is not None:
            by_level = by_level.model_copy(update={
                "gamma_gamma": _scaled(by_level.gamma_gamma, value_scale),
                "gamma_gamma_by_level": tuple(_scaled(g, value_scale) for g in by_level.gamma_gamma_by_level),
            })  # fmt: skip
    return LifetimeParams(
        pareto=pareto, gamma_gamma=gamma_gamma, seasonality=tuple(float(v) for v in indices),
        time_unit_days=float(time_unit_days), by_level=by_level, fit_clock=fit_clock, net_value_share=net_value_share(h),
        count=count, orders_per_first_day=float(h.p_orders[h.first].mean()) if count == "orders" else 1.0,
        value_scale=value_scale,
    )  # fmt: skip


def _empirical_value_scale(summary, gamma_gamma: GammaGammaParams) -> float:
    """The repeat buyers' mean repeat purchase value ÷ Gamma-Gamma's p v / (q − 1), or 1 when that cannot be trusted.

    Over the customers Gamma-Gamma is fitted on (a repeat purchase, a positive mean value), each
    customer's mean value winsorised at the :data:`VALUE_SCALE_WINSOR` quantile so that one
    outlier does not set every new customer's value. 1, with a warning, when Gamma-Gamma has no
    finite mean (q ≤ 1), when fewer than :data:`VALUE_SCALE_MIN_BUYERS` customers qualify, or when
    the scale falls outside :data:`VALUE_SCALE_BOUNDS` (a misfit of the inverse gamma moves the
    mean by a few per cent, 8 % on the synthetic books; far more says something else is wrong).
    """
    if not gamma_gamma.q > 1:
        log.warning("value_mean 'empirical': Gamma-Gamma's q = %.4g <= 1 has no finite mean; its own fit is kept", gamma_gamma.q)
        return 1.0
    m = summary.monetary_value[(summary.frequency > 0) & (summary.monetary_value > 0)]
    if m.size < VALUE_SCALE_MIN_BUYERS:
        log.warning("value_mean 'empirical': %d repeat buyers with a value, fewer than %d; Gamma-Gamma's own mean is kept",
                    m.size, VALUE_SCALE_MIN_BUYERS)  # fmt: skip
        return 1.0
    empirical = float(np.minimum(m, np.quantile(m, VALUE_SCALE_WINSOR)).mean())
    scale = empirical / (gamma_gamma.p * gamma_gamma.v / (gamma_gamma.q - 1.0))
    low, high = VALUE_SCALE_BOUNDS
    if not low <= scale <= high:
        log.warning("value_mean 'empirical': the repeat buyers' mean value %.2f is %.3f times Gamma-Gamma's, outside [%g, %g]; "
                    "Gamma-Gamma's own mean is kept", empirical, scale, low, high)  # fmt: skip
        return 1.0
    log.info("Gamma-Gamma's mean value of a purchase scaled by %.3f to the repeat buyers' mean, %.2f", scale, empirical)
    return scale


def _scaled(gg: GammaGammaParams, factor: float) -> GammaGammaParams:
    """``gg`` with its population mean times ``factor`` (v scales the mean, p and q its shape)."""
    return replace(gg, v=gg.v * factor)


def net_value_share(h: History) -> float:
    """Share of the value bought that was kept after refunds: 1 − Σ refunds ÷ Σ purchases, clipped to [0, 1].

    Over every known customer's history up to the cutoff. The refunds of the last purchases before
    the cutoff may come after it; with refunds days after the purchase (the synthetic books: 6 on
    average) that leaves out a few days of a history of months, a small underestimate of the
    refunds. 1 when there are no purchases of positive value (nothing to scale).
    """
    bought = float(h.p_value.sum())
    if bought <= 0:
        return 1.0
    return float(np.clip(1.0 - float(h.refund_amount.sum()) / bought, 0.0, 1.0))


def level_values(h: History, column: str) -> pd.api.extensions.ExtensionArray | None:
    """``customers[column]`` of each customer of ``h`` as strings (NaN: none), or None without that column."""
    customers = h.tables.customers
    if customers is None or column not in customers.columns or "customer_id" not in customers.columns:
        return None
    pos = lookup(h.ids_arrow, arrow_strings(customers["customer_id"]))
    return customers[column].astype("str").array.take(pos, allow_fill=True)


def _levels(h, column, min_customers):
    """The levels of ``customers[column]`` with at least ``min_customers`` customers, each customer's code and their counts; None with fewer than two."""
    values = level_values(h, column)
    if values is None:
        log.warning("dropout process by customers.%s: no such column (or no customers table with customer_id); one process for every customer",
                    column)  # fmt: skip
        return None
    customers = h.tables.customers
    if pd.api.types.is_numeric_dtype(customers[column]) and not pd.api.types.is_bool_dtype(customers[column]):
        log.warning("dropout process by customers.%s: a numeric column, each value is a level of its own", column)
    counts = pd.Series(values).value_counts()
    levels = tuple(sorted(str(v) for v in counts.index[counts >= min_customers]))
    if len(levels) < 2:
        log.warning("dropout process by customers.%s: fewer than two values with %d customers; one process for every customer",
                    column, min_customers)  # fmt: skip
        return None
    codes = level_codes(values, levels)
    counts_by_level = tuple(int((codes == g).sum()) for g in range(len(levels)))
    log.info("dropout process by customers.%s: %d levels (%s); %d customers of other values take the base", column,
             len(levels), ", ".join(levels), int((codes < 0).sum()))  # fmt: skip
    return levels, codes, counts_by_level


def _level_sample(rows: np.ndarray, max_customers: int, column: str, n: int) -> np.ndarray:
    if rows.size > max_customers:
        rows = np.sort(np.random.default_rng(0).choice(rows, size=max_customers, replace=False))
        log.info("dropout process by customers.%s: fitted on a sample of %d of %d customers", column, max_customers, n)
    return rows


def _fit_by_level(h, summary, column, start, gamma_gamma, min_customers, prior_sd, max_customers, *, season=None) -> LevelEffects | None:
    """The process by level of ``customers[column]``, on a sample of at most ``max_customers``.

    In calendar time (:func:`features.btyd.covariates.fit_pareto_nbd_by_level`), or with ``season``
    = (the seasonal fit's customers as a :class:`SeasonalHistory`, their positions in ``h``, the
    clock, days per time unit) with the season in the likelihood
    (:func:`features.btyd.covariates.fit_seasonal_pareto_nbd_by_level`) on that fit's sample, at
    most ``max_customers`` of it. ``start`` is the fit of one process the levels start from.
    Gamma-Gamma by level does not depend on the clock: it runs on a sample of the whole book.
    """
    found = _levels(h, column, min_customers)
    if found is None:
        return None
    levels, codes, counts_by_level = found
    who = _level_sample(np.arange(codes.size), max_customers, column, codes.size)
    x, m = summary.frequency[who], summary.monetary_value[who]
    try:
        if season is None:
            base, by_pn = fit_pareto_nbd_by_level(x, summary.recency[who], summary.T[who], codes[who], len(levels), start=start, prior_sd=prior_sd)
        else:
            rows, sample, clock, unit = season
            within = _level_sample(np.arange(sample.size), max_customers, column, codes.size)
            base, by_pn = fit_seasonal_pareto_nbd_by_level(
                rows.select(within), clock, codes[sample[within]], len(levels), start=start, prior_sd=prior_sd,
                time_unit_days=unit,
            )  # fmt: skip
        gg_base, by_gg = fit_gamma_gamma_by_level(x, m, codes[who], len(levels), start=gamma_gamma, prior_sd=prior_sd)
    except (ValueError, RuntimeError) as exc:
        log.warning("dropout process by customers.%s not fitted (%s); one process for every customer", column, exc)
        return None
    return LevelEffects(
        column=column, levels=levels, pareto=base, gamma_gamma=gg_base, pareto_by_level=tuple(by_pn),
        gamma_gamma_by_level=tuple(by_gg), customers_by_level=counts_by_level,
    )  # fmt: skip


def _fit_sample_index(rows: SeasonalHistory) -> np.ndarray:
    """Positions (ascending) of a random sample (seed 0) of at most :data:`SEASONAL_FIT_CUSTOMERS` customers and :data:`SEASONAL_FIT_PIECES` month pieces.

    The likelihood costs a month piece per calendar month between a customer's last purchase and
    the cutoff, so a long history of dormant customers costs more per customer.
    """
    n = rows.frequency.size
    pieces = month_pieces(rows)
    if n <= SEASONAL_FIT_CUSTOMERS and pieces.sum() <= SEASONAL_FIT_PIECES:
        return np.arange(n)
    order = np.random.default_rng(0).permutation(n)
    take = min(SEASONAL_FIT_CUSTOMERS, int(np.searchsorted(np.cumsum(pieces[order]), SEASONAL_FIT_PIECES, side="right")))
    keep = np.sort(order[: max(take, 1)])
    log.info("dropout process with the season: fitted on a sample of %d of %d customers (%d month pieces)", keep.size, n, pieces[keep].sum())
    return keep


def seasonal_history(h: History, *, count: str = "purchase_days") -> SeasonalHistory:
    """Each customer's repeat purchase days (or orders: ``count``), first and last purchase day and cutoff day (:mod:`features.btyd.seasonal_pareto`)."""
    check_count(count)
    if count == "orders":
        frequency = h.purchase_count - 1.0
    else:
        frequency = (h.last - h.first).astype(np.float64)
    return SeasonalHistory(
        frequency=frequency,
        first_day=(h.cutoff_day - h.p_ago[h.first]).astype(np.int64),
        last_day=(h.cutoff_day - h.p_ago[h.last]).astype(np.int64),
        cutoff_day=np.full(h.n, h.cutoff_day, dtype=np.int64),
    )


def _month_bounds(h: History) -> tuple[np.ndarray, np.ndarray]:
    """First day and the day after the last of the complete calendar months after the first purchase, up to the cutoff."""
    first = int((h.cutoff_day - h.p_ago[h.first]).min())
    start = np.datetime64(first, "D").astype("datetime64[M]") + 1  # the first month that starts after it
    end = np.datetime64(h.cutoff_day + 1, "D").astype("datetime64[M]")  # months that end on or before the cutoff
    months = np.arange(start, end) if end > start else np.array([], dtype="datetime64[M]")
    return months.astype("datetime64[D]").astype(np.int64), (months + 1).astype("datetime64[D]").astype(np.int64)


def _seasonality(h: History, pareto: ParetoNBDParams, unit: float, *, count: str = "purchase_days") -> np.ndarray:
    """Observed / expected repeat purchase days (or orders: ``count``) per calendar month, mean 1 (module docstring)."""
    check_count(count)
    lo, hi = _month_bounds(h)
    if count == "orders":  # every order but each customer's first
        day, weight = h.cutoff_day - h.p_ago, h.p_orders.astype(float)
        weight[h.first] -= 1.0
    else:
        repeat = np.ones(h.p_key.size, dtype=bool)
        repeat[h.first] = False
        day, weight = h.cutoff_day - h.p_ago[repeat], np.ones(int(repeat.sum()))
    which = np.searchsorted(hi, day, side="right")
    inside = (which < len(lo)) & (day >= lo[np.minimum(which, len(lo) - 1)])
    observed = np.bincount(which[inside], weights=weight[inside], minlength=len(lo)).astype(float)
    # Each acquisition cohort's unconditional expected repeat purchases in the month at index 1.
    cohort_day, cohort_size = np.unique(h.cutoff_day - h.p_ago[h.first], return_counts=True)
    t_lo = np.maximum(lo[None, :] - cohort_day[:, None], 0) / unit
    t_hi = np.maximum(hi[None, :] - cohort_day[:, None], 0) / unit
    r, alpha, s, beta = pareto.r, pareto.alpha, pareto.s, pareto.beta
    expected = cohort_size @ (r / alpha * (time_alive(s, beta, t_hi) - time_alive(s, beta, t_lo)))
    month = lo.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % MONTHS
    obs = np.bincount(month, weights=observed, minlength=MONTHS)
    exp = np.bincount(month, weights=expected, minlength=MONTHS)
    ratio = np.where((obs > 0) & (exp > 0), obs / np.where(exp > 0, exp, 1.0), np.nan)
    ratio = np.where(np.isfinite(ratio), ratio, np.nanmean(ratio))
    return ratio / ratio.mean()


def time_alive(s: float, B, u) -> np.ndarray:
    """∫_0^u (B / (B+v))^s dv = B [1 − (B/(B+u))^(s−1)] / (s − 1): expected time alive in (0, u].

    E[min(lifetime, u)] for an exponential lifetime of rate mu ~ Gamma(s, B) ([2]_, Section 6).
    Written as B (−l) exprel((s−1) l) with l = −log1p(u / B): exact at s = 1 (B log(1 + u/B)) and
    for small u.

    Parameters
    ----------
    s : float
        Gamma shape.
    B : float or ndarray
        Gamma rate, per time unit.
    u : float or ndarray
        Horizon, time units (broadcast against B).

    Returns
    -------
    ndarray
        Time units.
    """
    ell = -np.log1p(np.asarray(u, dtype=float) / B)
    return B * -ell * exprel((s - 1.0) * ell)


@dataclass(frozen=True)
class DropoutState:
    """Each customer's posterior under the dropout process at a cutoff, n customers.

    T is measured to the start of the customer's cutoff day ``now_day`` (the convention of the BTYD
    summary); windows are whole calendar days after it, ``days`` offsets counting from the end of
    the cutoff day (offset 0 = the start of ``now_day + 1``).

    Attributes
    ----------
    p_alive : ndarray, shape (n,)
        P(alive at T | history): Pareto/NBD's, or the seasonal model's (``fit_clock``).
    purchase_shape, purchase_rate : ndarray, shape (n,)
        Gamma posterior of the purchase rate given alive: r + x and alpha + Λ_T (per time unit of
        seasonal time).
    dropout_shape : float
        s.
    dropout_rate : ndarray, shape (n,)
        beta + T: the dropout rate given alive is Gamma(s, beta + T) (calendar time units).
    order_value : ndarray, shape (n,)
        Gamma-Gamma expected value of a purchase (a purchase day, or an order with
        :attr:`LifetimeParams.count` ``"orders"``), currency units.
    value_shape : float
        Gamma-Gamma p: a purchase (day, or order) is worth Gamma(p, nu).
    value_rate_shape, value_rate_rate : ndarray, shape (n,)
        Posterior of nu: Gamma(q + p x, v + x m); the customer's mean purchase-day value is p / nu.
    now_day : ndarray of int, shape (n,)
        Cutoff day of each customer (days since 1970-01-01).
    clock : SeasonalClock
    time_unit_days : float
    net_value_share : float
        :attr:`LifetimeParams.net_value_share`: ``order_value`` is a purchase's value; times
        this, what the book keeps of it after refunds.
    """

    p_alive: np.ndarray
    purchase_shape: np.ndarray
    purchase_rate: np.ndarray
    dropout_shape: float
    dropout_rate: np.ndarray
    order_value: np.ndarray
    value_shape: float
    value_rate_shape: np.ndarray
    value_rate_rate: np.ndarray
    now_day: np.ndarray
    clock: SeasonalClock
    time_unit_days: float
    net_value_share: float = 1.0

    def __len__(self) -> int:
        return self.p_alive.size

    @classmethod
    def from_history(cls, h: History, params: LifetimeParams) -> DropoutState:
        """The state of every customer of ``h`` at its cutoff (each with its level's parameters)."""
        summary = btyd_summary(h, params.time_unit_days, count=params.count)
        first_day = h.cutoff_day - h.p_ago[h.first]
        exposure = params.clock.elapsed(first_day, h.cutoff_day) / params.time_unit_days
        levels = level_values(h, params.by_level.column) if params.by_level is not None else None
        p_alive = None
        if params.fit_clock == "seasonal":
            rows = seasonal_history(h, count=params.count)
            codes, pns, _ = params.customer_params(levels if levels is not None else np.full(h.n, np.nan, dtype=object))
            p_alive = np.empty(h.n)
            for g in np.unique(codes + 1):
                at = codes + 1 == g
                p_alive[at] = seasonal_pareto_nbd_probability_alive(pns[g], rows.select(at), params.clock, time_unit_days=params.time_unit_days)
        return cls._build(
            params, summary.frequency, summary.recency, summary.T, summary.monetary_value, exposure,
            np.full(h.n, h.cutoff_day, dtype=np.int64), levels, p_alive=p_alive,
        )  # fmt: skip

    @classmethod
    def new_customers(cls, params: LifetimeParams, acquired_day, level_values=None) -> DropoutState:
        """Customers whose first purchase is on ``acquired_day`` (days since 1970-01-01), as of that day.

        x = t_x = T = 0: alive for sure, the purchase-rate and dropout priors and the mean value of
        a purchase day of their level (``level_values``, one per customer, of ``params.by_level``'s
        column; default: the base); the first purchase itself is in no window.
        """
        day = np.atleast_1d(np.asarray(acquired_day, dtype=np.int64))
        zero = np.zeros(day.size)
        return cls._build(params, zero, zero, zero, zero, zero, day, level_values)

    @classmethod
    def _build(cls, params: LifetimeParams, x, tx, T, m, exposure, now_day, level_values=None, p_alive=None) -> DropoutState:
        n = x.size
        codes, pns, ggs = params.customer_params(level_values if level_values is not None else np.full(n, np.nan, dtype=object))
        pick = codes + 1
        r, alpha, beta = (np.array([getattr(pn, k) for pn in pns])[pick] for k in ("r", "alpha", "beta"))
        gg_v = np.array([gg.v for gg in ggs])[pick]
        pn0, gg0 = pns[0], ggs[0]  # r, s, p and q are shared by every level
        given = p_alive
        p_alive = np.zeros(n) if given is None else np.asarray(given, dtype=float)
        order_value = np.zeros(n)
        for g in np.unique(pick):
            rows = pick == g
            if given is None:
                p_alive[rows] = pareto_nbd_probability_alive(pns[g], x[rows], tx[rows], T[rows])
            order_value[rows] = gamma_gamma_expected_value(ggs[g], x[rows], m[rows])
        return cls(
            p_alive=p_alive,
            purchase_shape=r + x,
            purchase_rate=alpha + exposure,
            dropout_shape=float(pn0.s),
            dropout_rate=beta + T,
            order_value=order_value,
            value_shape=float(gg0.p),
            value_rate_shape=gg0.q + gg0.p * x,
            value_rate_rate=gg_v + np.where(x > 0, x * m, 0.0),
            now_day=np.asarray(now_day, dtype=np.int64),
            clock=params.clock,
            time_unit_days=float(params.time_unit_days),
            net_value_share=float(params.net_value_share),
        )

    def select(self, rows) -> DropoutState:
        """The state of a subset of customers (a slice, an index or a boolean mask)."""
        return replace(self, **{name: getattr(self, name)[rows] for name in _PER_CUSTOMER})

    # -- given alive at T: windows in whole days after the cutoff day -------------------------------

    def survival(self, days) -> np.ndarray:
        """S = P(alive at the start of day now + 1 + days | alive at T), shape (n, k) for k offsets."""
        u = self._calendar(days)
        return np.exp(-self.dropout_shape * np.log1p(u / self.dropout_rate[:, None]))

    def expected_purchases(self, start_days, end_days) -> np.ndarray:
        """E[purchases in each window | alive at T], shape (n, k): purchase days, or orders (:attr:`LifetimeParams.count`).

        Parameters
        ----------
        start_days, end_days : array-like of int, shape (k,)
            Window bounds in days after the cutoff day (a window holds the days start .. end − 1
            after it); end ≥ start.
        """
        start = np.asarray(start_days, dtype=np.int64)
        end = np.asarray(end_days, dtype=np.int64)
        cum = self._seasonal_time_alive(np.union1d(start, end))
        bounds = np.union1d(start, end)
        i0, i1 = np.searchsorted(bounds, start), np.searchsorted(bounds, end)
        rate = self.purchase_shape / self.purchase_rate
        return rate[:, None] * (cum[:, i1] - cum[:, i0])

    def purchase_probability(self, start_days, end_days, *, exposure_scale=1.0) -> np.ndarray:
        """P(at least one purchase day in each window | alive at T), shape (n, k) (module docstring).

        ``exposure_scale`` (> 0, scalar or shape (n,)) multiplies the seasonal length of every window:
        the probability for a window of the same days in a busier (> 1) or quieter season.
        """
        start = np.asarray(start_days, dtype=np.int64)
        end = np.asarray(end_days, dtype=np.int64)
        out = np.zeros((len(self), start.size))
        nodes, weights = np.polynomial.legendre.leggauss(_GL_NODES)
        for day, rows in self._groups():
            # Seasonal and calendar positions of the window bounds, from T (the start of the cutoff day).
            knots_cal, knots_sea = self._clock_knots(day, int(max(end.max(initial=0), 1)))
            a_cal = (start + 1) / self.time_unit_days
            a_sea = np.interp(a_cal, knots_cal, knots_sea)
            b_sea = np.interp((end + 1) / self.time_unit_days, knots_cal, knots_sea)
            R = self.purchase_shape[rows][:, None, None]
            A = self.purchase_rate[rows][:, None, None]
            Bp = self.dropout_rate[rows][:, None, None] + a_cal[None, :, None]
            scale = np.broadcast_to(np.asarray(exposure_scale, dtype=float), (len(self),))[rows]
            width = np.maximum(b_sea - a_sea, 0.0)[None, :, None] * scale[:, None, None]
            l_max = np.minimum(R * np.log1p(width / A), _L_CUT)
            ell = l_max * (nodes + 1.0) / 2.0
            v = A * np.expm1(ell / R)  # seasonal time after the window's start (scaled)
            t = np.interp(a_sea[None, :, None] + v / scale[:, None, None], knots_sea, knots_cal) - a_cal[None, :, None]
            integrand = np.exp(-ell - self.dropout_shape * np.log1p(t / Bp))
            inner = (integrand * weights).sum(axis=-1) * l_max[..., 0] / 2.0
            survive = np.exp(-self.dropout_shape * np.log1p(a_cal[None, :] / self.dropout_rate[rows][:, None]))
            out[rows] = survive * inner
        return np.clip(out, 0.0, 1.0)

    def expected_lifetime_days(self, cap_days: float) -> np.ndarray:
        """E[min(remaining lifetime, cap) | alive at T], in days from the end of the cutoff day.

        ∫ S(u) du over (T + 1 day, T + 1 day + cap] (:func:`time_alive`); increasing in the cap and
        at most ``cap_days``.

        Returns
        -------
        ndarray, shape (n,)
        """
        one = 1.0 / self.time_unit_days
        B = self.dropout_rate
        u = time_alive(self.dropout_shape, B, one + cap_days / self.time_unit_days) - time_alive(self.dropout_shape, B, one)
        return np.minimum(u * self.time_unit_days, cap_days)

    def seasonal_width(self, start_days, end_days) -> np.ndarray:
        """Seasonal length of each window in time units (its calendar length when there is no seasonality), shape (n, k)."""
        start = self.now_day[:, None] + 1 + np.asarray(start_days, dtype=np.int64)[None, :]
        end = self.now_day[:, None] + 1 + np.asarray(end_days, dtype=np.int64)[None, :]
        return self.clock.elapsed(start, end) / self.time_unit_days

    # -- internals -----------------------------------------------------------------------------------

    def _calendar(self, days) -> np.ndarray:
        """Calendar time (units) from T to the start of day now + 1 + days, shape (1, k)."""
        return ((np.asarray(days, dtype=float) + 1.0) / self.time_unit_days)[None, :]

    def _groups(self):
        """(cutoff day, row mask) for each distinct cutoff day; usually a single group."""
        days = np.unique(self.now_day)
        if days.size == 1:
            yield int(days[0]), slice(None)
            return
        for day in days:
            yield int(day), self.now_day == day

    def _clock_knots(self, day: int, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
        """Calendar and seasonal time (units) from T at every month start up to ``horizon_days`` + 2 days."""
        last = day + horizon_days + 2
        months = np.arange(np.datetime64(day, "D").astype("datetime64[M]") + 1, np.datetime64(last, "D").astype("datetime64[M]") + 1)
        knots = np.unique(np.r_[day, months.astype("datetime64[D]").astype(np.int64), last])
        knots = knots[(knots >= day) & (knots <= last)]
        return (knots - day) / self.time_unit_days, self.clock.elapsed(day, knots) / self.time_unit_days

    def _seasonal_time_alive(self, days: np.ndarray) -> np.ndarray:
        """∫_0^t s(u) S(u) du from T to the start of day now + 1 + days (time units), shape (n, len(days))."""
        out = np.zeros((len(self), days.size))
        s = self.dropout_shape
        for day, rows in self._groups():
            knots_cal, _ = self._clock_knots(day, int(days.max(initial=0)))
            ends = (days + 1) / self.time_unit_days
            points = np.union1d(knots_cal, ends)
            B = self.dropout_rate[rows][:, None]
            alive_time = time_alive(s, B, points[None, :])
            # Seasonal index of each segment between consecutive points: the month of its start day.
            seg_day = day + np.rint(points[:-1] * self.time_unit_days).astype(np.int64)
            index = self.clock.indices[seg_day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % MONTHS]
            cum = np.concatenate([np.zeros((alive_time.shape[0], 1)), np.cumsum(np.diff(alive_time, axis=1) * index, axis=1)], axis=1)
            out[rows] = cum[:, np.searchsorted(points, ends)]
        return out


_PER_CUSTOMER = (
    "p_alive", "purchase_shape", "purchase_rate", "dropout_rate", "order_value",
    "value_rate_shape", "value_rate_rate", "now_day",
)  # fmt: skip
