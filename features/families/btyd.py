"""BTYD quantities as features: BG/NBD expected purchase days, P(alive), P(no purchase), Gamma-Gamma value.

The population parameters (:class:`~features.btyd.BTYDParams`) are fitted on the history up to the
cutoff by :func:`fit`, or passed in (serving passes the parameters stored at training time).
"""

from __future__ import annotations

from features.btyd import (
    BTYDParams,
    bgnbd_expected_purchases,
    bgnbd_probability_alive,
    bgnbd_probability_no_purchase,
    btyd_summary,
    fit_btyd_params,
    gamma_gamma_expected_value,
)
from features.config import FeatureConfig
from features.history import History
from features.spec import FeatureSpec

NAME = "btyd"


def schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """BG/NBD and Gamma-Gamma predictions, with population parameters fitted up to the cutoff.

    Every column promises a finite number for every customer (no ``allow_nan``): a BTYD quantity
    is defined for any history, so NaN here is a numerical failure, which :func:`assemble` refuses.
    """
    f = NAME
    h = config.btyd_horizon_days
    return (
        FeatureSpec("btyd_expected_purchases", "float64", f"BG/NBD expected purchase days in the {h} days after the cutoff", f),
        FeatureSpec("btyd_p_alive", "float64", "BG/NBD probability that the customer is still active at the cutoff (0..1)", f),
        FeatureSpec("btyd_p_no_purchase", "float64", f"BG/NBD probability of no purchase in the {h} days after the cutoff (0..1): its churn probability", f),
        FeatureSpec("btyd_expected_order_value", "float64", "Gamma-Gamma expected value of a purchase day, refunds excluded (currency units)", f),
        FeatureSpec("btyd_expected_spend", "float64", f"btyd_expected_purchases * btyd_expected_order_value: expected spend in the {h} days after the cutoff (currency units)", f),
    )  # fmt: skip


def fit(h: History, config: FeatureConfig) -> BTYDParams:
    """BG/NBD + Gamma-Gamma fitted on the customers of ``h`` in ``config.btyd_time_unit_days`` units.

    Raises
    ------
    ValueError
        If the models cannot be fitted (e.g. no repeat buyer), naming the cutoff.
    """
    try:
        return fit_btyd_params(btyd_summary(h, config.btyd_time_unit_days))
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
    purchases = bgnbd_expected_purchases(params.bgnbd, horizon, x, t_x, T)
    order_value = gamma_gamma_expected_value(params.gamma_gamma, x, s.monetary_value)
    return {
        "btyd_expected_purchases": purchases,
        "btyd_p_alive": bgnbd_probability_alive(params.bgnbd, x, t_x, T),
        "btyd_p_no_purchase": bgnbd_probability_no_purchase(params.bgnbd, horizon, x, t_x, T),
        "btyd_expected_order_value": order_value,
        "btyd_expected_spend": purchases * order_value,
    }
