"""CLV and CAC arithmetic: small pure, vectorised functions with the formulas of the design.

Notation (design, "Models and the CLV arithmetic"):

- ``p``: churn probability, P(no purchase in the next H days);
- ``s``: spend over H days if the customer is active (buys in the window);
- ``m``: gross margin (share of spend kept), ``c``: cost to serve per active customer per horizon;
- ``H``: horizon in days, ``d``: annual discount rate, ``K``: number of horizons in a lifetime (cap);
- ``δ = (1 + d)^(H/365) − 1``: discount rate per horizon (:func:`training.curve.discount_per_horizon`);
- the spend curve: expected spend and margin in each horizon k = 1..K, from :mod:`training.curve`
  (the scores' ``expected_spend_curve`` and ``expected_margin_curve``), of which lifetime CLV is
  the discounted sum.

Every function takes scalars or array-likes (numpy arrays, pandas Series) and broadcasts; none keeps
state. The parameters have no defaults here: they are the CLV configuration
(:class:`training.config.ClvConfig`), which callers pass explicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.curve import discount_per_horizon

#: Days in an average calendar month (365.25 / 12); months in this module are of this length.
MONTH_DAYS = 365.25 / 12
def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def months_per_horizon(horizon_days: float) -> float:
    """Length of a horizon in months of ``MONTH_DAYS`` days: H / 30.4375 (182 days = 5.98 months)."""
    return horizon_days / MONTH_DAYS


def expected_spend(churn_probability, spend_if_active) -> np.ndarray:
    """Expected spend over the horizon, (1 − p) · s.

    Parameters
    ----------
    churn_probability : array-like
        p, in [0, 1].
    spend_if_active : array-like
        s, spend over H days given a purchase in them, currency units.

    Returns
    -------
    ndarray
        (1 − p) · s, currency units.
    """
    return (1.0 - _arr(churn_probability)) * _arr(spend_if_active)


def horizon_clv(
    churn_probability, spend_if_active, *, margin: float, cost_to_serve: float
) -> np.ndarray:
    """CLV over the next horizon, CLV_H = (1 − p) · (m · s − c).

    Undiscounted: the horizon is the unit the models predict.

    Parameters
    ----------
    churn_probability : array-like
        p, in [0, 1].
    spend_if_active : array-like
        s, currency units.
    margin : float
        m, gross margin share.
    cost_to_serve : float
        c, per active customer per horizon, currency units.

    Returns
    -------
    ndarray
        CLV_H, currency units. p = 0.2, s = 100, m = 0.3, c = 5 gives 0.8 · 25 = 20.
    """
    return (1.0 - _arr(churn_probability)) * (margin * _arr(spend_if_active) - cost_to_serve)


def lifetime_clv(expected_margin_curve, *, horizon_days: float, annual_discount_rate: float) -> np.ndarray:
    """Lifetime CLV: the discounted expected margin of the spend curve, Σ_{k=1..K} margin_k / (1 + δ)^k.

    The design's formula, with margin_k = m · E[spend in horizon k] − c · P(a purchase in horizon k)
    from the spend curve of :mod:`training.curve` (the scores' ``expected_margin_curve``) and
    δ = (1 + d)^(H/365) − 1. Not r^k with r = 1 − p: P(no purchase in H) is not the probability of
    having left.

    Parameters
    ----------
    expected_margin_curve : array-like, shape (..., K)
        Expected margin in each horizon k = 1..K, undiscounted, currency units.
    horizon_days : float
        H, days of each horizon.
    annual_discount_rate : float
        d.

    Returns
    -------
    ndarray, shape (...)
        Currency units, discounted to the scoring date. Margins 30 and 20 at d = 0 give 50; at
        H = 365, d = 0.1: 30 / 1.1 + 20 / 1.21 = 43.80.
    """
    return cumulative_margin(expected_margin_curve, horizon_days=horizon_days, annual_discount_rate=annual_discount_rate)[..., -1]


def cumulative_margin(expected_margin_curve, *, horizon_days: float, annual_discount_rate: float) -> np.ndarray:
    """Cumulative discounted expected margin at the end of each horizon: C_k = Σ_{j ≤ k} margin_j / (1 + δ)^j.

    Parameters
    ----------
    expected_margin_curve : array-like, shape (..., K)
        As :func:`lifetime_clv`.
    horizon_days, annual_discount_rate : float
        H and d.

    Returns
    -------
    ndarray, shape (..., K)
        C_K is :func:`lifetime_clv`.

    Raises
    ------
    ValueError
        On a curve without horizons.
    """
    margins = _arr(expected_margin_curve)
    if margins.ndim == 0 or margins.shape[-1] < 1:
        raise ValueError("expected_margin_curve: rule 'one value per horizon, at least one horizon'")
    delta = discount_per_horizon(horizon_days, annual_discount_rate)
    discount = (1.0 + delta) ** -np.arange(1, margins.shape[-1] + 1, dtype=float)
    return np.cumsum(margins * discount, axis=-1)


def curve_matrix(column) -> np.ndarray:
    """A curve column of the scores (one array of K values per customer) as an (n, K) matrix."""
    values = list(column)
    if not values:
        return np.zeros((0, 0))
    return np.vstack([_arr(v) for v in values])


def ltv_cac_ratio(mean_clv, mean_cac) -> np.ndarray:
    """LTV:CAC = mean CLV / mean CAC.

    Returns
    -------
    ndarray
        The ratio; +inf for a CAC of 0 with positive CLV, NaN when the CAC is unknown (NaN) or both
        are 0. CLV 900 and CAC 300 give 3.
    """
    v, c = _arr(mean_clv), _arr(mean_cac)
    with np.errstate(divide="ignore", invalid="ignore"):
        return v / c


def max_allowable_cac(mean_clv, *, target_ratio: float) -> np.ndarray:
    """Maximum allowable CAC = mean CLV / target ratio, floored at 0.

    A negative CLV justifies no acquisition spend, hence the floor. CLV 900 at target 3 gives 300.
    """
    if not target_ratio > 0:
        raise ValueError(f"target_ratio must be > 0, got {target_ratio}")
    return np.maximum(_arr(mean_clv) / target_ratio, 0.0)


def recommendation(ratio, *, target_ratio: float, cut_below: float = 1.0) -> np.ndarray:
    """Budget recommendation from LTV:CAC.

    ``grow`` if ratio ≥ target (each unit of CAC returns at least the target), ``cut`` if
    ratio < ``cut_below`` (default 1: the customer does not even repay the CAC), ``hold`` in between,
    ``unknown`` when the ratio is NaN (no CAC recorded).

    Returns
    -------
    ndarray of str
    """
    x = _arr(ratio)
    out = np.where(x >= target_ratio, "grow", np.where(x < cut_below, "cut", "hold")).astype(object)
    out[np.isnan(x)] = "unknown"
    return out


def payback_months(cumulative, cac, *, step_months: float = 1.0) -> np.ndarray:
    """Months until the cumulative expected margin first reaches the CAC.

    ``cumulative`` holds the cumulative margin at the end of equal steps of ``step_months`` months,
    starting from 0 at time 0; within a step the margin accrues evenly, so the curve is piecewise
    linear and the crossing time is exact for it. For a per-horizon stream use
    :func:`cumulative_margin` with ``step_months = months_per_horizon(H)``: horizon k's expected
    margin (m · s − c) · r^k / (1 + δ)^k is spread evenly over its months.

    Parameters
    ----------
    cumulative : array-like, shape (..., n_steps)
        Cumulative margin at the end of each step.
    cac : array-like, broadcastable to ``cumulative.shape[:-1]``
        Acquisition cost to recover.
    step_months : float
        Length of a step in months.

    Returns
    -------
    ndarray
        Months; 0 for a CAC ≤ 0, +inf when the curve never reaches the CAC within its steps (the
        lifetime cap), NaN for an unknown (NaN) CAC. A flat 10 per month against a CAC of 25 gives
        2.5.
    """
    cum = _arr(cumulative)
    cac = np.broadcast_to(_arr(cac), cum.shape[:-1]).astype(float)
    padded = np.concatenate([np.zeros(cum.shape[:-1] + (1,)), cum], axis=-1)
    reached = padded[..., 1:] >= cac[..., None]
    first = np.argmax(reached, axis=-1)  # index of the first step whose end reaches the CAC
    any_reached = reached.any(axis=-1)
    before = np.take_along_axis(padded, first[..., None], axis=-1)[..., 0]
    after = np.take_along_axis(padded, first[..., None] + 1, axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        # The curve may start above 0 only through a step's own gain; a CAC below the previous
        # value cannot happen here because `first` is the first step that reaches it.
        fraction = np.clip((cac - before) / (after - before), 0.0, 1.0)
    months = (first + fraction) * step_months
    months = np.where(any_reached, months, np.inf)
    months = np.where(cac <= 0, 0.0, months)
    return np.where(np.isnan(cac), np.nan, months)


def referral_credit(
    referred_by: pd.Series,
    clv: pd.Series,
    *,
    referral_share: float,
    referral_bonus: float,
) -> pd.Series:
    """Referral value credited to each referrer.

    credit(referrer) = Σ_{referred customers i} (share · CLV_i − bonus).

    Parameters
    ----------
    referred_by : Series
        Indexed by the referred customer's ``customer_id``; value: the referrer's ``customer_id``,
        missing for customers nobody referred.
    clv : Series
        CLV indexed by ``customer_id``; referred customers missing from it count with CLV 0 (they
        still cost the bonus).
    referral_share : float
        Share of the referred customer's CLV credited to the referrer.
    referral_bonus : float
        Bonus paid per referral, currency units.

    Returns
    -------
    Series
        ``referral_credit`` indexed by referrer ``customer_id``. Two referrals with CLVs 100 and 300,
        share 0.1, bonus 5: 0.1 · 400 − 2 · 5 = 30.
    """
    referred = referred_by.dropna()
    value = clv.reindex(referred.index).fillna(0.0).to_numpy(dtype=float)
    per_referral = pd.Series(referral_share * value - referral_bonus, index=referred.index)
    credit = per_referral.groupby(referred.to_numpy(), sort=True).sum()
    credit.index.name = "customer_id"
    return credit.rename("referral_credit")

