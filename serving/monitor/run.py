"""The stages behind ``clvcast monitor`` and ``clvcast retrain``: plain functions the command line wires.

Exit codes of both commands (a scheduler reads them):

- ``0``: done, nothing to look at;
- ``1``: an error (one-line cause on stderr; nothing half-written is left as if it were done);
- ``3``: done, and the monitor raised at least one alert (``summary.json``, ``alerts``);
- ``4`` (``retrain`` only): done without an alert, but the new models were not promoted: the
  champion rule kept the current champion, which scored the data.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from features.contract import Tables
from serving.monitor.compute import MonitorResult, compute_monitor, data_end_of
from serving.monitor.history import HistoryWrite, append_scores, read_history
from serving.monitor.inputs import MonitorReader
from serving.monitor.outputs import REPORT_NAME, SUMMARY_NAME, monitor_metrics, summary, write_report, write_summary
from serving.scores import write_scores
from serving.scoring import score_tables
from serving.subscription_mode import scoring_model
from training import pipeline, registry
from training.config import Config

__all__ = ["EXIT_ALERT", "EXIT_NOT_PROMOTED", "EXIT_OK", "MonitorRun", "RetrainRun", "retrain", "run_monitor"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ALERT = 3
EXIT_NOT_PROMOTED = 4


@dataclass(frozen=True)
class MonitorRun:
    """What :func:`run_monitor` did: the result, the files written and the MLflow run."""

    result: MonitorResult
    summary_path: Path
    report_path: Path
    mlflow_run_id: str | None

    @property
    def exit_code(self) -> int:
        return EXIT_ALERT if self.result.alerts else EXIT_OK


def run_monitor(
    history: str | Path,
    tables: Tables | MonitorReader,
    out_dir: str | Path,
    *,
    config: Config,
    as_of: dt.date | None = None,
    log_to_mlflow: bool = True,
) -> MonitorRun:
    """Read the history, monitor it against ``tables``, write the outputs and log the run to MLflow.

    Parameters
    ----------
    history : str or Path
        A history directory or SQLAlchemy URL (:mod:`serving.monitor.history`).
    tables : Tables or callable
        The customer data, or a reader of its per-customer reductions
        (:data:`serving.monitor.inputs.MonitorReader`, e.g. on a cluster:
        :func:`serving.cluster.monitor_inputs_on_cluster` with its client and tables); see
        :func:`serving.monitor.compute.compute_monitor`.
    out_dir : str or Path
        Receives :data:`SUMMARY_NAME` and :data:`REPORT_NAME`.
    config : Config
        Its ``monitor`` section sets the thresholds.
    as_of : date, optional
        Monitor as of this day (scorings and data up to it).
    log_to_mlflow : bool
        Log the metrics, summary and report against the latest scoring's model versions
        (:func:`training.registry.log_monitor_run`).

    Returns
    -------
    MonitorRun

    Raises
    ------
    ValueError
        As :func:`serving.monitor.compute.compute_monitor` (no scoring up to ``as_of``, data
        without transactions).
    """
    loaded = read_history(history, until=as_of)
    result = compute_monitor(loaded, tables, artifact_for=registry.load_serving_artifact, config=config.monitor, as_of=as_of)
    out = Path(out_dir)
    summary_path = write_summary(result, out / SUMMARY_NAME)
    report_path = write_report(result, out / REPORT_NAME)
    run_id = None
    if log_to_mlflow:
        latest = result.latest
        run_id = registry.log_monitor_run(
            as_of=str(result.as_of),
            churn_version=str(latest["churn_model_version"]),
            spend_version=str(latest["spend_model_version"]),
            model_run_id=str(latest["run_id"]),
            metrics=monitor_metrics(result),
            tags={"alerts": str(len(result.alerts)), "data_end": str(result.data_end)},
            summary=summary(result),
            report=report_path,
        )
    return MonitorRun(result, summary_path, report_path, run_id)


@dataclass(frozen=True)
class RetrainRun:
    """What :func:`retrain` did.

    Attributes
    ----------
    train : TrainResult
    scores_path : Path
    history : HistoryWrite
    monitor : MonitorRun
    exit_code : int
        :data:`EXIT_ALERT` if the monitor alerted, else :data:`EXIT_NOT_PROMOTED` if the new
        models were not promoted, else :data:`EXIT_OK`.
    """

    train: pipeline.TrainResult
    scores_path: Path
    history: HistoryWrite
    monitor: MonitorRun
    exit_code: int


def retrain(
    tables: Tables,
    *,
    history: str | Path,
    out_dir: str | Path,
    config: Config,
    as_of: dt.date | None = None,
    promote: Literal["auto", "force", "never"] = "auto",
) -> RetrainRun:
    """Train (with the champion rule and the refit), score with the champion, append, monitor.

    Parameters
    ----------
    tables : Tables
        All the data up to now.
    history : str or Path
        The scoring history (directory or SQLAlchemy URL).
    out_dir : str or Path
        Receives ``scores.parquet`` and ``monitor/`` (``summary.json``, ``report.html``).
    config : Config
    as_of : date, optional
        Scoring date; default the last day with a transaction.
    promote : {"auto", "force", "never"}
        The champion decision of the training (see :func:`training.pipeline.train`).

    Returns
    -------
    RetrainRun
    """
    trained = pipeline.train(tables, config=config, promote=promote)
    champion = registry.load_champion()
    as_of = as_of or data_end_of(tables)
    contractual = scoring_model(tables, cutoff=as_of, config=config, champion=champion)
    scores = score_tables(tables, as_of=as_of, champion=champion, clv=config.clv, contractual=contractual)
    out = Path(out_dir)
    scores_path = write_scores(scores, out / "scores.parquet")
    written = append_scores(scores, history)
    monitored = run_monitor(history, tables, out / "monitor", config=config)
    if monitored.result.alerts:
        code = EXIT_ALERT
    elif not trained.promoted:
        code = EXIT_NOT_PROMOTED
    else:
        code = EXIT_OK
    return RetrainRun(trained, scores_path, written, monitored, code)
