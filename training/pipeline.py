"""The training stage: ``train`` (fit, evaluate, log, register, champion decision) and ``backtest``.

Time discipline
---------------
For an evaluation cutoff C and horizon H:

- everything the models learn from is the history up to the end of day C: the input tables are cut
  at C before anything is built, so no feature, label or BTYD fit of the training set can see
  later data whatever the feature code does;
- training rows are stacked rolling origins C − H, C − H − step, ... whose label windows end on
  or before C; the latest ``validation_cutoffs`` of them are the time-held-out slice for early
  stopping and calibration;
- the holdout is every customer with history at C: features as of C, labels from (C, C + H],
  a window no model saw. The baselines are fitted on the history up to C and predicted for the
  same customers.

``train`` without a cutoff holds out the final window: C = last transaction day − H.

With ``training.sample_customers`` the tables are cut to a deterministic sample of customers
(:mod:`features.sample`) before anything else: the plan, the training sets, the holdout, the
lifetime model, the baselines and the refit all see the sample only.

Lifecycle: after the champion decision on that window, a promoted configuration is fitted again on
origins up to the last day of the data (:func:`refit`: the last origin's label window ends on it),
and that model is registered for serving; the holdout metrics of the evaluated model stay on the
version, and the evaluated pair is logged in the same run, so that the next training's champion
rule can score the champion's configuration on a window it has not seen (see
:mod:`training.registry`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.btyd import BTYDParams, summary_from_transactions
from features.build import build_features, fit_btyd
from features.contract import Tables
from features.dates import history_until
from features.event_types import resolve_event_types
from features.history import prepare_history
from features.io import load_tables
from features.sample import CustomerSample, sample_customers
from features.schema import feature_set_id
from features.subscription import detect_business
from training import diagnostics as D
from training import metrics as M
from training import plots, registry
from training.baselines import baseline_forecasts
from training.artifact import EvaluatedModels, ServingArtifact
from training.config import Config, with_business, with_overrides
from training.curve import SpendCurve
from training.reference import drift_reference
from training.labels import build_labels
from training.lifetime import LifetimeModel, fit_lifetime_model
from training.models import ClvModels
from training.training_set import (
    Plan,
    TrainingInputError,
    TrainingMatrix,
    build_training_matrix,
    degenerate_rows,
    plan_origins,
    training_cutoffs,
)

log = logging.getLogger(__name__)

MODELS = ("clvcast", "btyd", "pareto", "naive")
BACKTEST_METRICS = ("mae", "rmse", "gini", "spearman", "decile_mape", "churn_auc", "total_predicted")


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def _step(message: str, seconds: dict[str, float] | None = None, key: str = "") -> Iterator[None]:
    """Log a step's start and, when it succeeds, its duration (also kept in ``seconds[key]``)."""
    log.info("%s ...", message)
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    if seconds is not None:
        seconds[key] = elapsed
    log.info("%s: done in %.1f s", message, elapsed)


# --------------------------------------------------------------------------- inputs


def _as_tables(source: str | Path | Tables) -> Tables:
    if isinstance(source, Tables):
        return source
    # The loader's bar over the tables shows when the steps do.
    return load_tables(source, progress=log.isEnabledFor(logging.INFO)).tables


def sampled(tables: Tables, config: Config, sample: CustomerSample | None = None) -> tuple[Tables, CustomerSample | None]:
    """The tables a run trains and evaluates on: the sample of ``training.sample_customers``, if set.

    Parameters
    ----------
    tables : Tables
        The whole book, or (``sample`` given) the sample already taken (e.g. on a cluster,
        :func:`serving.cluster.sample_on_cluster`): taking it again would cut it by its own size.
    config : Config
    sample : CustomerSample, optional
        What the sample already taken was.

    Returns
    -------
    (Tables, CustomerSample or None)
        ``tables`` cut to the sample (:func:`features.sample.sample_customers`) and what it was,
        said at INFO; ``(tables, None)`` without ``training.sample_customers``.
    """
    if sample is None:
        if config.training.sample_customers is None:
            return tables, None
        tables, sample = sample_customers(tables, config.training.sample_customers)
    log.info("%s", sample.message())
    return tables, sample


def data_fingerprint(tables: Tables) -> dict[str, str]:
    """Tags that identify the input: content hash, row counts, date range."""
    tx = tables.transactions
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(tx[["customer_id", "timestamp", "amount"]], index=False).to_numpy().tobytes())
    tags = {
        "data.hash": digest.hexdigest()[:16],
        "data.transactions_rows": str(len(tx)),
        "data.customers": str(tx["customer_id"].nunique()),
        "data.first_date": str(tx["timestamp"].min().date()) if len(tx) else "",
        "data.last_date": str(tx["timestamp"].max().date()) if len(tx) else "",
        "data.events_rows": str(0 if tables.events is None else len(tables.events)),
        "data.customers_rows": str(0 if tables.customers is None else len(tables.customers)),
    }
    return tags


# --------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Everything computed for one cutoff before anything is logged."""

    plan: Plan
    config: Config  # as run: the boosters' label horizon and BTYD features follow the plan
    models: ClvModels
    holdout_features: pd.DataFrame
    actual_spend: np.ndarray
    churned: np.ndarray
    predictions: dict[str, pd.DataFrame]  # per model: expected_spend, churn_score (+ churn_probability)
    metrics: dict[str, dict[str, float]]
    btyd: BTYDParams  # fitted at the cutoff (the holdout features use it)
    lifetime: LifetimeModel  # the dropout process and the interval level (training.lifetime)
    curve: SpendCurve  # the holdout's spend curve: its first horizon is clvcast's forecast
    baseline_params: dict[str, Any]
    n_training_rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    purchase_days: np.ndarray | None = None  # per holdout customer: distinct purchase days in the window
    notes: dict[str, str] = field(default_factory=dict)  # decided from the data (resolve_for_data): MLflow tags

    @property
    def customers(self) -> int:
        return len(self.holdout_features)


def _score(actual: np.ndarray, churned: np.ndarray, expected_spend: np.ndarray, churn_score: np.ndarray, *, probability: bool) -> dict[str, float]:
    out = M.spend_metrics(actual, expected_spend)
    out.update(M.churn_metrics(churned, churn_score, is_probability=probability))
    return out


def evaluate(tables: Tables, *, cutoff, config: Config, trainer=None) -> Evaluation:
    """Fit on the history up to ``cutoff`` and score the models and baselines on its holdout.

    Each step (training set, fit, holdout) is logged with its duration, also returned in
    ``Evaluation.seconds``. ``trainer`` (e.g. :class:`serving.cluster.ClusterTrainer`) builds the
    training set and fits the boosters elsewhere: called as ``trainer(history, origins=...,
    horizon_days=..., config=...)``, it returns the models, the rows per origin and the row count;
    None builds and fits them in this process.
    """
    plan = plan_origins(tables, cutoff=cutoff, training=config.training)
    config, notes = resolve_for_data(config, tables, cutoff=plan.cutoff)
    cfg = config.training
    if plan.model_horizon_days != (cfg.label_horizon_days or cfg.horizon_days):
        # The boosters learn shorter windows than the horizon (plan_origins): their BTYD features follow.
        config = with_overrides(config, label_horizon_days=plan.model_horizon_days)
        cfg = config.training
    history = history_until(tables, plan.cutoff)
    seconds: dict[str, float] = {}

    if trainer is not None:
        with _step(f"training set and boosters on the cluster ({len(plan.origins)} origins)", seconds, "fit"):
            fitted = trainer(history, origins=plan.origins, horizon_days=plan.model_horizon_days, config=config)
        models, origin_rows, n_rows = fitted.models, fitted.origin_rows, fitted.n_rows
    else:
        models, origin_rows, n_rows = _fit_here(history, plan.origins, plan.model_horizon_days, config, seconds)

    with _step("fitting the dropout process and calibrating the intervals", seconds, "lifetime"):
        lifetime = fit_lifetime_model(
            history, cutoff=plan.cutoff.date(), model_horizon_days=plan.model_horizon_days,
            origins=plan.origins, origin_rows=origin_rows,
            settings=config.lifetime, clv=config.clv, time_unit_days=config.features.btyd_time_unit_days,
            validation=_calibration_window(history, plan, models, config),
        )  # fmt: skip

    with _step(f"scoring the holdout {plan.cutoff.date()} + {plan.horizon_days} days", seconds, "holdout"):
        btyd = fit_btyd(history, cutoff=plan.cutoff.date(), config=config.features)
        features = build_features(history, cutoff=plan.cutoff.date(), config=config.features, btyd=btyd)
        holdout_labels = build_labels(
            tables, cutoff=plan.cutoff.date(), horizon_days=plan.horizon_days, churn_definition=cfg.churn_definition
        )
        if not holdout_labels.index.equals(features.index):
            raise RuntimeError(f"cutoff {plan.cutoff.date()}: holdout label rows do not match the feature rows")
        actual = holdout_labels["spend"].to_numpy(float)
        churned = holdout_labels["churn"].to_numpy(int)
        ours = models.predict(features[list(models.encoder_.columns)])
        # The boosters forecast H_m days; the spend curve gives any horizon H (H_m = H by default).
        curve = lifetime.curve(
            prepare_history(history, plan.cutoff.date()),
            churn_probability=ours["churn_probability"].to_numpy(float),
            spend_if_active=ours["spend_if_active"].to_numpy(float),
            horizon_days=plan.horizon_days,
            clv=config.clv,
        )
        lower, upper = curve.spend_interval(lifetime.interval_level)
        predictions = {
            "clvcast": pd.DataFrame(
                {"expected_spend": curve.expected_spend[:, 0], "churn_score": curve.churn_probability,
                 "churn_probability": curve.churn_probability, "spend_if_active": curve.spend_if_active,
                 "expected_spend_lower": lower, "expected_spend_upper": upper},
                index=features.index,
            )
        }
        baselines = baseline_forecasts(
            history.transactions,
            cutoff=plan.cutoff,
            horizon_days=plan.horizon_days,
            customers=features.index,
            time_unit_days=config.features.btyd_time_unit_days,
            fitted=(btyd.bgnbd, btyd.gamma_gamma),
            # The classic Pareto/NBD baseline: the lifetime model's own fit when it is that model in
            # the same unit (not when fitted with the season, nor on orders).
            pareto=lifetime.params.pareto
            if lifetime.params.time_unit_days == config.features.btyd_time_unit_days and lifetime.params.fit_clock == "calendar"
            and lifetime.params.count == "purchase_days"
            else None,
        )
        for name, forecast in baselines.items():
            predictions[name] = pd.DataFrame({"expected_spend": forecast.expected_spend, "churn_score": forecast.churn_score})
        scores = {
            name: _score(
                actual, churned, pred["expected_spend"].to_numpy(float), pred["churn_score"].to_numpy(float),
                probability=(name == "clvcast"),
            )
            for name, pred in predictions.items()
        }
        # Share of the customers whose realised spend is inside their interval.
        scores["clvcast"]["interval_coverage"] = float(np.mean((actual >= lower - 1e-9) & (actual <= upper + 1e-9)))
    return Evaluation(
        plan=plan,
        config=config,
        models=models,
        holdout_features=features,
        actual_spend=actual,
        churned=churned,
        predictions=predictions,
        metrics=scores,
        btyd=btyd,
        lifetime=lifetime,
        curve=curve,
        baseline_params={name: f.params for name, f in baselines.items()},
        n_training_rows=n_rows,
        seconds=seconds,
        purchase_days=holdout_labels["purchase_days"].to_numpy(int),
        notes=notes,
    )


def resolve_for_data(config: Config, tables: Tables, *, cutoff) -> tuple[Config, dict[str, str]]:
    """The configuration as a run on these tables uses it, and what was decided from the data.

    - ``business: auto``: the mode detected from the history up to ``cutoff``
      (:func:`features.subscription.detect_business`), logged at INFO with its evidence; a mode set
      in the configuration is kept (and said so).
    - event types not in ``features.event_types`` are reported (a warning with their counts) and
      the usable ones appended (:func:`features.event_types.resolve_event_types`).

    Returns
    -------
    config : Config
    notes : dict of str to str
        MLflow tags of the run: ``business``, ``business_source`` (``config`` or ``detected``),
        ``business_evidence``, and those of :meth:`features.event_types.EventTypeReport.tags`.
    """
    notes: dict[str, str] = {}
    if config.business == "auto":
        business, evidence = detect_business(tables, cutoff=cutoff)
        config = with_business(config, business)
        notes.update(business=business, business_source="detected", business_evidence=evidence)
        log.info("business mode %s, detected from the data up to %s (%s); set business in the config to decide",
                 business, cutoff.date() if hasattr(cutoff, "date") else cutoff, evidence)
    else:
        notes.update(business=config.business, business_source="config")
    features, report = resolve_event_types(config.features, tables.events, cutoff=cutoff)
    if report.unknown_events:
        log.warning("%s", report.message())
    if features is not config.features:
        config = config.model_copy(update={"features": features})
    notes.update(report.tags())
    return config, notes


def _calibration_window(history: Tables, plan: Plan, models: ClvModels, config: Config):
    """(origin, days, customer ids, p, s, realised spend) of the window the interval level is calibrated on.

    The window ends at the cutoff and is as long as the horizon H when the history allows, but no
    shorter than the boosters' H_m and starting no earlier than H_m days after the first purchase
    (the calibration origin needs a history, as the training origins do): for H = H_m it is the
    latest training origin's window, which the boosters left out of their fit (they only stop early
    on it); for CDNOW's 39 weeks (H_m = 91 days) it is the 181 days from 1997-04-02. The level found
    there is then used at H. None without a held-out origin (``validation_cutoffs = 0``): the
    intervals stay uncalibrated.
    """
    if config.training.validation_cutoffs < 1:
        return None
    H_m, H = plan.model_horizon_days, plan.horizon_days
    span = (plan.cutoff - plan.first_day).days
    days = int(min(H, max(H_m, span - H_m)))
    origin = (plan.cutoff - pd.Timedelta(days=days)).date()
    features = build_features(history, cutoff=origin, config=config.features)
    pred = models.predict(features[list(models.encoder_.columns)])
    actual = build_labels(history, cutoff=origin, horizon_days=days, churn_definition=config.training.churn_definition)
    p, s = pred["churn_probability"].to_numpy(float), pred["spend_if_active"].to_numpy(float)
    finite = np.isfinite(p) & np.isfinite(s)  # a degenerate BTYD fit at an early origin: those rows say nothing
    return origin, days, features.index[finite], p[finite], s[finite], actual["spend"].to_numpy(float)[finite]


# --------------------------------------------------------------------------- what gets logged


def _flat_metrics(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{model}_{name}": value for model, values in scores.items() for name, value in values.items()}


def _btyd_diagnostics(ev: Evaluation, tables: Tables) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The classic BG/NBD diagnostics of the baseline fitted at the cutoff (:mod:`training.diagnostics`).

    Frequency x recency matrices of expected purchase days over the horizon and of P(alive), for
    customers as old as the oldest at the cutoff; mean holdout purchase days per calibration
    frequency, actual vs predicted; weekly repeat purchase days of the population, actual vs
    expected, through calibration and the holdout window.
    """
    params, unit = ev.btyd.bgnbd, ev.btyd.time_unit_days
    cutoff, horizon = ev.plan.cutoff.date(), ev.plan.horizon_days
    summary = summary_from_transactions(tables.transactions, cutoff=cutoff, time_unit_days=unit)
    t = horizon / unit
    # Rows up to the 99th percentile of frequency: the rare heaviest buyers would flatten the map.
    top = max(1, int(np.ceil(summary["frequency"].quantile(0.99))))
    expected = D.frequency_recency_matrix(params, T=float(summary["T"].max()), max_frequency=top, t=t)
    alive = D.frequency_recency_matrix(params, T=float(summary["T"].max()), max_frequency=top)
    days = pd.Series(ev.purchase_days, index=ev.holdout_features.index).reindex(summary.index, fill_value=0)
    holdout = D.calibration_holdout_table(summary, days, params, t=t)
    tracking = D.transaction_tracking(
        tables.transactions, params, cutoff=cutoff, end=ev.plan.cutoff + pd.Timedelta(days=horizon), time_unit_days=unit
    )
    # Named as training.diagnostics.TABLES, the names the finance report reads back.
    tables_out = dict(zip(D.TABLES, (expected, alive, holdout, tracking), strict=True))
    figures = {
        "btyd_frequency_recency": plots.frequency_recency_plot(expected, alive, horizon_label=f"{horizon} days"),
        "btyd_calibration_holdout": plots.calibration_holdout_plot(holdout),
        "btyd_tracking": plots.tracking_plot(tracking),
    }
    return tables_out, figures


def _artifacts(ev: Evaluation, tables: Tables) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Tables (``tables/*.csv``) and figures (``plots/*.png``) of a run: model metrics and BTYD diagnostics."""
    spend = {name: p["expected_spend"].to_numpy(float) for name, p in ev.predictions.items()}
    prob = ev.predictions["clvcast"]["churn_probability"].to_numpy(float)
    importance = ev.models.feature_importance()
    tables_out = {
        "calibration": M.calibration_table(ev.churned, prob),
        "feature_importance": importance,
        **{f"deciles_{name}": M.decile_table(ev.actual_spend, pred) for name, pred in spend.items()},
    }
    figures = {
        "calibration": plots.calibration_plot(ev.churned, prob),
        "cumulative_gains": plots.gains_plot(ev.actual_spend, spend),
        "deciles": plots.decile_plot(ev.actual_spend, spend),
        "feature_importance": plots.importance_plot(importance),
    }
    tables_out.update(_process_tables(ev.lifetime))
    btyd_tables, btyd_figures = _btyd_diagnostics(ev, tables)
    return {**tables_out, **btyd_tables}, {**figures, **btyd_figures}


_PROCESS_TABLES = ("dropout_by_level", "new_customer_process_by_level")


def _process_tables(lifetime: LifetimeModel) -> dict[str, pd.DataFrame]:
    """The multipliers per level of the dropout process and, when it is another fit, of the new customers' process."""
    out = {}
    if lifetime.params.by_level is not None:
        out["dropout_by_level"] = lifetime.params.by_level.table()
    own = lifetime.new_customer_params
    if own is not None and own is not lifetime.params and own.by_level is not None:
        out["new_customer_process_by_level"] = own.by_level.table()
    return out


def _tags(tables: Tables, ev: Evaluation) -> dict[str, str]:
    return {
        **data_fingerprint(tables),
        "cutoff": str(ev.plan.cutoff.date()),
        "horizon_days": str(ev.plan.horizon_days),
        "training_origins": ",".join(str(o.date()) for o in ev.plan.origins),
        "holdout_customers": str(ev.customers),
        "training_rows": str(ev.n_training_rows),
        **ev.notes,
    }


def run_name(command: str, ev: Evaluation) -> str:
    """The MLflow run name of ``command`` on ``ev``'s holdout: ``"train 2024-07-02, 182 days"``."""
    return f"{command} {ev.plan.cutoff.date()}, {ev.plan.horizon_days} days"


def _metrics_json(ev: Evaluation, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "cutoff": str(ev.plan.cutoff.date()),
        "horizon_days": ev.plan.horizon_days,
        "customers": ev.customers,
        "total_actual": float(ev.actual_spend.sum()),
        "churn_rate": float(ev.churned.mean()),
        "models": ev.metrics,
        "baseline_params": ev.baseline_params,
        "label_horizon_days": ev.plan.model_horizon_days,
        "lifetime": json.loads(ev.lifetime.model_dump_json()),
        "best_iterations": ev.models.best_iterations_,
        "seconds": ev.seconds,
        **(extra or {}),
    }


# --------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    """What ``train`` did.

    Attributes
    ----------
    run_id : str
        The MLflow run.
    cutoff : date
        Holdout cutoff; the models learnt from data up to it only.
    horizon_days : int
    customers : int
        Holdout customers.
    metrics : dict
        Holdout metrics per model (``clvcast``, ``btyd``, ``naive``).
    champion_metrics : dict or None
        The previous champion's metrics on the same holdout, when there was one to compare with.
    churn_version, spend_version : str
        Registered versions created by this run.
    promoted : bool
        Whether they became champion.
    reason : str
        Why (the champion rule's verdict).
    models : ClvModels
        The registered pair: refitted on origins up to ``data_end`` when ``refit``, else the
        evaluated pair.
    refit : bool
        Whether the registered pair was refitted after the decision.
    data_end : date
        The last day of the data the registered pair learnt from (``cutoff`` without a refit).
    seconds : float
        Wall time of the whole call.
    """

    run_id: str
    cutoff: date
    horizon_days: int
    customers: int
    metrics: dict[str, dict[str, float]]
    champion_metrics: dict[str, float] | None
    churn_version: str
    spend_version: str
    promoted: bool
    reason: str
    models: ClvModels = field(repr=False)
    refit: bool = False
    data_end: date | None = None
    seconds: float = 0.0


def train(
    source_or_tables: str | Path | Tables,
    *,
    cutoff=None,
    config: Config | None = None,
    promote: Literal["auto", "force", "never"] = "auto",
    trainer=None,
    sample: CustomerSample | None = None,
) -> TrainResult:
    """Train, evaluate on the holdout, log to MLflow, register, and apply the champion rule.

    Parameters
    ----------
    source_or_tables : str, Path or Tables
        A data directory or SQLAlchemy URL (read with :func:`features.io.load_tables`), or tables.
    cutoff : date-like, optional
        Holdout cutoff. Default: the last transaction day minus the horizon, so the final window is
        held out.
    config : Config, optional
        Defaults to ``Config()``.
    promote : {"auto", "force", "never"}
        ``"auto"`` applies :func:`training.registry.champion_decision`; ``"force"`` makes the new
        pair champion whatever the comparison says (e.g. after changing the horizon on purpose);
        ``"never"`` registers the versions as rejected candidates.
    trainer : callable, optional
        Builds the training sets and fits the boosters elsewhere (:func:`evaluate`); used for the
        evaluation and the refit alike.
    sample : CustomerSample, optional
        The tables are already the sample of ``training.sample_customers`` and this is what it
        was; without it the sample is taken here when the setting is on (:func:`sampled`).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingInputError
        Bad dates or data; raised before MLflow is touched, so the registry is unchanged.

    Notes
    -----
    Each step is logged at INFO with its duration (loggers ``training.*``), and the rolling
    origins get a progress bar while INFO is enabled.
    """
    started = time.perf_counter()
    started_at = time.time()  # the run's start time: its duration covers the fit, not only the logging
    config = config or Config()
    # The sample before anything else: origins, holdout, lifetime model, baselines and refit see only it.
    tables, sample = sampled(_as_tables(source_or_tables), config, sample)
    ev = evaluate(tables, cutoff=cutoff, config=config, trainer=trainer)
    if sample is not None:
        ev.notes.update(sample.tags())
    config = ev.config  # as run: the boosters' label horizon may be shorter than H (plan_origins)
    # What a killed or racing process left (an interrupted champion change, abandoned runs) is
    # put right before this run compares with the champion (and after bad input could stop it).
    registry.check_registry(create=True)

    compared: dict[str, Any] = {}

    def decide() -> registry.Decision:
        """The champion rule against the champion in effect now (again under the lock if it moved)."""
        basis = registry.champion_versions()
        metrics, note = _champion_on_holdout(ev, tables, config)
        compared.update(basis=basis, metrics=metrics)
        if promote == "force":
            return registry.Decision(True, "promotion forced")
        if promote == "never":
            return registry.Decision(False, "promotion disabled for this run")
        if note is not None and metrics is None:
            return note
        verdict = registry.champion_decision(
            {"mae": ev.metrics["clvcast"]["mae"], "churn_auc": ev.metrics["clvcast"]["churn_auc"]}, metrics
        )
        return verdict if note is None else registry.Decision(verdict.promote, f"{note.reason}; {verdict.reason}")

    with _step("comparing with the current champion"):
        decision = decide()
    champion_metrics = compared["metrics"]

    refitted = None
    if decision.promote and config.training.refit:
        with _step(f"refitting on origins up to the last day, {ev.plan.last_day.date()}"):
            refitted = refit(tables, plan=ev.plan, config=config, calibrated=ev.lifetime, trainer=trainer)
    fsid = feature_set_id(config.features)
    serving = _serving_artifact(ev, refitted, config=config, feature_set=fsid, tables=tables)
    served = ev.models if refitted is None else refitted.models
    tables_out, figures = _artifacts(ev, tables)
    if refitted is not None:
        # The process tables are the served process's (the refit's); the evaluation's, at the cutoff, beside them.
        for name in _PROCESS_TABLES:
            if name in tables_out:
                tables_out[f"{name}_at_cutoff"] = tables_out.pop(name)
        tables_out.update(_process_tables(refitted.lifetime))
    flat = _flat_metrics(ev.metrics)
    if champion_metrics is not None:
        flat.update({f"champion_{k}": v for k, v in champion_metrics.items()})
    data_end = serving.training_cutoff
    with _step("logging the run and the models to MLflow"):
        run = registry.log_run(
            kind="train",
            params=config.to_flat_dict(),
            tags={**_tags(tables, ev), "feature_set_id": fsid, "refit": str(refitted is not None).lower(),
                  "data_end": str(data_end)},
            metrics=flat,
            metrics_json=_metrics_json(ev, {"champion_on_holdout": champion_metrics, "decision": decision.reason,
                                            "refit": refitted is not None, "data_end": str(data_end)}),
            tables=tables_out,
            figures=figures,
            models=served,
            serving=serving,
            input_example=ev.holdout_features[list(served.encoder_.columns)].head(5),
            evaluated_models=None if refitted is None else ev.models,
            run_name=run_name("train", ev),
            started_at=started_at,
        )  # fmt: skip
    with _step("registering the models"):
        reg = registry.register_pair(
            run, decision, tags=_version_tags(ev, serving), basis=compared["basis"], redecide=decide,
        )
        registry.describe_versions(reg, _version_description(ev, serving))
    champion_metrics = compared["metrics"]
    return TrainResult(
        run_id=run.run_id,
        cutoff=ev.plan.cutoff.date(),
        horizon_days=ev.plan.horizon_days,
        customers=ev.customers,
        metrics=ev.metrics,
        champion_metrics=champion_metrics,
        churn_version=reg.churn_version,
        spend_version=reg.spend_version,
        promoted=reg.promoted,
        reason=reg.reason,
        models=served,
        refit=refitted is not None,
        data_end=data_end,
        seconds=time.perf_counter() - started,
    )


def _champion_on_holdout(ev: Evaluation, tables: Tables, config: Config):
    """Score the current champion on this run's holdout rows.

    Returns ``(metrics, None)`` to apply the rule, ``(None, None)`` when there is no champion,
    ``(None, Decision)`` when the comparison cannot be made and the outcome is decided here, or
    ``(metrics, Decision)`` when the champion in effect is unusable and the metrics are those of
    the last good pair (the decision's reason says so; the rule still applies).
    """
    current = registry.champion_versions()
    if current is None:
        return None, None
    note = None
    try:
        champion = registry.load_champion()
    except registry.ChampionError as exc:
        # Damaged (artifacts gone, split aliases) or from other feature code: compare with the
        # last pair that was champion and still loads, rather than promoting without a comparison.
        champion = registry.last_good_champion(exclude=current)
        if champion is None:
            return None, registry.Decision(True, f"current champion is unusable ({exc}) and no earlier champion loads")
        note = registry.Decision(
            True, f"current champion is unusable ({exc}); compared with the last good pair "
            f"v{champion.churn_version}/v{champion.spend_version} (run {champion.run_id})"
        )
    if champion.horizon_days != ev.plan.horizon_days:
        return None, registry.Decision(
            False,
            f"current champion forecasts {champion.horizon_days} days, this run {ev.plan.horizon_days}: "
            "not comparable on the same holdout; rerun with --promote force (promote='force') to replace it",
        )
    other_mode = registry.mode_decision(registry.run_mode(config), registry.run_mode(champion.serving.config))
    if other_mode is not None:
        return None, other_mode
    # Like with like: the champion is judged by a pair of its configuration that has not seen this
    # holdout window. A refitted champion learnt from data up to its last day, which may lie inside
    # the new window; its evaluated pair (logged in the same run) learnt up to its own holdout cutoff.
    cutoff = ev.plan.cutoff.date()
    models, lifetime = champion.models, champion.lifetime
    if champion.serving.training_cutoff > cutoff:
        evaluated = champion.serving.evaluated
        if evaluated is None or evaluated.training_cutoff > cutoff:
            seen = champion.serving.training_cutoff if evaluated is None else evaluated.training_cutoff
            return None, registry.Decision(
                False,
                f"current champion's models learnt from data up to {seen}, after this run's holdout cutoff {cutoff}: "
                "not comparable on this holdout; rerun with --promote force (promote='force') to replace it",
            )
        models = registry.load_evaluated_models(champion)
        lifetime = evaluated.lifetime or lifetime
    history = history_until(tables, ev.plan.cutoff)
    features = ev.holdout_features
    if champion.feature_config != ev.config.features:
        features = build_features(history, cutoff=ev.plan.cutoff.date(), config=champion.feature_config)
        features = features.reindex(ev.holdout_features.index)
    pred = models.predict(features[list(models.encoder_.columns)])
    # Scored as it would score: its boosters through its own lifetime model, over the same horizon.
    curve = lifetime.curve(
        prepare_history(history, ev.plan.cutoff.date()),
        churn_probability=pred["churn_probability"].to_numpy(float),
        spend_if_active=pred["spend_if_active"].to_numpy(float),
        horizon_days=ev.plan.horizon_days,
        clv=ev.config.clv,
    )
    spend = curve.expected_spend[:, 0]
    p = curve.churn_probability
    return {"mae": M.mae(ev.actual_spend, spend), "churn_auc": M.churn_auc(ev.churned, p),
            "gini": M.normalized_gini(ev.actual_spend, spend)}, note


# --------------------------------------------------------------------------- refit


@dataclass
class Refit:
    """The chosen configuration fitted again on origins up to the last day of the data.

    Attributes
    ----------
    models : ClvModels
    btyd : BTYDParams
        Fitted on the whole history (up to ``data_end``): what serving builds features with.
    lifetime : LifetimeModel
        The dropout process fitted on the whole history, with the evaluation's interval level.
    origins : tuple of Timestamp
        Training origins, oldest first; the last one is ``data_end`` − H_m.
    data_end : Timestamp
        The last day of the data.
    features : DataFrame
        Every customer's features as of ``data_end``: the drift reference population.
    n_training_rows : int
    """

    models: ClvModels
    btyd: BTYDParams
    lifetime: LifetimeModel
    origins: tuple[pd.Timestamp, ...]
    data_end: pd.Timestamp
    features: pd.DataFrame
    n_training_rows: int


def refit(tables: Tables, *, plan: Plan, config: Config, calibrated: LifetimeModel, trainer=None) -> Refit:
    """Fit ``config`` on rolling origins whose last label window ends on the last day of the data.

    The origins are those of ``plan`` moved forward by the horizon (the same count, step and
    ``min_history_days`` rule): ``plan.last_day − H_m``, ``plan.last_day − H_m − step``, ... with
    H_m the boosters' label window (``plan.model_horizon_days``). The evaluation judged the
    configuration on the window after ``plan.cutoff``; this fit learns from that window too, so the
    served model has seen the final days. The dropout process is fitted again on the whole history;
    the interval level and the spend scale are those calibrated in the evaluation (no held-out
    window is left).

    Parameters
    ----------
    tables : Tables
        All the data (nothing after ``plan.last_day``).
    plan : Plan
        The evaluation's plan (:func:`training.training_set.plan_origins`).
    config : Config
        The evaluated configuration, as run (``Evaluation.config``).
    calibrated : LifetimeModel
        The evaluation's lifetime model: its ``interval_level`` and ``spend_scale`` are kept.
    trainer : callable, optional
        As in :func:`evaluate`.

    Returns
    -------
    Refit

    Raises
    ------
    TrainingInputError
        When fewer origins than the validation slice needs remain (cannot happen after a
        successful evaluation, whose origins are earlier), or the BTYD fits are degenerate.
    """
    cfg = config.training
    end = plan.last_day
    label_days = plan.model_horizon_days
    earliest = plan.first_day + pd.Timedelta(days=cfg.min_history_days)
    origins = tuple(
        pd.Timestamp(o)
        for o in training_cutoffs(end.date(), horizon_days=label_days, n_cutoffs=cfg.n_cutoffs, step_days=cfg.step_days)
        if pd.Timestamp(o) >= earliest
    )
    if len(origins) < cfg.validation_cutoffs + 1:
        raise TrainingInputError(f"refit: {len(origins)} training origin(s) before {end.date()}, {cfg.validation_cutoffs + 1} needed")
    if trainer is not None:
        fitted = trainer(tables, origins=origins, horizon_days=label_days, config=config)
        models, origin_rows, n_rows = fitted.models, fitted.origin_rows, fitted.n_rows
    else:
        models, origin_rows, n_rows = _fit_here(tables, origins, label_days, config)
    lifetime = fit_lifetime_model(
        tables, cutoff=end.date(), model_horizon_days=label_days, origins=origins,
        origin_rows=origin_rows, settings=config.lifetime, clv=config.clv,
        time_unit_days=config.features.btyd_time_unit_days, interval_level=calibrated.interval_level,
        spend_scale=calibrated.spend_scale,
    )  # fmt: skip
    btyd = fit_btyd(tables, cutoff=end.date(), config=config.features)
    features = build_features(tables, cutoff=end.date(), config=config.features, btyd=btyd)
    return Refit(models, btyd, lifetime, origins, end, features, n_rows)


def _fit_here(
    tables: Tables, origins, label_days: int, config: Config, seconds: dict[str, float] | None = None
) -> tuple[ClvModels, np.ndarray, int]:
    """The training set of ``origins`` and the boosters, in this process: (models, rows per origin, rows).

    The training rows are built origin by origin into one float32 matrix (:func:`build_training_matrix`)
    and freed once the boosters are fitted: the largest object of a run.
    """
    building = f"building the training set ({len(origins)} origins, horizon {label_days} days)"
    with _step(building, seconds, "training_set"):
        training = _training_matrix(tables, origins, label_days, config)
    with _step(f"fitting churn and spend models on {len(training):,} rows", seconds, "fit"):
        models = ClvModels(training=config.training).fit_matrix(training)
    return models, _origin_rows(training.labels, origins), len(training)


def _training_matrix(tables: Tables, origins, label_days: int, config: Config) -> TrainingMatrix:
    """The training rows of ``origins`` as a float32 matrix, degenerate origins left out (``btyd_offset``)."""
    cfg = config.training
    training = build_training_matrix(
        tables, origins=origins, horizon_days=label_days, config=config.features,
        churn_definition=cfg.churn_definition, exclude_features=cfg.exclude_features,
    )  # fmt: skip
    if len(training) == 0:
        raise TrainingInputError(f"no customer has history at the training origins up to {pd.Timestamp(origins[-1]).date()}")
    if not cfg.btyd_offset:
        return training
    keep = degenerate_rows(
        training.offset_features, training.labels["cutoff"].to_numpy(), needed=cfg.validation_cutoffs + 1,
        btyd=_identified(training, cfg),
    )  # fmt: skip
    return training.rows(keep)


def _identified(training: TrainingMatrix, cfg) -> dict | None:
    """The per-origin fits to test for identification (``training.drop_unidentified_origins``), else None."""
    return training.btyd if cfg.drop_unidentified_origins else None


def _origin_rows(labels: pd.DataFrame, origins) -> np.ndarray:
    """Training rows of each origin, in the order of ``origins`` (0 for an origin left out)."""
    return labels.groupby("cutoff").size().reindex(pd.DatetimeIndex(origins)).fillna(0).to_numpy()


def _reference(features: pd.DataFrame, predictions: pd.DataFrame, models: ClvModels, *, as_of: date, config: Config):
    """Drift reference of the served pair: its features and its H-day predictions (through the curve)."""
    columns = ["churn_probability", "spend_if_active", "expected_spend"]
    return drift_reference(
        features, predictions[columns], importance=models.feature_importance(), as_of=as_of, bins=config.monitor.psi_bins
    )


def _refit_predictions(tables: Tables, refitted: Refit, *, horizon_days: int, config: Config) -> pd.DataFrame:
    """The refitted pair's scores of its reference population: churn probability and spend over H days."""
    features = refitted.features
    pred = refitted.models.predict(features[list(refitted.models.encoder_.columns)])
    curve = refitted.lifetime.curve(
        prepare_history(tables, refitted.data_end.date()),
        churn_probability=pred["churn_probability"].to_numpy(float),
        spend_if_active=pred["spend_if_active"].to_numpy(float),
        horizon_days=horizon_days,
        clv=config.clv,
    )
    return pd.DataFrame(
        {"churn_probability": curve.churn_probability, "spend_if_active": curve.spend_if_active,
         "expected_spend": curve.expected_spend[:, 0]},
        index=features.index,
    )  # fmt: skip


def _serving_artifact(ev: Evaluation, refitted: Refit | None, *, config: Config, feature_set: str, tables: Tables) -> ServingArtifact:
    """What serving needs for the registered pair: the refitted one if any, else the evaluated one."""
    holdout = {m: {k: _json_number(v) for k, v in values.items()} for m, values in ev.metrics.items()}
    common = dict(
        feature_set_id=feature_set,
        feature_config=config.features,
        label_horizon_days=ev.plan.model_horizon_days,
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        holdout_metrics=holdout,
        holdout_cutoff=ev.plan.cutoff.date(),
        config=config,
    )
    if refitted is None:
        return ServingArtifact(
            **common,
            lifetime=ev.lifetime,
            training_cutoff=ev.plan.cutoff.date(),
            training_origins=tuple(o.date() for o in ev.plan.origins),
            btyd_params=ev.btyd,
            drift_reference=_reference(
                ev.holdout_features, ev.predictions["clvcast"], ev.models, as_of=ev.plan.cutoff.date(), config=config
            ),
            **ev.models.metadata(),
        )
    evaluated = ev.models.metadata()
    served = _refit_predictions(tables, refitted, horizon_days=ev.plan.horizon_days, config=config)
    return ServingArtifact(
        **common,
        lifetime=refitted.lifetime,
        training_cutoff=refitted.data_end.date(),
        training_origins=tuple(o.date() for o in refitted.origins),
        btyd_params=refitted.btyd,
        refit=True,
        evaluated=EvaluatedModels(
            churn_model=registry.EVALUATED_CHURN_MODEL,
            spend_model=registry.EVALUATED_SPEND_MODEL,
            training_cutoff=ev.plan.cutoff.date(),
            encoder=evaluated["encoder"],
            calibration=evaluated["calibration"],
            best_iterations=evaluated["best_iterations"],
            btyd_offset=evaluated["btyd_offset"],
            lifetime=ev.lifetime,
        ),
        drift_reference=_reference(
            refitted.features, served, refitted.models, as_of=refitted.data_end.date(), config=config
        ),
        **refitted.models.metadata(),
    )


def _version_tags(ev: Evaluation, serving: ServingArtifact) -> dict[str, str]:
    """Tags of both registered versions: the holdout they were judged on and the data they learnt from."""
    ours = ev.metrics["clvcast"]
    return {
        "feature_set_id": serving.feature_set_id,
        "horizon_days": str(ev.plan.horizon_days),
        "cutoff": str(ev.plan.cutoff.date()),
        **registry.run_mode(serving.config),
        "clvcast.refit": str(serving.refit).lower(),
        "clvcast.data_end": str(serving.training_cutoff),
        "clvcast.holdout_cutoff": str(ev.plan.cutoff.date()),
        **{f"clvcast.holdout_{k}": f"{ours[k]:.6g}" for k in ("mae", "churn_auc", "gini") if np.isfinite(ours.get(k, np.nan))},
    }


def _version_description(ev: Evaluation, serving: ServingArtifact) -> str:
    ours = ev.metrics["clvcast"]
    window = f"({ev.plan.cutoff.date()}, {(ev.plan.cutoff + pd.Timedelta(days=ev.plan.horizon_days)).date()}]"
    judged = (
        f"Judged on the holdout window {window}: expected-spend MAE {ours['mae']:.4g}, churn AUC {ours['churn_auc']:.4g}"
    )
    if serving.refit:
        return (
            f"{judged}, by the pair evaluated there (logged in the run as {registry.EVALUATED_CHURN_MODEL} and "
            f"{registry.EVALUATED_SPEND_MODEL}). This version is the same configuration refitted on origins up to "
            f"{serving.training_cutoff}: it has seen the holdout window, so it has no holdout metrics of its own."
        )
    return f"{judged}. Learnt from data up to {serving.training_cutoff}."


# --------------------------------------------------------------------------- backtest


def backtest(
    source_or_tables: str | Path | Tables,
    *,
    cutoff,
    horizon_days: int | None = None,
    config: Config | None = None,
    log_to_mlflow: bool = True,
    trainer=None,
    sample: CustomerSample | None = None,
) -> dict[str, Any]:
    """Train on data up to ``cutoff`` only and compare clvcast with the baselines over the horizon.

    Nothing is registered; with ``log_to_mlflow`` the comparison is logged as a run tagged
    ``clvcast.kind=backtest`` (params, metrics, plots; no models) in the experiment
    ``clvcast-backtest``, named after the cutoff and horizon, its duration covering the fit.
    ``trainer``: see :func:`evaluate`; ``sample``: see :func:`train`.

    Returns
    -------
    dict
        ``{"customers": n, "total_actual": x, "cutoff": "YYYY-MM-DD", "horizon_days": H,
        "models": {"clvcast": {...}, "btyd": {...}, "naive": {...}}}``, each model with ``mae``,
        ``rmse``, ``gini``, ``spearman``, ``decile_mape``, ``churn_auc``, ``total_predicted``.
        JSON-ready (NaN becomes None).
    """
    started_at = time.time()
    config = config or Config()
    if horizon_days is not None and horizon_days != config.training.horizon_days:
        config = with_overrides(config, horizon_days=horizon_days)
    if cutoff is None:
        raise TrainingInputError("backtest needs a cutoff")
    tables, sample = sampled(_as_tables(source_or_tables), config, sample)
    ev = evaluate(tables, cutoff=cutoff, config=config, trainer=trainer)
    if sample is not None:
        ev.notes.update(sample.tags())
    result = {
        "customers": ev.customers,
        "total_actual": float(ev.actual_spend.sum()),
        "cutoff": str(ev.plan.cutoff.date()),
        "horizon_days": ev.plan.horizon_days,
        "models": {name: {k: _json_number(ev.metrics[name][k]) for k in BACKTEST_METRICS} for name in MODELS},
    }
    result["models"]["clvcast"]["interval_coverage"] = _json_number(ev.metrics["clvcast"]["interval_coverage"])
    result["label_horizon_days"] = ev.plan.model_horizon_days
    if sample is not None:
        result["sample"] = {"sample_customers": sample.requested, "customers_in_book": sample.in_book,
                            "customers_sampled": sample.sampled}  # fmt: skip
    if log_to_mlflow:
        tables_out, figures = _artifacts(ev, tables)
        with _step("logging the backtest to MLflow"):
            run = registry.log_run(
                kind="backtest",
                params=config.to_flat_dict(),
                tags=_tags(tables, ev),
                metrics=_flat_metrics(ev.metrics),
                metrics_json=_metrics_json(ev),
                tables=tables_out,
                figures=figures,
                run_name=run_name("backtest", ev),
                started_at=started_at,
            )
        result["run_id"] = run.run_id
    return result


def _json_number(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# --------------------------------------------------------------------------- reporting


_ROWS = (
    ("mae", "MAE", "{:.2f}"),
    ("rmse", "RMSE", "{:.2f}"),
    ("gini", "Gini", "{:.3f}"),
    ("spearman", "Spearman", "{:.3f}"),
    ("decile_mape", "decile MAPE", "{:.3f}"),
    ("churn_auc", "churn AUC", "{:.3f}"),
    ("total_predicted", "total predicted", "{:,.0f}"),
)


def format_table(models: dict[str, dict[str, Any]], *, total_actual: float | None = None) -> str:
    """Plain-text table, one column per model and one row per metric."""
    names = list(models)
    width = max(12, *(len(n) for n in names))
    lines = ["metric".ljust(16) + "".join(n.rjust(width + 2) for n in names)]
    for key, label, fmt in _ROWS:
        cells = []
        for n in names:
            v = models[n].get(key)
            cells.append(("–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)).rjust(width + 2))
        lines.append(label.ljust(16) + "".join(cells))
    if total_actual is not None:
        lines.append("total actual".ljust(16) + f"{total_actual:,.0f}".rjust(width + 2))
    return "\n".join(lines)


def format_comparison(result: TrainResult) -> str:
    """The short model-vs-baselines table ``clvcast train`` prints, with the registered versions."""
    total = result.metrics["clvcast"].get("total_actual")
    head = f"holdout: {result.customers:,} customers, cutoff {result.cutoff}, horizon {result.horizon_days} days"
    table = format_table(result.metrics, total_actual=total)
    status = "champion" if result.promoted else "not promoted"
    refit = ""
    if result.refit:
        refit = (f"\nrefitted on data up to {result.data_end} after the evaluation: the registered models have also "
                 "learnt the holdout window, so the figures above are those of the models before the refit")
    tail = (
        f"registered clvcast-churn v{result.churn_version}, clvcast-spend v{result.spend_version} "
        f"({status}: {result.reason}){refit}\nrun {result.run_id}"
    )
    lines = [head, table]
    if result.champion_metrics is not None:
        c = result.champion_metrics
        lines.append(f"previous champion on this holdout: MAE {c['mae']:.2f}, churn AUC {c['churn_auc']:.3f}")
    return "\n".join([*lines, tail])


def format_backtest(result: dict[str, Any]) -> str:
    """The table ``clvcast backtest`` prints."""
    head = f"backtest: {result['customers']:,} customers, cutoff {result.get('cutoff')}, horizon {result.get('horizon_days')} days"
    return "\n".join([head, format_table(result["models"], total_actual=result["total_actual"])])
