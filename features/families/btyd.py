"""BTYD quantities as features: expected purchase days, P(alive), P(no purchase), Gamma-Gamma value.

The repeat-purchase model is BG/NBD, or Pareto/NBD with ``FeatureConfig.btyd_model="pareto"``.

The population parameters (:class:`~features.btyd.BTYDParams`) are fitted on the history up to the
cutoff by :func:`fit`, or passed in (serving passes the parameters stored at training time).
"""

from __future__ import annotations

import numpy as np

from features.btyd import (
    BTYDParams,
    bgnbd_expected_purchases,
    bgnbd_probability_alive,
    bgnbd_probability_no_purchase,
    btyd_summary,
    fit_btyd_params,
    gamma_gamma_expected_value,
    pareto_nbd_expected_purchases,
    pareto_nbd_probability_alive,
    pareto_nbd_probability_no_purchase,
)
from features.config import FeatureConfig
from features.history import History
from features.spec import FeatureSpec

NAME = "btyd"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """BG/NBD (or Pareto/NBD) and Gamma-Gamma predictions, with population parameters fitted up to the cutoff.

    Every column promises a finite number for every customer (no ``allow_nan``): a BTYD quantity
    is defined for any history, so NaN here is a numerical failure, which :func:`assemble` refuses.
    """
    f = NAME
    h = config.btyd_horizon_days
    m = "Pareto/NBD" if config.btyd_model == "pareto" else "BG/NBD"
    return (
        FeatureSpec("btyd_expected_purchases", "float64", f"{m} expected purchase days in the {h} days after the cutoff", f),
        FeatureSpec("btyd_p_alive", "float64", f"{m} probability that the customer is still active at the cutoff (0..1)", f),
        FeatureSpec("btyd_p_no_purchase", "float64", f"{m} probability of no purchase in the {h} days after the cutoff (0..1): its churn probability", f),
        FeatureSpec("btyd_expected_order_value", "float64", "Gamma-Gamma expected value of a purchase day, refunds excluded (currency units)", f),
        FeatureSpec("btyd_expected_spend", "float64", f"btyd_expected_purchases * btyd_expected_order_value: expected spend in the {h} days after the cutoff (currency units)", f),
        FeatureSpec("btyd_spend_if_active", "float64", f"BTYD expected spend in the {h} days after the cutoff given at least one purchase in them: btyd_expected_order_value * E[purchase days | at least one, alive], never below one order (currency units)", f),
    )  # fmt: skip


def fit(h: History, config: FeatureConfig) -> BTYDParams:
    """BG/NBD + Gamma-Gamma (and Pareto/NBD for ``btyd_model="pareto"``) fitted on the customers of ``h``.

    In ``config.btyd_time_unit_days`` units.

    Raises
    ------
    ValueError
        If the models cannot be fitted (e.g. no repeat buyer), naming the cutoff.
    """
    try:
        return fit_btyd_params(btyd_summary(h, config.btyd_time_unit_days), pareto=config.btyd_model == "pareto")
    except ValueError as exc:
        raise ValueError(f"cutoff {h.cutoff}: {exc}") from exc


def columns(h: History, config: FeatureConfig, params: BTYDParams) -> dict:
    """Columns of :func:`schema`, aligned with ``h.ids``, from the population parameters ``params``.

    Raises
    ------
    ValueError
        If ``params`` were fitted in another time unit than the config's.
    """
    unit = float(config.btyd_time_unit_days)
    if float(params.time_unit_days) != unit:
        raise ValueError(
            f"btyd: rule 'time_unit_days equals config.btyd_time_unit_days': params use "
            f"{params.time_unit_days} days, the config {unit}"
        )
    s = btyd_summary(h, unit)
    x, t_x, T = s.frequency, s.recency, s.T
    horizon = config.btyd_horizon_days / unit
    order_value = gamma_gamma_expected_value(params.gamma_gamma, x, s.monetary_value)
    if config.btyd_model == "pareto":
        if params.pareto is None:
            raise ValueError("btyd: rule 'Pareto/NBD parameters with btyd_model=\"pareto\"': the parameters hold BG/NBD only")
        pn = params.pareto
        purchases = pareto_nbd_expected_purchases(pn, horizon, x, t_x, T)
        p_alive = pareto_nbd_probability_alive(pn, x, t_x, T)
        p_no_purchase = pareto_nbd_probability_no_purchase(pn, horizon, x, t_x, T)
        if_active = pareto_purchases_if_active(pn, horizon, x, t_x, T, purchases, p_no_purchase)
    else:
        purchases = bgnbd_expected_purchases(params.bgnbd, horizon, x, t_x, T)
        p_alive = bgnbd_probability_alive(params.bgnbd, x, t_x, T)
        p_no_purchase = bgnbd_probability_no_purchase(params.bgnbd, horizon, x, t_x, T)
        if_active = purchases_if_active(params.bgnbd, horizon, x, T)
    return {
        "btyd_expected_purchases": purchases,
        "btyd_p_alive": p_alive,
        "btyd_p_no_purchase": p_no_purchase,
        "btyd_expected_order_value": order_value,
        "btyd_expected_spend": purchases * order_value,
        "btyd_spend_if_active": order_value * if_active,
    }


def pareto_purchases_if_active(params, t: float, x, t_x, T, purchases, p_no_purchase) -> np.ndarray:
    """Pareto/NBD expected purchase days in (T, T + t] given at least one: E[X | X >= 1], at least 1.

    As :func:`purchases_if_active`, P(alive) cancels from E[X] / P(X >= 1). A customer whose last
    purchase is at T is alive for sure under Pareto/NBD, and given alive the forecast depends on x
    and T only, so for x > 0 both are evaluated at t_x = T (no P(alive) to underflow). For x = 0
    the ratio of ``purchases`` and 1 - ``p_no_purchase`` is used as it is (a one-time buyer's
    P(alive) is not small enough to underflow).

    Parameters
    ----------
    params : ParetoNBDParams
    t : float
        Horizon in the time unit of ``params``.
    x, t_x, T : ndarray, shape (n,)
    purchases, p_no_purchase : ndarray, shape (n,)
        E[X] and P(X = 0) over the horizon, at the customers' own t_x.

    Returns
    -------
    ndarray, shape (n,)
    """
    last = np.where(x > 0, T, t_x)
    given_alive = pareto_nbd_expected_purchases(params, t, x, last, T)
    buys_if_alive = 1.0 - pareto_nbd_probability_no_purchase(params, t, x, last, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(x > 0, given_alive / buys_if_alive, purchases / (1.0 - p_no_purchase))
    return np.where(np.isfinite(ratio), np.maximum(ratio, 1.0), 1.0)


def purchases_if_active(params, t: float, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """BG/NBD expected purchase days in (T, T + t] given at least one: E[X | X >= 1, alive].

    E[X | X >= 1] = E[X] / P(X >= 1); both carry the factor P(alive) (eq. 10 of Fader, Hardie and Lee
    2005 and :func:`features.btyd.bgnbd_probability_no_purchase`), which cancels. Computed as the
    ratio of the two with P(alive) removed, so a customer whose P(alive) is 1e-12 (a weekly buyer
    silent for six months) keeps the spend of an active customer rather than E[X] / max(1 - p, eps),
    which collapsed to cents. Given alive, BG/NBD's forecast depends on x and T only: evaluating the
    expected purchases at t_x = T gives E[X | alive] times P(alive | x, T, T), a P(alive) that cannot
    underflow, and dividing by it leaves E[X | alive]. P(X >= 1 | alive) = 1 - ((alpha+T)/(alpha+T+t))^(r+x)
    (the gamma posterior of the purchase rate given alive).

    Parameters
    ----------
    params : BGNBDParams
    t : float
        Horizon length in the time unit of ``params`` (> 0).
    x, T : ndarray, shape (n,)
        Repeat purchase days and age (T) per customer.

    Returns
    -------
    ndarray, shape (n,)
        Purchase days, at least 1: a window with a purchase holds one or more.
    """
    last = np.where(x > 0, T, 0.0)  # t_x = T; a customer without repeat purchases keeps t_x = 0 (and P(alive) = 1)
    given_alive = bgnbd_expected_purchases(params, t, x, last, T) / bgnbd_probability_alive(params, x, last, T)
    r, alpha = params.r, params.alpha
    buys_if_alive = -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = given_alive / buys_if_alive
    # Roundoff can leave the ratio a hair under 1 for a customer almost sure to buy once.
    return np.where(np.isfinite(ratio), np.maximum(ratio, 1.0), 1.0)
