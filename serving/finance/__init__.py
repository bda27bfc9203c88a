"""Finance outputs of a scored customer base: CLV and CAC by channel and cohort, forecast, segments, report.

One module per responsibility:

- :mod:`.budget`: :func:`compute_budget` (scores + raw tables → :class:`BudgetResult`), its
  :class:`BudgetSettings`, and the checks of the scores it relies on;
- :mod:`.inputs`: what the budget reads of the raw tables (:func:`budget_inputs`), per customer and
  in aggregates that add up over parts of the book (a cluster's partitions);
- :mod:`.ltv`: realised margin, value curves, LTV:CAC, payback per channel and cohort (and the
  definitions of those terms);
- :mod:`.forecast`: the revenue forecast (BG/NBD decay, seasonality) and its expected values;
- :mod:`.simulate`: the simulation behind every 80 % interval;
- :mod:`.acquisition`: the new-customer CLV per channel and the acquisition budget the service answers;
- :mod:`.outputs`: writing the CSV files and the report; :mod:`.report` and ``templates/``: the
  HTML page (jinja2) and its charts (matplotlib).

The computation is re-exported here. The writers are not: importing them loads jinja2 and
matplotlib, which the service (it imports :func:`acquisition_budget`) does not need; import them from
:mod:`serving.finance.outputs`.
"""

from serving.finance.acquisition import UNKNOWN_CHANNEL, acquisition_budget, new_customer_clv
from serving.finance.budget import SEGMENT_COLUMNS, BudgetResult, BudgetSettings, compute_budget
from serving.finance.forecast import (
    ForecastShape,
    expected_forecast,
    forecast_calendar,
    horizon_ratios,
    seasonality_indices,
    survival_given_alive,
)
from serving.finance.inputs import BudgetInputs, budget_inputs
from serving.finance.simulate import simulate

__all__ = [
    "SEGMENT_COLUMNS",
    "UNKNOWN_CHANNEL",
    "BudgetInputs",
    "BudgetResult",
    "BudgetSettings",
    "ForecastShape",
    "acquisition_budget",
    "budget_inputs",
    "compute_budget",
    "expected_forecast",
    "forecast_calendar",
    "horizon_ratios",
    "new_customer_clv",
    "seasonality_indices",
    "simulate",
    "survival_given_alive",
]
