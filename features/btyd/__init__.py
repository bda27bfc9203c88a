"""BTYD ("buy till you die") models: one module per model, the public names re-exported here.

- :mod:`.summary`: the per-customer BTYD summary (x, t_x, T, monetary value);
- :mod:`.bgnbd`: BG/NBD (Fader, Hardie and Lee 2005);
- :mod:`.pareto_nbd`: Pareto/NBD (Schmittlein, Morrison and Colombo 1987; Fader and Hardie 2005);
- :mod:`.gamma_gamma`: Gamma-Gamma spend per purchase (Fader, Hardie and Lee 2005; Fader and Hardie 2013);
- :mod:`.params`: the population parameters fitted at one cutoff, stored with a champion.

Conventions
-----------
Inputs follow the BTYD summary, all times in one *time unit* (``time_unit_days`` days, weeks by
default):

- ``frequency`` x: number of repeat purchase days (distinct purchase days minus one);
- ``recency`` t_x: time from the first to the last purchase day (0 when x = 0). Note that this is the
  BTYD quantity, not the project's ``recency_days`` (last purchase to cutoff);
- ``T``: time from the first purchase day to the cutoff day;
- ``monetary_value``: mean value of the repeat purchase days (the first purchase day excluded).
"""

from features.btyd.bgnbd import (
    BGNBDParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    bgnbd_probability_no_purchase,
    fit_bgnbd,
)
from features.btyd.gamma_gamma import (
    GammaGammaParams,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
    gamma_gamma_log_likelihood,
)
from features.btyd.params import BTYDParams, fit_btyd_params
from features.btyd.pareto_nbd import (
    ParetoNBDParams,
    fit_pareto_nbd,
    pareto_nbd_dert,
    pareto_nbd_expected_purchases,
    pareto_nbd_expected_purchases_curve,
    pareto_nbd_expected_purchases_new,
    pareto_nbd_log_likelihood,
    pareto_nbd_probability_alive,
    pareto_nbd_probability_no_purchase,
)
from features.btyd.summary import BTYDSummary, btyd_summary, summary_from_transactions

__all__ = [
    "BGNBDParams",
    "BTYDParams",
    "BTYDSummary",
    "btyd_summary",
    "fit_btyd_params",
    "GammaGammaParams",
    "ParetoNBDParams",
    "bgnbd_expected_purchases",
    "bgnbd_expected_purchases_new",
    "bgnbd_log_likelihood",
    "bgnbd_probability_alive",
    "bgnbd_probability_no_purchase",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_pareto_nbd",
    "gamma_gamma_expected_value",
    "gamma_gamma_log_likelihood",
    "pareto_nbd_dert",
    "pareto_nbd_expected_purchases",
    "pareto_nbd_expected_purchases_curve",
    "pareto_nbd_expected_purchases_new",
    "pareto_nbd_log_likelihood",
    "pareto_nbd_probability_alive",
    "pareto_nbd_probability_no_purchase",
    "summary_from_transactions",
]
