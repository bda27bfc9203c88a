"""Alerts: the checks of one monitor run whose threshold was crossed, each a sentence a person can act on.

Every alert concerns the present: the latest scoring (its drift, its segments' moves since the
previous scoring) or the latest matured scoring (its realised error). Older scorings' results stay
in the report and ``summary.json`` but do not alert again at every run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from training.config import MonitorConfig

__all__ = ["Alert", "drift_alerts", "move_alerts", "realised_alerts"]


@dataclass(frozen=True)
class Alert:
    """One crossed threshold.

    Attributes
    ----------
    kind : str
        ``feature_drift``, ``prediction_drift``, ``segment_move``, ``realised_bias``,
        ``realised_segment_bias`` or ``realised_auc``.
    subject : str
        What crossed it: a feature, a prediction, ``channel=paid_search``, ``book``.
    metric : str
        The measure: ``psi``, ``ks_statistic``, ``clv``, ``bias``, ``churn_auc``, ...
    value : float
        Its value.
    threshold : float
        The threshold it crossed (``config.monitor``).
    as_of : date
        The scoring it concerns.
    message : str
        One line that says what happened and what the threshold is.
    """

    kind: str
    subject: str
    metric: str
    value: float
    threshold: float
    as_of: dt.date
    message: str

    def to_dict(self) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out


def drift_alerts(table: pd.DataFrame | None, *, kind: str, as_of: dt.date, config: MonitorConfig) -> list[Alert]:
    """Alerts of the rows of a :func:`serving.monitor.drift.drift_table` flagged ``alerts``."""
    if table is None:
        return []
    out = []
    for _, row in table[table["alerts"]].iterrows():
        psi_hit = row["psi"] >= config.psi_alert
        metric, value, threshold = ("psi", row["psi"], config.psi_alert) if psi_hit else (
            "ks_statistic", row["ks_statistic"], config.ks_alert
        )
        what = "feature" if kind == "feature_drift" else "prediction"
        out.append(Alert(
            kind, str(row["column"]), metric, float(value), float(threshold), as_of,
            f"{what} {row['column']} drifted from the model's reference: {metric} {value:.3f} >= {threshold:g}"
            + (f" (gain share {row['importance']:.1%})" if kind == "feature_drift" else ""),
        ))  # fmt: skip
    return out


def move_alerts(moves: pd.DataFrame, *, as_of: dt.date, previous: dt.date | None, config: MonitorConfig) -> list[Alert]:
    """Alerts of the rows of :func:`serving.monitor.trends.segment_moves` flagged ``alerts``."""
    out = []
    for _, row in moves[moves["alerts"]].iterrows():
        out.append(Alert(
            "segment_move", f"{row['segment_column']}={row['segment']}", str(row["metric"]), float(row["difference"]),
            float(config.segment_change_alert), as_of,
            f"{row['segment_column']} {row['segment']}: {row['metric']} changed {row['change']:+.1%} since {previous} "
            f"against {row['rest_change']:+.1%} for the rest of the book ({row['difference']:+.1%}, z = {row['z']:+.1f}; "
            f"alert at ±{config.segment_change_alert:.0%} and |z| >= {config.segment_z_alert:g}), "
            f"{int(row['customers']):,} customers",
        ))  # fmt: skip
    return out


def realised_alerts(
    performance: pd.Series | None,
    segment_bias: pd.DataFrame | None,
    *,
    as_of: dt.date | None,
    holdout_auc: float | None,
    config: MonitorConfig,
) -> list[Alert]:
    """Alerts of the latest matured scoring: total bias, churn AUC against the holdout's, segment bias.

    Parameters
    ----------
    performance : Series or None
        :func:`serving.monitor.performance.performance_metrics` of the whole matured scoring.
    segment_bias : DataFrame or None
        :func:`serving.monitor.performance.segment_bias` of the same scoring.
    as_of : date or None
        Its date.
    holdout_auc : float or None
        The model's churn AUC on its training holdout.
    """
    if performance is None or as_of is None:
        return []
    out = []
    bias = performance["bias"]
    if np.isfinite(bias) and abs(bias) >= config.bias_alert:
        out.append(Alert(
            "realised_bias", "book", "bias", float(bias), float(config.bias_alert), as_of,
            f"scoring of {as_of}: predicted spend {performance['total_predicted']:,.0f} against "
            f"{performance['total_actual']:,.0f} realised ({bias:+.1%}; alert at ±{config.bias_alert:.0%})",
        ))  # fmt: skip
    auc = performance["churn_auc"]
    if holdout_auc is not None and np.isfinite(auc) and auc <= holdout_auc - config.auc_drop_alert:
        out.append(Alert(
            "realised_auc", "book", "churn_auc", float(auc), float(holdout_auc - config.auc_drop_alert), as_of,
            f"scoring of {as_of}: realised churn AUC {auc:.3f} against {holdout_auc:.3f} on the model's holdout "
            f"(alert {config.auc_drop_alert:g} below it)",
        ))  # fmt: skip
    if segment_bias is not None:
        for _, row in segment_bias[segment_bias["alerts"]].iterrows():
            out.append(Alert(
                "realised_segment_bias", f"{row['segment_column']}={row['segment']}", "realised_share",
                float(row["difference"]), float(config.segment_bias_alert), as_of,
                f"scoring of {as_of}: {row['segment_column']} {row['segment']} realised {row['realised_share']:.1%} of "
                f"its predicted spend against {row['rest_realised_share']:.1%} for the rest of the book "
                f"({row['difference']:+.1%}, z = {row['z']:+.1f}; alert at ±{config.segment_bias_alert:.0%} and "
                f"|z| >= {config.segment_z_alert:g})",
            ))  # fmt: skip
    return out
