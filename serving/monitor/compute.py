"""One monitor run: trends, drift, realised performance and alerts from a scoring history and the data.

:func:`compute_monitor` is the stage ``clvcast monitor`` calls; it reads nothing itself (the history,
the tables or a reader of them, and the models' serving artifacts are given) and returns a
:class:`MonitorResult` of frames, which :mod:`serving.monitor.outputs` writes as ``summary.json``
and ``report.html``. Of the tables it reads only the per-customer reductions of
:mod:`serving.monitor.inputs`, so the same computation runs on reductions gathered from a Dask
cluster (:func:`serving.cluster.monitor_inputs_on_cluster`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract import Tables
from features.dates import parse_cutoff
from serving.monitor import drift as D
from serving.monitor import performance as P
from serving.monitor import trends as T
from serving.monitor.alerts import Alert, drift_alerts, move_alerts, realised_alerts
from serving.monitor.history import HISTORY_KEY, History
from serving.monitor.inputs import FeatureRequest, MonitorReader, MonitorRequest, OutcomeRequest, monitor_inputs
from training.artifact import ServingArtifact
from training.config import MonitorConfig

__all__ = ["TREND_SEGMENTS", "MonitorResult", "compute_monitor", "data_end_of"]

log = logging.getLogger(__name__)

#: Score columns whose segments get trend tables.
TREND_SEGMENTS = ("channel", "clv_tier", "rfm_segment")
#: Segment columns of the realised performance of the latest matured scoring.
PERFORMANCE_SEGMENTS = ("channel", "clv_tier")


@dataclass
class MonitorResult:
    """Everything one monitor run found.

    Attributes
    ----------
    as_of : date
        Date of the latest scoring monitored.
    data_end : date
        Last day of the data (transactions) the realised performance could use.
    scorings : DataFrame
        The scorings monitored, one per as_of (the last scored that day): the history's key,
        ``horizon_days``, ``run_id``, ``scored_at``, ``customers``, ``matured`` (bool).
    book : DataFrame
        :func:`serving.monitor.trends.book_trends`.
    segments : dict of str to DataFrame
        :func:`serving.monitor.trends.segment_trends` per column of :data:`TREND_SEGMENTS`.
    previous_as_of : date or None
        The scoring before the latest one.
    migration : DataFrame or None
        CLV tier migration from the previous to the latest scoring.
    moves : DataFrame
        :func:`serving.monitor.trends.segment_moves` between them.
    reference_as_of : date or None
        Date of the drift reference of the latest scoring's models (``None``: no reference).
    feature_drift, prediction_drift : DataFrame or None
        :func:`serving.monitor.drift.drift_table` of the features as of the latest scoring and of
        its predictions.
    performance : DataFrame
        Per matured scoring: ``as_of``, ``horizon_days``, :data:`~serving.monitor.performance.PERFORMANCE_COLUMNS`,
        ``holdout_churn_auc`` (the model's, NaN when unknown) and ``without_outcome`` (scored
        customers the labels do not know).
    latest_matured : date or None
    performance_by_segment : dict of str to DataFrame
        :func:`serving.monitor.performance.segment_performance` of the latest matured scoring per
        column of :data:`PERFORMANCE_SEGMENTS`.
    segment_bias : DataFrame or None
        :func:`serving.monitor.performance.segment_bias` of the latest matured scoring.
    calibration : DataFrame or None
        Its calibration table.
    alerts : list of Alert
    config : MonitorConfig
    notes : list of str
        What could not be checked and why.
    """

    as_of: dt.date
    data_end: dt.date
    scorings: pd.DataFrame
    book: pd.DataFrame
    segments: dict[str, pd.DataFrame]
    previous_as_of: dt.date | None
    migration: pd.DataFrame | None
    moves: pd.DataFrame
    reference_as_of: dt.date | None
    feature_drift: pd.DataFrame | None
    prediction_drift: pd.DataFrame | None
    performance: pd.DataFrame
    latest_matured: dt.date | None
    performance_by_segment: dict[str, pd.DataFrame]
    segment_bias: pd.DataFrame | None
    calibration: pd.DataFrame | None
    alerts: list[Alert]
    config: MonitorConfig
    notes: list[str] = field(default_factory=list)

    @property
    def latest(self) -> pd.Series:
        """The latest scoring's row of ``scorings``."""
        return self.scorings.iloc[-1]


def data_end_of(tables: Tables) -> dt.date:
    """Last day with a transaction: how far the realised outcomes reach.

    Raises
    ------
    ValueError
        Without any transaction.
    """
    end = monitor_inputs(tables, MonitorRequest()).data_end
    if end is None:
        raise ValueError("the data have no transactions: nothing to monitor against")
    return end


def compute_monitor(
    history: History,
    tables: Tables | MonitorReader,
    *,
    artifact_for: Callable[[str], ServingArtifact | None],
    config: MonitorConfig | None = None,
    as_of=None,
) -> MonitorResult:
    """Monitor the scorings of ``history`` against the data in ``tables``.

    Parameters
    ----------
    history : History
        From :func:`serving.monitor.history.read_history`.
    tables : Tables or callable
        The customer data (contract tables): the features of the latest scoring for drift, and
        the outcomes of matured scorings. Or a reader of them, ``MonitorRequest -> MonitorInputs``
        (:data:`serving.monitor.inputs.MonitorReader`; e.g. the reductions of a cluster's
        partitions, :func:`serving.cluster.monitor_inputs_on_cluster`): the tables are read
        through :func:`serving.monitor.inputs.monitor_inputs` either way, twice (the data end
        and the features, then the outcomes of the matured scorings).
    artifact_for : callable
        ``run_id -> ServingArtifact`` of the training run behind a scoring (its drift reference,
        feature settings, holdout AUC), or ``None`` when it cannot be had; e.g.
        :func:`training.registry.load_serving_artifact`.
    config : MonitorConfig, optional
        Thresholds; defaults as documented there.
    as_of : date-like, optional
        Monitor as of this day: only scorings up to it, and data up to its end (a backfill, or a
        replay of the past). Default: every scoring and all the data.

    Returns
    -------
    MonitorResult

    Raises
    ------
    ValueError
        No scoring in the history up to ``as_of``, data without transactions, or no customer with
        a purchase by the latest scoring date when its drift is checked.
    """
    config = config or MonitorConfig()
    read: MonitorReader = (lambda request: monitor_inputs(tables, request)) if isinstance(tables, Tables) else tables
    notes: list[str] = []
    scorings = history.latest_per_day()
    if as_of is not None:
        as_of = parse_cutoff(as_of)
        scorings = scorings[scorings["as_of"] <= as_of].reset_index(drop=True)
    if scorings.empty:
        raise ValueError(f"the history holds no scoring{f' up to {as_of}' if as_of else ''}: nothing to monitor")
    rows = {tuple(s[k] for k in HISTORY_KEY): history.scoring(tuple(s[k] for k in HISTORY_KEY)) for _, s in scorings.iterrows()}
    frames = list(rows.values())
    all_rows = pd.concat(frames, ignore_index=True)

    book = T.book_trends(all_rows)
    segments = {c: T.segment_trends(all_rows, c) for c in TREND_SEGMENTS if c in all_rows.columns}
    latest_key = tuple(scorings.iloc[-1][k] for k in HISTORY_KEY)
    latest_rows = rows[latest_key]
    latest_as_of = latest_key[0]
    previous_as_of, migration = None, None
    moves = pd.DataFrame(columns=list(T.MOVE_COLUMNS))
    if len(scorings) > 1:
        previous_rows = frames[-2]
        previous_as_of = scorings.iloc[-2]["as_of"]
        migration = T.tier_migration(previous_rows, latest_rows)
        moves = T.segment_moves(previous_rows, latest_rows, config=config)
    else:
        notes.append("one scoring only: no trend between scorings yet")

    artifacts: dict[str, ServingArtifact | None] = {}

    def artifact(run_id: str) -> ServingArtifact | None:
        if run_id not in artifacts:
            artifacts[run_id] = artifact_for(run_id)
        return artifacts[run_id]

    latest_artifact = artifact(str(scorings.iloc[-1]["run_id"]))
    reference = None if latest_artifact is None else latest_artifact.drift_reference
    wanted = None
    if reference is not None:
        wanted = FeatureRequest(cutoff=latest_as_of, config=latest_artifact.feature_config,
                                btyd=latest_artifact.btyd_params, columns=tuple(reference.features))  # fmt: skip
    # First read: the data end (which scorings have matured) and the features of the latest scoring.
    first = read(MonitorRequest(until=as_of, features=wanted))
    if first.data_end is None:
        raise ValueError("the data have no transactions: nothing to monitor against")
    data_end = first.data_end
    scorings = scorings.assign(
        matured=[P.is_matured(d, h, data_end) for d, h in zip(scorings["as_of"], scorings["horizon_days"], strict=True)]
    )
    reference_as_of, feature_drift, prediction_drift = None, None, None
    if reference is None:
        notes.append(
            f"no drift reference for the models of the scoring of {latest_as_of} (run {scorings.iloc[-1]['run_id']}): "
            "drift not checked; models trained by this version of clvcast store one"
        )
    else:
        reference_as_of = reference.as_of
        if len(first.features) == 0:
            raise ValueError(f"no customer has a purchase by {latest_as_of}: the features for drift cannot be built")
        feature_drift = D.drift_table(first.features, reference.features, config=config, importance=reference.importance)
        prediction_drift = D.drift_table(latest_rows, reference.predictions, config=config)

    # Second read: what the customers of the matured scorings did over their horizons.
    asked: dict[tuple, tuple] = {}  # key -> (the scoring's row, its model's artifact, its outcome request)
    for key in rows:
        info = scorings[(scorings["as_of"] == key[0])].iloc[0]
        if info["matured"]:
            model = artifact(str(info["run_id"]))
            churn_definition = model.config.training.churn_definition if model is not None else "purchase"
            asked[key] = (info, model, OutcomeRequest(key[0], int(info["horizon_days"]), churn_definition))
    requests = tuple(dict.fromkeys(request for _, _, request in asked.values()))
    realised = read(MonitorRequest(until=as_of, outcomes=requests)).outcomes if asked else {}

    performance_rows, latest_matured, matured_frame, holdout_auc = [], None, None, None
    for key, frame in rows.items():
        if key not in asked:
            continue
        info, model, request = asked[key]
        outcomes = P.realised_outcomes(realised[request], customers=frame["customer_id"])
        joined = frame.assign(
            actual_spend=outcomes["actual_spend"].to_numpy(), churned=outcomes["churned"].to_numpy()
        )
        known = joined["actual_spend"].notna().to_numpy()
        joined = joined[known]
        auc = np.nan if model is None else (model.holdout_metrics.get("clvcast", {}).get("churn_auc") or np.nan)
        metrics = P.performance_metrics(
            joined["expected_spend"], joined["actual_spend"], joined["churn_probability"], joined["churned"]
        )
        performance_rows.append({
            "as_of": key[0], "horizon_days": int(info["horizon_days"]), **metrics,
            "holdout_churn_auc": float(auc), "without_outcome": int((~known).sum()),
        })  # fmt: skip
        latest_matured, matured_frame, holdout_auc = key[0], joined, auc
    performance = pd.DataFrame(
        performance_rows,
        columns=["as_of", "horizon_days", *P.PERFORMANCE_COLUMNS, "holdout_churn_auc", "without_outcome"],
    )
    by_segment, bias_table, calibration = {}, None, None
    if matured_frame is not None:
        by_segment = {c: P.segment_performance(matured_frame, c) for c in PERFORMANCE_SEGMENTS if c in matured_frame}
        bias_table = P.segment_bias(matured_frame, config=config)
        calibration = P.calibration(matured_frame)
    else:
        notes.append(f"no scoring has matured yet: the data end on {data_end}")

    alerts = [
        *drift_alerts(prediction_drift, kind="prediction_drift", as_of=latest_as_of, config=config),
        *drift_alerts(feature_drift, kind="feature_drift", as_of=latest_as_of, config=config),
        *move_alerts(moves, as_of=latest_as_of, previous=previous_as_of, config=config),
        *realised_alerts(
            performance.iloc[-1] if len(performance) else None, bias_table, as_of=latest_matured,
            holdout_auc=None if holdout_auc is None or not np.isfinite(holdout_auc) else float(holdout_auc),
            config=config,
        ),
    ]  # fmt: skip
    for alert in alerts:
        log.warning("alert: %s", alert.message)
    return MonitorResult(
        as_of=latest_as_of,
        data_end=data_end,
        scorings=scorings[[*HISTORY_KEY, "horizon_days", "run_id", "scored_at", "customers", "matured"]],
        book=book,
        segments=segments,
        previous_as_of=previous_as_of,
        migration=migration,
        moves=moves,
        reference_as_of=reference_as_of,
        feature_drift=feature_drift,
        prediction_drift=prediction_drift,
        performance=performance,
        latest_matured=latest_matured,
        performance_by_segment=by_segment,
        segment_bias=bias_table,
        calibration=calibration,
        alerts=alerts,
        config=config,
        notes=notes,
    )
