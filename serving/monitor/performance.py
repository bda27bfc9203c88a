"""Realised performance: each past scoring whose horizon has elapsed, against what its customers then did.

This is the production backtest. A scoring as of D with horizon H has matured once the data
reach D + H; its customers' realised spend and churn over (D, D + H] come from
:func:`training.labels.build_labels` (read per customer by :mod:`serving.monitor.inputs`), the
same definition the models were trained on, and the metrics from :mod:`training.metrics`, the same
as the training holdout's, so the two read alike.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training import metrics as M
from training.config import MonitorConfig
from serving.monitor.trends import ratio_difference_test

__all__ = [
    "PERFORMANCE_COLUMNS",
    "calibration",
    "SEGMENT_BIAS_COLUMNS",
    "is_matured",
    "performance_metrics",
    "realised_outcomes",
    "segment_bias",
    "segment_performance",
]

#: Metrics of :func:`performance_metrics`, in order.
PERFORMANCE_COLUMNS = (
    "customers", "mae", "gini", "churn_auc", "mean_churn_probability", "churn_rate", "total_predicted", "total_actual",
    "bias",
)  # fmt: skip
#: Columns of :func:`segment_bias`.
SEGMENT_BIAS_COLUMNS = (
    "segment_column", "segment", "customers", "realised_share", "rest_realised_share", "difference", "z", "alerts",
)  # fmt: skip


def is_matured(as_of: dt.date, horizon_days: int, data_end: dt.date) -> bool:
    """Whether the horizon (as_of, as_of + H] of a scoring lies within data that end on ``data_end``."""
    return as_of + dt.timedelta(days=int(horizon_days)) <= data_end


def realised_outcomes(outcomes: pd.DataFrame, *, customers) -> pd.DataFrame:
    """What the scored customers did over the scoring's horizon.

    Parameters
    ----------
    outcomes : DataFrame
        The realised outcomes of the scoring's date and horizon, indexed by ``customer_id``:
        ``actual_spend`` and ``churned`` (:attr:`serving.monitor.inputs.MonitorInputs.outcomes`,
        from :func:`training.labels.build_labels` with the models' churn definition).
    customers : array-like of str, shape (n,)
        The scored customers.

    Returns
    -------
    DataFrame
        Indexed by ``customer_id`` in the order of ``customers``: ``actual_spend`` (net spend in the
        window, currency units) and ``churned`` (0/1); NaN for a scored customer the labels do not
        know (no purchase by ``as_of``).
    """
    index = pd.Index(pd.array(np.asarray(customers, dtype=object), dtype="str"), name="customer_id")
    out = outcomes.reindex(index)
    return pd.DataFrame(
        {"actual_spend": out["actual_spend"].astype(float), "churned": out["churned"].astype(float)}, index=index
    )


def performance_metrics(expected_spend, actual_spend, churn_probability, churned) -> dict[str, float]:
    """Predicted vs realised for one group of customers.

    Parameters
    ----------
    expected_spend, actual_spend : array-like of float, shape (n,)
        Predicted and realised spend over the horizon, currency units.
    churn_probability : array-like of float, shape (n,)
        Predicted P(no purchase in the horizon).
    churned : array-like of {0, 1}, shape (n,)

    Returns
    -------
    dict
        :data:`PERFORMANCE_COLUMNS`: ``mae`` (:func:`training.metrics.mae`), ``gini``
        (normalized, :func:`training.metrics.normalized_gini`), ``churn_auc``, the mean predicted
        churn probability and the realised churn rate (their gap is the calibration in the large),
        the totals and ``bias`` = (Σ predicted − Σ actual) / |Σ actual|. NaN where undefined (no
        customer, one churn class, no actual spend).
    """
    pred = np.asarray(expected_spend, dtype=float)
    n = len(pred)
    if n == 0:
        return {name: (0 if name == "customers" else np.nan) for name in PERFORMANCE_COLUMNS}
    actual = np.asarray(actual_spend, dtype=float)
    p = np.asarray(churn_probability, dtype=float)
    y = np.asarray(churned, dtype=float)
    total_predicted, total_actual = float(pred.sum()), float(actual.sum())
    return {
        "customers": n,
        "mae": M.mae(actual, pred),
        "gini": M.normalized_gini(actual, pred),
        "churn_auc": M.churn_auc(y, p),
        "mean_churn_probability": float(p.mean()),
        "churn_rate": float(y.mean()),
        "total_predicted": total_predicted,
        "total_actual": total_actual,
        "bias": (total_predicted - total_actual) / abs(total_actual) if total_actual != 0 else np.nan,
    }


def segment_performance(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """:func:`performance_metrics` per segment of ``column``.

    Parameters
    ----------
    frame : DataFrame
        Scored customers with their outcomes: ``expected_spend``, ``actual_spend``,
        ``churn_probability``, ``churned`` and ``column``.

    Returns
    -------
    DataFrame
        One row per segment (``segment``) with :data:`PERFORMANCE_COLUMNS`.
    """
    segment = frame[column].astype("object").fillna("(missing)").astype(str)
    rows = [
        {"segment": name, **performance_metrics(g["expected_spend"], g["actual_spend"], g["churn_probability"], g["churned"])}
        for name, g in frame.groupby(segment, sort=True)
    ]
    return pd.DataFrame(rows, columns=["segment", *PERFORMANCE_COLUMNS])


def segment_bias(frame: pd.DataFrame, *, config: MonitorConfig) -> pd.DataFrame:
    """Whether a segment's customers realised less (or more) of their predicted spend than the rest did.

    For each segment of ``config.segment_columns``: the realised share Σ actual / Σ predicted of
    its customers against the rest's (:func:`serving.monitor.trends.ratio_difference_test`). An
    error common to the whole book (a season the models did not foresee) cancels out; a segment
    alerts when the difference reaches ``segment_bias_alert`` and ``segment_z_alert`` standard
    errors and it has ``segment_min_customers``.

    Returns
    -------
    DataFrame
        :data:`SEGMENT_BIAS_COLUMNS`.
    """
    rows = []
    actual = frame["actual_spend"].to_numpy(dtype=float)
    predicted = frame["expected_spend"].to_numpy(dtype=float)
    for column in config.segment_columns:
        if column not in frame.columns:
            continue
        segment = frame[column].astype("object").fillna("(missing)").astype(str).to_numpy()
        for name in sorted(set(segment)):
            mask = segment == name
            r_in, r_rest, difference, z = ratio_difference_test(actual, predicted, mask)
            n = int(mask.sum())
            alerts = bool(
                n >= config.segment_min_customers
                and np.isfinite(z)
                and abs(difference) >= config.segment_bias_alert
                and abs(z) >= config.segment_z_alert
            )
            rows.append({
                "segment_column": column, "segment": name, "customers": n, "realised_share": r_in,
                "rest_realised_share": r_rest, "difference": difference, "z": z, "alerts": alerts,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(SEGMENT_BIAS_COLUMNS))


def calibration(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean predicted vs realised churn rate per tenth of probability (:func:`training.metrics.calibration_table`)."""
    return M.calibration_table(frame["churned"].to_numpy(dtype=float), frame["churn_probability"].to_numpy(dtype=float))
