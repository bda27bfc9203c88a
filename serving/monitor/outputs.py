"""Writing a :class:`~serving.monitor.compute.MonitorResult`: ``summary.json`` and ``report.html``.

The summary holds every number of the report as JSON. A value that is undefined (an AUC with one
churn class, a z-score of a segment without variance) is ``null``, never NaN or infinity, so any
JSON reader takes the file as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.monitor.compute import MonitorResult
from serving.monitor.report import render_report

__all__ = ["REPORT_NAME", "SUMMARY_NAME", "monitor_metrics", "summary", "write_report", "write_summary"]

#: File names in the output directory.
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"


def _plain(value: Any) -> Any:
    """JSON-ready: dates as ISO text, numpy scalars as Python ones, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _records(frame: pd.DataFrame | None) -> list[dict] | None:
    return None if frame is None else _plain(frame.to_dict("records"))


def summary(result: MonitorResult) -> dict[str, Any]:
    """Everything the monitor run found, as a JSON-ready dict (the content of ``summary.json``).

    Returns
    -------
    dict
        ``status`` (``"alert"`` or ``"ok"``), ``alerts`` (list of
        :meth:`~serving.monitor.alerts.Alert.to_dict`), ``as_of``, ``data_end``, ``latest``
        (the latest scoring's key, run and horizon), ``scorings``, ``trends`` (``book`` and one
        list per segment column), ``migration``, ``segment_moves``, ``drift`` (``reference_as_of``,
        ``features``, ``predictions``), ``performance`` (``scorings``: one entry per matured
        scoring; ``latest_matured`` with ``by_segment``, ``segment_bias``, ``calibration``),
        ``thresholds`` (the ``monitor`` config) and ``notes``.
    """
    latest = result.latest
    migration = None
    if result.migration is not None:
        migration = {
            "from_as_of": result.previous_as_of,
            "to_as_of": result.as_of,
            "rows": list(result.migration.index),
            "columns": list(result.migration.columns),
            "counts": result.migration.to_numpy().tolist(),
        }
    return _plain({
        "status": "alert" if result.alerts else "ok",
        "alerts": [a.to_dict() for a in result.alerts],
        "as_of": result.as_of,
        "data_end": result.data_end,
        "latest": {
            "as_of": latest["as_of"], "churn_model_version": latest["churn_model_version"],
            "spend_model_version": latest["spend_model_version"], "run_id": latest["run_id"],
            "horizon_days": latest["horizon_days"], "customers": latest["customers"],
        },
        "scorings": _records(result.scorings),
        "trends": {"book": _records(result.book), **{c: _records(f) for c, f in result.segments.items()}},
        "migration": migration,
        "segment_moves": _records(result.moves),
        "drift": {
            "reference_as_of": result.reference_as_of,
            "features": _records(result.feature_drift),
            "predictions": _records(result.prediction_drift),
        },
        "performance": {
            "scorings": _records(result.performance),
            "latest_matured": None if result.latest_matured is None else {
                "as_of": result.latest_matured,
                "by_segment": {c: _records(f) for c, f in result.performance_by_segment.items()},
                "segment_bias": _records(result.segment_bias),
                "calibration": _records(result.calibration),
            },
        },
        "thresholds": result.config.model_dump(),
        "notes": result.notes,
    })  # fmt: skip


def monitor_metrics(result: MonitorResult) -> dict[str, float]:
    """The headline numbers logged to MLflow: the latest scoring, its drift, the latest matured scoring.

    Returns
    -------
    dict of str to float
        ``alerts``, ``customers``, ``total_clv``, ``mean_clv``, ``mean_churn_probability``,
        ``total_expected_spend``, ``max_feature_psi``, ``prediction_psi_<column>`` and, with a
        matured scoring, ``realised_<metric>``. Undefined values are left out.
    """
    book = result.book.iloc[-1]
    out: dict[str, float] = {"alerts": float(len(result.alerts))}
    for name in ("customers", "total_clv", "mean_clv", "mean_churn_probability", "total_expected_spend"):
        out[name] = float(book[name])
    if result.feature_drift is not None and len(result.feature_drift):
        out["max_feature_psi"] = float(result.feature_drift["psi"].max())
    if result.prediction_drift is not None:
        for _, row in result.prediction_drift.iterrows():
            out[f"prediction_psi_{row['column']}"] = float(row["psi"])
    if len(result.performance):
        last = result.performance.iloc[-1]
        for name in ("mae", "gini", "churn_auc", "bias", "total_predicted", "total_actual"):
            out[f"realised_{name}"] = float(last[name])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def write_summary(result: MonitorResult, path: str | Path) -> Path:
    """Write :func:`summary` as JSON (strict: ``allow_nan=False``) to ``path``; parents are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(result), indent=2, allow_nan=False), encoding="utf-8")
    return path


def write_report(result: MonitorResult, path: str | Path) -> Path:
    """Write the HTML report (:func:`serving.monitor.report.render_report`) to ``path``; parents are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
