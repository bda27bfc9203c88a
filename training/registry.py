"""MLflow: runs, the model registry and the ``champion`` alias. The only module that imports mlflow.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlruns/mlflow.db`` with
artifacts under ``<cwd>/mlruns/artifacts``. A database store other than sqlite (e.g.
``postgresql+psycopg://user:password@host/db``) keeps the artifacts under
``<cwd>/mlruns/artifacts`` too; ``CLVCAST_ARTIFACT_ROOT`` (a path or URI) puts them elsewhere, for
any store. The location is fixed when the ``clvcast`` experiment is created, and MLflow keeps it
with the experiment. Nothing is set up at import time: the URI is resolved, and the store created,
when a function here is called.

What a training run holds
-------------------------
- params: the whole :class:`~training.config.Config`, flattened;
- tags: data fingerprint (``data.hash``, row counts, date range), cutoffs, ``clvcast.kind``;
- metrics: holdout metrics per model, prefixed ``clvcast_``, ``btyd_``, ``naive_`` (and
  ``champion_`` for the current champion scored on this run's holdout);
- artifacts: ``metrics.json``, tables (``tables/*.csv``), plots (``plots/*.png``), and
  ``clvcast/serving.json`` with everything serving needs to rebuild features and predict
  identically (feature config and feature_set_id, category levels, calibration map, BTYD
  parameters fitted at the training cutoff, horizon, holdout metrics);
- models ``churn`` and ``spend`` (LightGBM flavour, skops), with signature, input example and
  explicit pip requirements.

Champion rule
-------------
Registered models ``clvcast-churn`` and ``clvcast-spend`` get a new version for every successful
training run; each version is tagged ``clvcast.status`` = ``champion`` or ``rejected`` with
``clvcast.reason`` (a replaced champion becomes ``superseded``). The ``champion`` alias of *both*
moves to the new pair when

1. there is no champion yet; or
2. the current champion, re-scored on the new run's holdout (same customers, same cutoff, same
   labels; features rebuilt with the champion's own feature config), is not better: new
   expected-spend MAE <= champion MAE × 1.01 and new churn AUC >= champion AUC − 0.005
   (:func:`champion_decision`); or
3. the current champion cannot be used by this code at all (its feature set no longer matches the
   feature code, or its two versions come from different runs): serving would refuse it anyway.

The new pair is judged by its evaluated models (trained up to the holdout cutoff). A promoted pair
is then refitted on origins up to the last day of the data and that pair is registered
(:func:`training.pipeline.refit`); its run also logs the evaluated pair
(:data:`EVALUATED_CHURN_MODEL`, :data:`EVALUATED_SPEND_MODEL`). So that the rule compares like
with like, the champion is re-scored by a pair of its configuration that has not seen the new
holdout window: its served pair when the data it learnt from end on or before the new cutoff,
else its evaluated pair (:func:`load_evaluated_models`); when neither qualifies the runs are not
comparable and the champion is kept unless promotion is forced.

A champion with another horizon is not comparable on the same labels: the new pair is rejected
unless promotion is forced (``train(..., promote="force")``). A failed run registers nothing; a
rejected run registers its versions (for inspection and manual :func:`promote`) but never touches
the alias. :func:`load_champion` refuses a pair that does not come from one run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.btyd import BTYDParams
from features.config import FeatureConfig
from features.schema import feature_set_id
from training.artifact import SERVING_FORMAT_VERSION, ServingArtifact
from training.models import ClvModels, FeatureEncoder

log = logging.getLogger(__name__)

EXPERIMENT = "clvcast"
CHURN_MODEL = "clvcast-churn"
SPEND_MODEL = "clvcast-spend"
ALIAS = "champion"
SERVING_ARTIFACT = "clvcast/serving.json"
ARTIFACT_ROOT_ENV = "CLVCAST_ARTIFACT_ROOT"
"""Environment variable: where a new ``clvcast`` experiment keeps its artifacts (path or URI)."""
# Database backend stores MLflow supports besides sqlite (the dialect part of a SQLAlchemy URL).
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")

# "Not worse" allows for the noise of retraining on slightly different data: a new pair may be up
# to 1% worse on expected-spend MAE and 0.005 worse on churn AUC than the champion on the same rows.
MAE_RELATIVE_TOLERANCE = 0.01
AUC_ABSOLUTE_TOLERANCE = 0.005

_PIP_PACKAGES = ("lightgbm", "scikit-learn", "skops", "numpy", "pandas", "scipy")


class ChampionError(LookupError):
    """No usable champion: missing, from different runs, or incompatible with this code."""


# --------------------------------------------------------------------------- store


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite store under ``./mlruns``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').as_posix()}"


def _default_artifact_location(uri: str) -> str | None:
    """Where a new ``clvcast`` experiment of the store at ``uri`` keeps its artifacts.

    :data:`ARTIFACT_ROOT_ENV` if set; else beside a sqlite store (``<dir>/artifacts``); else, for
    the other database stores, ``<cwd>/mlruns/artifacts`` (MLflow's own default would be
    ``<cwd>/mlruns/<experiment id>``, beside whatever else is in ``mlruns``); else ``None``: a
    tracking server decides.
    """
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if root:
        return root if "://" in root or root.startswith("file:") else Path(root).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    if uri.split(":", 1)[0].split("+", 1)[0].lower() in _DATABASE_SCHEMES:
        return (Path.cwd() / "mlruns" / "artifacts").resolve().as_uri()
    return None


def _client():
    """An ``MlflowClient`` on :func:`tracking_uri`, with the fluent API pointed at the same store."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    # The fluent API (start_run, log_model) reads a process-wide URI; set here, on use, never at import.
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=_default_artifact_location(tracking_uri()))


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class LoggedRun:
    """A finished MLflow run and the URIs of its logged models (``None`` for a backtest)."""

    run_id: str
    churn_model_uri: str | None = None
    spend_model_uri: str | None = None
    churn_model_id: str | None = None
    spend_model_id: str | None = None


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged models: what loading and predicting them needs."""
    return [f"{name}=={importlib_metadata.version(name)}" for name in _PIP_PACKAGES]


def log_run(
    *,
    kind: str,
    params: dict[str, Any],
    tags: dict[str, str],
    metrics: dict[str, float],
    metrics_json: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    figures: dict[str, Any],
    models: ClvModels | None = None,
    serving: ServingArtifact | None = None,
    input_example: pd.DataFrame | None = None,
    run_name: str | None = None,
    evaluated_models: ClvModels | None = None,
) -> LoggedRun:
    """Log one run; with ``models``, also both boosters and the serving metadata.

    The run is marked FAILED (and the exception re-raised) if anything in here fails, so a
    half-logged run is never mistaken for a good one. Nothing is registered here: see
    :func:`register_pair`.

    Parameters
    ----------
    kind : {"train", "backtest"}
        Stored as tag ``clvcast.kind``.
    params : dict
        Flat config (``Config.to_flat_dict()``).
    tags : dict
        Data fingerprint and cutoffs.
    metrics : dict
        Flat metric name → value; NaN values are skipped (MLflow stores them but they sort badly).
    metrics_json : dict
        Nested metrics written as ``metrics.json``.
    tables : dict of str to DataFrame
        Written as ``tables/<name>.csv``.
    figures : dict of str to matplotlib Figure
        Written as ``plots/<name>.png``.
    models : ClvModels, optional
        Fitted models to log as ``churn`` and ``spend``.
    serving : ServingArtifact, optional
        Written as :data:`SERVING_ARTIFACT`.
    input_example : DataFrame, optional
        A few raw feature rows, encoded before logging; required with ``models``.
    evaluated_models : ClvModels, optional
        With a refitted ``models``: the pair evaluated on the holdout, logged as
        :data:`EVALUATED_CHURN_MODEL` and :data:`EVALUATED_SPEND_MODEL` (not registered).
    """
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    client = _client()
    experiment_id = _experiment_id(client)
    logged = {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({"clvcast.kind": kind, **tags})
        # MLflow caps a param value at 6000 characters and a batch at 100 params.
        items = [(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        mlflow.log_metrics(finite)
        mlflow.log_dict(metrics_json, "metrics.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, frame in tables.items():
                path = Path(tmp) / f"{name}.csv"
                frame.to_csv(path)
                mlflow.log_artifact(str(path), artifact_path="tables")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        if models is not None:
            if input_example is None:
                raise ValueError("log_run: input_example is required with models")
            example = models.transform(input_example)
            requirements = pip_requirements()
            meta = {"feature_set_id": serving.feature_set_id if serving else "", "horizon_days": models.horizon_days_}
            churn_info = mlflow.lightgbm.log_model(
                models.churn_model_,
                name="churn",
                signature=infer_signature(example, models.churn_model_.predict(example)),
                input_example=example,
                pip_requirements=requirements,
                metadata=meta,
            )
            spend_info = mlflow.lightgbm.log_model(
                models.spend_model_,
                name="spend",
                signature=infer_signature(example, models.spend_model_.predict(example)),
                input_example=example,
                pip_requirements=requirements,
                metadata=meta,
            )
            logged = dict(
                churn_model_uri=churn_info.model_uri,
                spend_model_uri=spend_info.model_uri,
                churn_model_id=churn_info.model_id,
                spend_model_id=spend_info.model_id,
            )
            if evaluated_models is not None:
                _log_evaluated_pair(evaluated_models, input_example, requirements, meta)
        if serving is not None:
            mlflow.log_dict(serving.model_dump(mode="json"), SERVING_ARTIFACT)
        return LoggedRun(run_id=run.info.run_id, **logged)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


# --------------------------------------------------------------------------- champion


@dataclass(frozen=True)
class Champion:
    """The current champion pair and everything serving needs to use it.

    Attributes
    ----------
    models : ClvModels
        Boosters (loaded through the ``mlflow.lightgbm`` flavour), encoder and calibration.
    churn_version, spend_version : str
        Registered versions of ``clvcast-churn`` and ``clvcast-spend``.
    run_id : str
        The training run both come from.
    serving : ServingArtifact
        The run's :data:`SERVING_ARTIFACT`.
    tracking_uri : str
        Where it was loaded from.
    """

    models: ClvModels
    churn_version: str
    spend_version: str
    run_id: str
    serving: ServingArtifact = field(repr=False)
    tracking_uri: str = ""

    @property
    def feature_set_id(self) -> str:
        return self.serving.feature_set_id

    @property
    def feature_config(self) -> FeatureConfig:
        """The feature settings the models were trained with."""
        return self.serving.feature_config

    @property
    def btyd_params(self) -> BTYDParams:
        """BTYD parameters fitted at the training cutoff."""
        return self.serving.btyd_params

    @property
    def horizon_days(self) -> int:
        return self.serving.horizon_days

    @property
    def training_cutoff(self) -> str:
        return self.serving.training_cutoff.isoformat()

    @property
    def trained_at(self) -> str:
        return self.serving.trained_at

    @property
    def holdout_metrics(self) -> dict[str, Any]:
        return self.serving.holdout_metrics

    def describe(self) -> dict[str, Any]:
        """Versions, training date and holdout metrics (for ``GET /model``)."""
        return {
            "churn_model": {"name": CHURN_MODEL, "version": self.churn_version},
            "spend_model": {"name": SPEND_MODEL, "version": self.spend_version},
            "run_id": self.run_id,
            "feature_set_id": self.feature_set_id,
            "horizon_days": self.horizon_days,
            "training_cutoff": self.training_cutoff,
            "trained_at": self.trained_at,
            "holdout_metrics": self.holdout_metrics,
        }


def load_champion(*, check_compatible: bool = True) -> Champion:
    """Load the ``champion`` versions of ``clvcast-churn`` and ``clvcast-spend``.

    Parameters
    ----------
    check_compatible : bool, default True
        Also check that this code's ``feature_set_id`` of the champion's feature config is the one
        the champion was trained with, i.e. that serving would build the same features.

    Raises
    ------
    ChampionError
        A champion is missing, the two come from different runs or feature sets (serving would
        combine a churn model and a spend model that never saw the same features), the serving
        metadata is missing or of an unknown format, or the feature code changed since training.
        The message names the model and the tracking URI.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    uri = tracking_uri()
    versions = {}
    for name in (CHURN_MODEL, SPEND_MODEL):
        try:
            versions[name] = client.get_model_version_by_alias(name, ALIAS)
        except MlflowException as exc:
            raise ChampionError(
                f"no '{ALIAS}' version of registered model '{name}' at {uri}: train one with `clvcast train`"
            ) from exc
    churn_v, spend_v = versions[CHURN_MODEL], versions[SPEND_MODEL]
    if _run_of(churn_v) != _run_of(spend_v):
        raise ChampionError(
            f"'{CHURN_MODEL}' v{churn_v.version} (run {_run_of(churn_v)}) and '{SPEND_MODEL}' v{spend_v.version} "
            f"(run {_run_of(spend_v)}) at {uri} come from different training runs; their features may differ, "
            "so they cannot be combined into expected spend"
        )
    serving = _load_serving(client, _run_of(churn_v), uri)
    if check_compatible:
        check_serving_compatible(serving, where=f"'{CHURN_MODEL}' v{churn_v.version} at {uri}")
    models = _load_models(churn_v, spend_v, serving, uri)
    return Champion(
        models=models,
        churn_version=str(churn_v.version),
        spend_version=str(spend_v.version),
        run_id=_run_of(churn_v),
        serving=serving,
        tracking_uri=uri,
    )


def _run_of(version) -> str | None:
    """The training run of a registered version (our tag first: it is set on every clvcast version)."""
    return version.tags.get("clvcast.run_id") or version.run_id


def _load_serving(client, run_id: str, uri: str) -> ServingArtifact:
    from mlflow.exceptions import MlflowException
    from pydantic import ValidationError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, SERVING_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise ChampionError(f"run {run_id} at {uri} has no {SERVING_ARTIFACT}: not a clvcast training run") from exc
        data = json.loads(Path(path).read_text())
    if data.get("format_version") != SERVING_FORMAT_VERSION:
        raise ChampionError(
            f"run {run_id} at {uri}: {SERVING_ARTIFACT} has format_version {data.get('format_version')!r}, "
            f"this code reads {SERVING_FORMAT_VERSION}"
        )
    try:
        return ServingArtifact.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ChampionError(
            f"run {run_id} at {uri}: {SERVING_ARTIFACT} is not readable by this code "
            f"({'.'.join(map(str, first['loc']))}: {first['msg']}); retrain"
        ) from None


def check_serving_compatible(serving: ServingArtifact, *, where: str) -> None:
    """Raise :class:`ChampionError` if this code would build other features than the champion saw."""
    current = feature_set_id(serving.feature_config)
    if current != serving.feature_set_id:
        raise ChampionError(
            f"{where} was trained on feature set {serving.feature_set_id}, but this code builds "
            f"{current} from the same settings: the feature code changed since training; retrain"
        )


def _load_models(churn_v, spend_v, serving: ServingArtifact, uri: str) -> ClvModels:
    import mlflow.lightgbm
    from mlflow.exceptions import MlflowException

    loaded = {}
    for name, version in ((CHURN_MODEL, churn_v), (SPEND_MODEL, spend_v)):
        try:
            # A fixed version, not the alias: the alias could move between the two loads.
            loaded[name] = mlflow.lightgbm.load_model(f"models:/{name}/{version.version}")
        except (MlflowException, OSError) as exc:
            raise ChampionError(f"cannot load '{name}' v{version.version} at {uri}: {exc}") from exc
    calibration = serving.calibration
    return ClvModels.from_parts(
        encoder=FeatureEncoder(serving.encoder.columns, serving.encoder.categories),
        churn_model=loaded[CHURN_MODEL],
        spend_model=loaded[SPEND_MODEL],
        calibration=None if calibration is None else (calibration.x, calibration.y),
        horizon_days=serving.horizon_days,
        btyd_offset=serving.btyd_offset,
    )


@dataclass(frozen=True)
class Decision:
    """Whether a new pair becomes champion, and why (stored as version tags)."""

    promote: bool
    reason: str


def champion_decision(new: dict[str, float], current: dict[str, float] | None) -> Decision:
    """The champion rule.

    The new pair becomes champion iff there is no current champion, or on the new run's holdout
    rows (the current champion re-scored on exactly those customers, features and labels)

    - expected-spend MAE: ``new <= current * (1 + MAE_RELATIVE_TOLERANCE)``, and
    - churn AUC: ``new >= current - AUC_ABSOLUTE_TOLERANCE``.

    Parameters
    ----------
    new, current : dict
        ``{"mae": ..., "churn_auc": ...}`` of the new pair and of the current champion.
    """
    if current is None:
        return Decision(True, "no current champion")
    mae_ok = new["mae"] <= current["mae"] * (1 + MAE_RELATIVE_TOLERANCE)
    auc_ok = not (new["churn_auc"] < current["churn_auc"] - AUC_ABSOLUTE_TOLERANCE)
    detail = (
        f"MAE {new['mae']:.4f} vs champion {current['mae']:.4f}, "
        f"churn AUC {new['churn_auc']:.4f} vs champion {current['churn_auc']:.4f} on the same holdout"
    )
    if mae_ok and auc_ok:
        return Decision(True, f"not worse than the champion: {detail}")
    return Decision(False, f"worse than the champion: {detail}")


@dataclass(frozen=True)
class Registration:
    """Versions created for one run and whether they became champion."""

    churn_version: str
    spend_version: str
    promoted: bool
    reason: str


def register_pair(run: LoggedRun, decision: Decision, *, tags: dict[str, str] | None = None) -> Registration:
    """Register both models of ``run``; move the ``champion`` alias to them iff ``decision.promote``.

    Both versions are registered either way, tagged ``clvcast.status`` (``champion`` or
    ``rejected``) and ``clvcast.reason``, so a rejected candidate stays inspectable and can be
    promoted by hand (:func:`promote`).
    """
    from mlflow.exceptions import MlflowException

    if run.churn_model_uri is None or run.spend_model_uri is None:
        raise ValueError(f"run {run.run_id} has no logged models to register")
    client = _client()
    status = "champion" if decision.promote else "rejected"
    common = {"clvcast.run_id": run.run_id, "clvcast.status": status, "clvcast.reason": decision.reason[:5000], **(tags or {})}
    versions = []
    for name, uri, model_id in (
        (CHURN_MODEL, run.churn_model_uri, run.churn_model_id),
        (SPEND_MODEL, run.spend_model_uri, run.spend_model_id),
    ):
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = client.create_model_version(name, uri, run_id=run.run_id, tags=common, model_id=model_id)
        versions.append(str(version.version))
    if decision.promote:
        promote(*versions)
    return Registration(versions[0], versions[1], decision.promote, decision.reason)


def promote(churn_version: str, spend_version: str) -> None:
    """Point the ``champion`` alias of both registered models at the given versions.

    Refuses versions from different runs. The spend alias moves first: if the process dies in
    between, :func:`load_champion` sees two runs and refuses, rather than serving a mixed pair.
    """
    client = _client()
    churn = client.get_model_version(CHURN_MODEL, churn_version)
    spend = client.get_model_version(SPEND_MODEL, spend_version)
    if _run_of(churn) is None or _run_of(churn) != _run_of(spend):
        raise ChampionError(
            f"'{CHURN_MODEL}' v{churn_version} and '{SPEND_MODEL}' v{spend_version} come from different runs"
        )
    previous = champion_versions()
    client.set_registered_model_alias(SPEND_MODEL, ALIAS, spend_version)
    client.set_registered_model_alias(CHURN_MODEL, ALIAS, churn_version)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name, version in ((CHURN_MODEL, churn_version), (SPEND_MODEL, spend_version)):
        client.set_model_version_tag(name, version, "clvcast.status", "champion")
        client.set_model_version_tag(name, version, "clvcast.promoted_at", now)
    if previous is not None:
        for name, old, new in zip((CHURN_MODEL, SPEND_MODEL), previous, (churn_version, spend_version)):
            if old != new:
                client.set_model_version_tag(name, old, "clvcast.status", "superseded")


def champion_versions() -> tuple[str, str] | None:
    """(churn, spend) champion versions, or ``None`` when either alias is missing. Reads only."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return (
            str(client.get_model_version_by_alias(CHURN_MODEL, ALIAS).version),
            str(client.get_model_version_by_alias(SPEND_MODEL, ALIAS).version),
        )
    except MlflowException:
        return None


def registry_snapshot() -> dict[str, dict[str, Any]]:
    """Versions (with their status tag) and aliases of both registered models. Reads only."""
    from mlflow.exceptions import MlflowException

    client = _client()
    out: dict[str, dict[str, Any]] = {}
    for name in (CHURN_MODEL, SPEND_MODEL):
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            out[name] = {"versions": {}, "aliases": {}}
            continue
        versions = client.search_model_versions(f"name='{name}'")
        out[name] = {
            "versions": {str(v.version): v.tags.get("clvcast.status", "") for v in versions},
            "aliases": {alias: str(version) for alias, version in model.aliases.items()},
        }
    return out


# --------------------------------------------------------------------------- lifecycle and monitoring
#
# The refit lifecycle (a refitted pair served, its evaluated pair kept in the same run for the next
# champion comparison) and the monitor runs of ``clvcast monitor``.

#: Names of the evaluated pair in a run whose registered pair was refitted (``runs:/<run_id>/<name>``).
EVALUATED_CHURN_MODEL = "churn_evaluated"
EVALUATED_SPEND_MODEL = "spend_evaluated"


def _log_evaluated_pair(models: ClvModels, input_example: pd.DataFrame, requirements: list[str], meta: dict) -> None:
    """Log the evaluated boosters into the active run (inside :func:`log_run`)."""
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    example = models.transform(input_example)
    for name, booster in ((EVALUATED_CHURN_MODEL, models.churn_model_), (EVALUATED_SPEND_MODEL, models.spend_model_)):
        mlflow.lightgbm.log_model(
            booster,
            name=name,
            signature=infer_signature(example, booster.predict(example)),
            input_example=example,
            pip_requirements=requirements,
            metadata=meta,
        )


def load_evaluated_models(champion: Champion) -> ClvModels:
    """The evaluated pair of a refitted champion, as it was judged on its holdout.

    Raises
    ------
    ChampionError
        The champion was not refitted (it is its own evaluated pair), or the pair cannot be loaded.
    """
    import mlflow.lightgbm
    from mlflow.exceptions import MlflowException

    evaluated = champion.serving.evaluated
    if evaluated is None:
        raise ChampionError(f"champion run {champion.run_id} has no evaluated pair: its served pair is the evaluated one")
    _client()
    loaded = {}
    for name in (evaluated.churn_model, evaluated.spend_model):
        try:
            loaded[name] = mlflow.lightgbm.load_model(f"runs:/{champion.run_id}/{name}")
        except (MlflowException, OSError) as exc:
            raise ChampionError(f"cannot load {name} of run {champion.run_id} at {tracking_uri()}: {exc}") from exc
    calibration = evaluated.calibration
    return ClvModels.from_parts(
        encoder=FeatureEncoder(evaluated.encoder.columns, evaluated.encoder.categories),
        churn_model=loaded[evaluated.churn_model],
        spend_model=loaded[evaluated.spend_model],
        calibration=None if calibration is None else (calibration.x, calibration.y),
        horizon_days=champion.horizon_days,
        btyd_offset=evaluated.btyd_offset,
    )


def describe_versions(registration: Registration, description: str) -> None:
    """Set the description of both registered versions of a run (shown in the MLflow UI)."""
    client = _client()
    for name, version in ((CHURN_MODEL, registration.churn_version), (SPEND_MODEL, registration.spend_version)):
        client.update_model_version(name, version, description=description)


def load_serving_artifact(run_id: str) -> ServingArtifact | None:
    """The :data:`SERVING_ARTIFACT` of a training run, or ``None`` when the run or its artifact is missing.

    Monitoring reads the drift reference, feature settings and holdout metrics of the models
    behind a scoring with it; a scoring of models from another store is then reported, not an error.
    """
    client = _client()
    try:
        return _load_serving(client, run_id, tracking_uri())
    except ChampionError as exc:
        log.warning("%s", exc)
        return None


def log_monitor_run(
    *,
    as_of: str,
    churn_version: str,
    spend_version: str,
    model_run_id: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    summary: dict[str, Any],
    report: Path | None = None,
) -> str:
    """Log one ``clvcast monitor`` run against the model versions that made the latest scoring.

    A run tagged ``clvcast.kind=monitor`` in the ``clvcast`` experiment holds the metrics (NaN
    skipped), ``summary.json`` and the report; the same metrics are logged on the two versions'
    logged models (MLflow's model metrics, shown on each model's page), and both registered
    versions get the tags ``clvcast.monitor.run_id``, ``clvcast.monitor.as_of`` and
    ``clvcast.monitor.alerts``.

    Returns
    -------
    str
        The run id.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client()
    experiment_id = _experiment_id(client)
    finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    versions = []
    for name, version in ((CHURN_MODEL, churn_version), (SPEND_MODEL, spend_version)):
        try:
            versions.append((name, client.get_model_version(name, version)))
        except MlflowException:
            log.warning("'%s' v%s is not in the registry at %s: monitor metrics logged on the run only", name, version, tracking_uri())
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor {as_of}") as run:
        mlflow.set_tags({
            "clvcast.kind": "monitor", "as_of": as_of, "churn_model_version": churn_version,
            "spend_model_version": spend_version, "model_run_id": model_run_id, **tags,
        })  # fmt: skip
        mlflow.log_metrics(finite)
        for _, version in versions:
            if getattr(version, "model_id", None):
                mlflow.log_metrics(finite, model_id=version.model_id)
        mlflow.log_dict(summary, "summary.json")
        if report is not None:
            mlflow.log_artifact(str(report))
    for name, version in versions:
        for key, value in (("clvcast.monitor.run_id", run.info.run_id), ("clvcast.monitor.as_of", as_of),
                           ("clvcast.monitor.alerts", tags.get("alerts", ""))):  # fmt: skip
            client.set_model_version_tag(name, version.version, key, value)
    return run.info.run_id
