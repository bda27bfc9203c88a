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
training run; each version is tagged ``clvcast.status`` = ``candidate`` (until its promotion
completes), ``champion`` or ``rejected`` with ``clvcast.reason`` (a replaced champion becomes
``superseded``). The ``champion`` alias of *both* moves to the new pair when

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

A champion with another horizon, business mode or churn definition (:func:`mode_decision`: a
churn AUC against "no purchase" says nothing of a model of "cancels") is not comparable on the same
labels: the new pair is rejected unless promotion is forced (``clvcast train --promote force``,
``train(..., promote="force")``). A
failed run registers nothing; a rejected run registers its versions (for inspection and manual
:func:`promote`) but never touches the alias. :func:`load_champion` refuses a pair that does not
come from one run. When the champion in effect cannot be loaded, the rule compares with
:func:`last_good_champion`.

Crashes and races
-----------------
Champion changes happen under a store-wide lock that dies with its process (see the invariant
above :func:`register_pair`, :func:`_store_lock`), with one commit point (the experiment tag
:data:`PROMOTION_TAG`) that :func:`check_registry` completes after a crash. Store creation runs
under a lock too, and reads never create a store (:class:`StoreError`). Each training run holds
a lock named by its :data:`OWNER_TAG` while it is open, so a ``RUNNING`` run whose lock is free was
abandoned. ``CLVCAST_TEST_KILL_AFTER`` and ``CLVCAST_TEST_PAUSE_AFTER`` are test hooks
(:func:`_test_hook`), inert unless set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
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
from training.diagnostics import TABLES as DIAGNOSTIC_TABLES, read_table
from training.lifetime import LifetimeModel
from training.models import ClvModels, FeatureEncoder

log = logging.getLogger(__name__)

EXPERIMENT = "clvcast"
BACKTEST_EXPERIMENT = "clvcast-backtest"
"""Experiment of the backtest runs, apart from the trainings whose models are registered."""
CHURN_MODEL = "clvcast-churn"
SPEND_MODEL = "clvcast-spend"
ALIAS = "champion"
SERVING_ARTIFACT = "clvcast/serving.json"
ARTIFACT_ROOT_ENV = "CLVCAST_ARTIFACT_ROOT"
"""Environment variable: where a new ``clvcast`` experiment keeps its artifacts (path or URI)."""
PROMOTION_TAG = "clvcast.promotion"
"""Experiment tag: the champion change in progress (its commit point), removed once complete."""
OWNER_TAG = "clvcast.owner"
"""Run tag: the token of the lock its process holds while the run is open (stale-run detection)."""
MODELS_TAG = "clvcast.models"
"""Run tag: URIs and ids of the run's logged models (to complete a half-registered pair)."""
LOCK_TIMEOUT_S = 600.0
"""Seconds to wait for another process's registration or store creation before giving up."""
KILL_AFTER_ENV = "CLVCAST_TEST_KILL_AFTER"
"""Test hook (see :func:`_test_hook`): SIGKILL this process after the named step."""
PAUSE_AFTER_ENV = "CLVCAST_TEST_PAUSE_AFTER"
"""Test hook (see :func:`_test_hook`): ``<step>=<seconds>`` pauses after the named step."""
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


class StoreError(RuntimeError):
    """The MLflow store cannot be used: missing, unreachable, damaged, or locked for too long.

    The message is one line that names the store (without its password) and the real cause.
    """


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite store under ``./mlruns``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').as_posix()}"


def display_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


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
    if _scheme(uri) in _DATABASE_SCHEMES:
        return (Path.cwd() / "mlruns" / "artifacts").resolve().as_uri()
    return None


def _scheme(uri: str) -> str:
    """The dialect part of a SQLAlchemy URL (``postgresql`` of ``postgresql+psycopg://``), or the scheme."""
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


# Stores this process has opened (checked, created or migrated): later calls skip the checks.
_OPENED: set[str] = set()


def _client(*, create: bool = False):
    """An ``MlflowClient`` on :func:`tracking_uri`, with the fluent API pointed at the same store.

    Parameters
    ----------
    create : bool, default False
        Create the store when it does not exist (training). Reads never do: a missing store is a
        :class:`StoreError`, so a mistyped path does not silently become an empty store.

    Raises
    ------
    StoreError
        The store is missing (and ``create`` is false), unreachable or damaged.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri not in _OPENED:
        _open_store(uri, create=create)
        _OPENED.add(uri)
    # The fluent API (start_run, log_model) reads a process-wide URI; set here, on use, never at import.
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _open_store(uri: str, *, create: bool) -> None:
    """Check that the store exists (or create it, one process at a time) and that MLflow can open it.

    Two processes that create the same store at once would both run MLflow's schema migration and
    one fails ("duplicate column name"): creation runs under the store's lock, and whoever comes
    second finds the tables made.
    """
    from mlflow import MlflowClient

    db = _sqlite_path(uri)
    if db is not None:
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.is_file() or db.stat().st_size == 0:
            raise StoreError(
                f"no MLflow store at {db} (MLFLOW_TRACKING_URI={uri}): nothing to read there; "
                "`clvcast train` creates one, or point MLFLOW_TRACKING_URI at an existing store"
            )
        else:
            _check_sqlite_file(db, uri)
    elif _scheme(uri) in _DATABASE_SCHEMES and not create:
        _check_database_tables(uri)

    def touch() -> None:
        # Opening both stores runs MLflow's schema creation or migration, if any is due.
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)

    try:
        if create:
            with _store_lock(uri, "create"):
                touch()
        else:
            touch()
    except StoreError:
        raise
    except Exception as exc:  # whatever the driver raised: one line naming the store and the cause
        raise StoreError(f"MLflow store {display_uri(uri)} cannot be opened: {root_cause(exc)}") from exc


def _check_sqlite_file(db: Path, uri: str) -> None:
    """Refuse a file that is not a readable sqlite database holding MLflow's tables (read-only)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"MLflow store {db} is not usable: {exc} (MLFLOW_TRACKING_URI={uri})") from exc
    if "alembic_version" not in tables:
        raise StoreError(
            f"{db} is a sqlite database without MLflow's tables (MLFLOW_TRACKING_URI={uri}): "
            "not an MLflow store; `clvcast train` creates one at a new path"
        )


def _check_database_tables(uri: str) -> None:
    """Refuse a database server store that is unreachable or has no MLflow tables (reads only)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as con:
            has_tables = sqlalchemy.inspect(con).has_table("alembic_version")
    except Exception as exc:  # the driver's own error types: one line with the cause
        raise StoreError(f"MLflow store {display_uri(uri)} cannot be reached: {root_cause(exc)}") from exc
    finally:
        engine.dispose()
    if not has_tables:
        raise StoreError(
            f"MLflow store {display_uri(uri)} has no MLflow tables: nothing to read there; "
            "`clvcast train` creates them"
        )


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost cause of ``exc`` (drivers wrap their errors several times)."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    orig = getattr(exc, "orig", None)  # SQLAlchemy keeps the driver's exception here
    text = str(orig if orig is not None else exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Turn a database failure inside MLflow into a :class:`StoreError` naming the store and the cause."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StoreError(f"MLflow store {display_uri(uri)}: {root_cause(exc)}") from exc
    except MlflowException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error)):
            raise StoreError(f"MLflow store {display_uri(uri)}: {root_cause(exc)}") from exc
        raise


def _experiment_id(client, name: str = EXPERIMENT) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_default_artifact_location(tracking_uri()))
    except MlflowException as exc:
        # Another process created it between the two calls.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        log.debug("experiment %s created by another process: %s", name, exc)
        return exp.experiment_id


def _start_run(client, experiment_id: str, *, run_name: str | None, tags: dict[str, str], started_at: float | None):
    """``mlflow.start_run`` of a new run whose start time is ``started_at`` (seconds since the epoch).

    The fluent API starts a run now; a training logs once its models are fitted, and its run's
    duration should cover the fit. The run gets the tags the fluent API would add (user, source).
    """
    import mlflow
    from mlflow.tracking.context.registry import resolve_tags

    start_ms = None if started_at is None else int(started_at * 1000)
    created = client.create_run(experiment_id, start_time=start_ms, tags=resolve_tags(tags), run_name=run_name)
    return mlflow.start_run(run_id=created.info.run_id)


# --------------------------------------------------------------------------- locks


def _lock_key(name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, the same in every process."""
    return int.from_bytes(hashlib.sha256(f"clvcast:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _store_lock(uri: str, name: str, *, timeout: float | None = None, blocking: bool = True) -> Iterator[bool]:
    """Hold the store-wide lock ``name`` for the block; yields whether it was taken.

    The lock belongs to the process, not to a file or a row that someone must clean up: on sqlite
    an ``flock`` of ``<db>.<name>.lock`` (the ``filelock`` library), on PostgreSQL a session-level
    advisory lock on a connection of its own. The kernel, or the server when the connection
    drops, releases it when the process dies, even by SIGKILL, so a crash never leaves a lock that
    blocks for ever. Other stores (a tracking server, MySQL) get no lock: concurrent champion
    changes are then not serialised, and a warning says so.

    Parameters
    ----------
    uri : str
        Tracking URI.
    name : str
        Which lock (``registry``, ``create``, ``run-<token>``).
    timeout : float, optional
        Seconds to wait when ``blocking``; default :data:`LOCK_TIMEOUT_S`.
    blocking : bool
        Wait for the lock; otherwise yield ``False`` at once when another process holds it.

    Raises
    ------
    StoreError
        Still held by another process after ``timeout`` seconds.
    """
    wait = LOCK_TIMEOUT_S if timeout is None else timeout
    db = _sqlite_path(uri)
    if db is not None:
        import filelock

        db.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(f"{db}.{name}.lock", timeout=wait if blocking else 0)
        try:
            lock.acquire()
        except filelock.Timeout:
            if not blocking:
                yield False
                return
            raise StoreError(
                f"MLflow store {db}: lock '{name}' still held by another process after {wait:.0f} s"
            ) from None
        try:
            yield True
        finally:
            lock.release()
        return
    if _scheme(uri) != "postgresql":
        if name == "registry":
            log.warning("MLflow store %s: no lock for this kind of store; champion changes are not serialised",
                        display_uri(uri))
        yield True
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = _lock_key(name)
    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
            deadline = time.monotonic() + wait
            try_lock = sqlalchemy.text("select pg_try_advisory_lock(:k)")
            while not con.execute(try_lock, {"k": key}).scalar():
                if not blocking:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"MLflow store {display_uri(uri)}: lock '{name}' still held by another process "
                        f"after {wait:.0f} s"
                    )
                time.sleep(0.05)
            try:
                yield True
            finally:
                con.execute(sqlalchemy.text("select pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def _test_hook(step: str) -> None:
    """Test hook: die by SIGKILL, or pause, right after the named step. Inert unless set.

    ``CLVCAST_TEST_KILL_AFTER=<step>`` kills this process (no cleanup runs, as in a power cut or
    an OOM kill); ``CLVCAST_TEST_PAUSE_AFTER=<step>=<seconds>`` sleeps, to stretch a race. The
    crash and race tests use them; nothing else should set them.
    """
    if os.environ.get(KILL_AFTER_ENV) == step:
        log.warning("test hook: killing this process after step %r", step)
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_AFTER_ENV, "")
    if pause.rpartition("=")[0] == step:
        time.sleep(float(pause.rpartition("=")[2]))


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
    started_at: float | None = None,
) -> LoggedRun:
    """Log one run; with ``models``, also both boosters and the serving metadata.

    The run is marked FAILED (and the exception re-raised) if anything in here fails, so a
    half-logged run is never mistaken for a good one. Nothing is registered here: see
    :func:`register_pair`.

    Parameters
    ----------
    kind : {"train", "backtest"}
        Stored as tag ``clvcast.kind``. Backtests go to the experiment :data:`BACKTEST_EXPERIMENT`,
        trainings to :data:`EXPERIMENT`.
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
    run_name : str, optional
        The name shown in the MLflow UI (e.g. ``train 2024-07-02, 182 days``); random without it.
    started_at : float, optional
        When the work the run records began (``time.time()``): the run's start time, so that its
        duration covers the fit and not only the logging. Default: now.
    """
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    client = _client(create=True)
    uri = tracking_uri()
    experiment_id = _experiment_id(client, BACKTEST_EXPERIMENT if kind == "backtest" else EXPERIMENT)
    logged = {}
    # The process holds a lock named by the run's owner token while the run is open; once the
    # process is gone, whoever can take the lock knows the run was abandoned (check_registry).
    owner = secrets.token_hex(8)
    origin = {OWNER_TAG: owner, "clvcast.host": socket.gethostname(), "clvcast.pid": str(os.getpid())}
    with (
        _store_lock(uri, f"run-{owner}"),
        _start_run(client, experiment_id, run_name=run_name, tags=origin, started_at=started_at) as run,
    ):
        _test_hook("run started")
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
        if logged:
            # What check_registry needs to register a model the process did not get to register.
            mlflow.set_tag(MODELS_TAG, json.dumps(logged))
    _remove_run_lock(uri, owner)
    _test_hook("run logged")
    return LoggedRun(run_id=run.info.run_id, **logged)


def _remove_run_lock(uri: str, owner: str) -> None:
    db = _sqlite_path(uri)
    if db is not None:  # one small file per run would pile up beside the database
        Path(f"{db}.run-{owner}.lock").unlink(missing_ok=True)


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
        """H of the scores and of each lifetime horizon, days."""
        return self.serving.horizon_days

    @property
    def label_horizon_days(self) -> int:
        """H_m, the boosters' label window, days."""
        return self.serving.label_horizon_days

    @property
    def lifetime(self) -> LifetimeModel:
        """The lifetime model: spend curve, lifetime CLV and intervals from the boosters' forecast."""
        return self.serving.lifetime

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
            "label_horizon_days": self.label_horizon_days,
            "training_cutoff": self.training_cutoff,
            "trained_at": self.trained_at,
            "holdout_metrics": self.holdout_metrics,
        }


def load_champion(*, check_compatible: bool = True) -> Champion:
    """Load the champion pair of ``clvcast-churn`` and ``clvcast-spend``.

    The champion is the pair named by a champion change in progress (:data:`PROMOTION_TAG`: its
    commit point is passed, so its pair is in effect) or else by the two ``champion`` aliases.

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
        metadata or the models' artifacts are missing or of an unknown format, or the feature code
        changed since training. The message names the model and the tracking URI.
    StoreError
        The store is missing, unreachable or damaged.
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri):
        churn_v, spend_v = _champion_pair(client, uri)
        return _load_pair(client, churn_v, spend_v, uri, check_compatible=check_compatible)


def load_pair(churn_version: str, spend_version: str, *, check_compatible: bool = True) -> Champion:
    """Load the given registered versions as a pair, whatever the aliases say (the service's reload).

    Raises
    ------
    ChampionError
        A version is missing, the two come from different runs, or they cannot be loaded (as for
        :func:`load_champion`).
    StoreError
        The store is missing, unreachable or damaged.
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri):
        churn_v = _version(client, CHURN_MODEL, churn_version, uri)
        spend_v = _version(client, SPEND_MODEL, spend_version, uri)
        return _load_pair(client, churn_v, spend_v, uri, check_compatible=check_compatible)


def _version(client, name: str, version: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            raise ChampionError(f"'{name}' v{version} does not exist at {display_uri(uri)}") from None
        raise


def _load_pair(client, churn_v, spend_v, uri: str, *, check_compatible: bool) -> Champion:
    if _run_of(churn_v) != _run_of(spend_v):
        raise ChampionError(
            f"'{CHURN_MODEL}' v{churn_v.version} (run {_run_of(churn_v)}) and '{SPEND_MODEL}' v{spend_v.version} "
            f"(run {_run_of(spend_v)}) at {display_uri(uri)} come from different training runs; their features "
            "may differ, so they cannot be combined into expected spend"
        )
    serving = _load_serving(client, _run_of(churn_v), uri)
    if check_compatible:
        check_serving_compatible(serving, where=f"'{CHURN_MODEL}' v{churn_v.version} at {display_uri(uri)}")
    models = _load_models(churn_v, spend_v, serving, uri)
    return Champion(
        models=models,
        churn_version=str(churn_v.version),
        spend_version=str(spend_v.version),
        run_id=_run_of(churn_v),
        serving=serving,
        tracking_uri=uri,
    )


def run_tables(run_id: str, names) -> dict[str, Path]:
    """Download the tables ``tables/<name>.csv`` of a run that it has, into a new temporary directory.

    Parameters
    ----------
    run_id : str
        MLflow run (e.g. the champion's training run, ``ScoringRun.run_id``).
    names : iterable of str
        Table names; those the run did not log are left out (runs logged before they existed).

    Returns
    -------
    dict of str to Path
        Name → local CSV file; the directory is the caller's to remove (or leave to the OS's
        temporary-file cleanup).

    Raises
    ------
    StoreError
        The store is missing, unreachable or damaged.
    """
    uri = tracking_uri()
    client = _client()
    out: dict[str, Path] = {}
    with _store_errors(uri):
        logged = {Path(f.path).stem for f in client.list_artifacts(run_id, "tables")}
        if not logged.intersection(names):
            return out
        dest = Path(tempfile.mkdtemp(prefix="clvcast-tables-"))
        for name in names:
            if name in logged:
                out[name] = Path(client.download_artifacts(run_id, f"tables/{name}.csv", str(dest)))
    return out


def run_diagnostics(run_id: str) -> dict[str, pd.DataFrame]:
    """The BTYD diagnostic tables a training run logged (:data:`training.diagnostics.TABLES`), read back.

    Tables the run did not log are left out: an empty dict for a run logged before them.
    """
    return {name: read_table(name, path) for name, path in run_tables(run_id, DIAGNOSTIC_TABLES).items()}


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
            run = client.get_run(run_id)
            if run.data.tags.get("clvcast.kind") == "train":
                raise ChampionError(
                    f"the artifacts of training run {run_id} are missing or unreadable at {run.info.artifact_uri} "
                    f"(store {display_uri(uri)}): {root_cause(exc)}"
                ) from exc
            raise ChampionError(
                f"run {run_id} at {display_uri(uri)} has no {SERVING_ARTIFACT}: not a clvcast training run"
            ) from exc
        data = json.loads(Path(path).read_text())
    if data.get("format_version") != SERVING_FORMAT_VERSION:
        raise ChampionError(
            f"run {run_id} at {display_uri(uri)}: {SERVING_ARTIFACT} has format_version "
            f"{data.get('format_version')!r}, this code reads {SERVING_FORMAT_VERSION}"
        )
    try:
        return ServingArtifact.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ChampionError(
            f"run {run_id} at {display_uri(uri)}: {SERVING_ARTIFACT} is not readable by this code "
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
            raise ChampionError(
                f"cannot load '{name}' v{version.version} at {display_uri(uri)}: {root_cause(exc)}"
            ) from exc
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
        f"churn AUC {new['churn_auc']:.4f} vs champion {current['churn_auc']:.4f} on the same holdout "
        f"(the rule: MAE at most {MAE_RELATIVE_TOLERANCE:.0%} above the champion's, AUC at most "
        f"{AUC_ABSOLUTE_TOLERANCE} below)"
    )
    if mae_ok and auc_ok:
        return Decision(True, f"not worse than the champion: {detail}")
    return Decision(False, f"worse than the champion: {detail}")


#: What a model predicts, beside its horizon: the business mode and the churn label it learnt.
MODE_KEYS = ("business", "churn_definition")


def run_mode(config) -> dict[str, str]:
    """``{"business": ..., "churn_definition": ...}`` of a run's :class:`~training.config.Config`."""
    return {"business": config.business, "churn_definition": config.training.churn_definition}


def mode_decision(new: dict[str, str], current: dict[str, str]) -> Decision | None:
    """Refuse to compare a new pair with a champion of another business mode or churn definition.

    A churn AUC measured against one label says nothing of a model trained for another (no purchase
    in the window vs. a cancel in it), and a retail and a subscription model forecast different
    things: like a different horizon, such a champion is not comparable on the same holdout.

    Parameters
    ----------
    new, current : dict
        :func:`run_mode` of the new run and of the current champion (:data:`MODE_KEYS`).

    Returns
    -------
    Decision or None
        ``None`` when the modes agree (apply :func:`champion_decision`); else a rejection that says
        what differs and how to replace the champion anyway.
    """
    differ = [k for k in MODE_KEYS if new.get(k) != current.get(k)]
    if not differ:
        return None
    what = ", ".join(f"{k} {current.get(k)!r} vs this run's {new.get(k)!r}" for k in differ)
    return Decision(
        False,
        f"current champion has {what}: not comparable on the same holdout; rerun with promote='force' to replace it",
    )


@dataclass(frozen=True)
class Registration:
    """Versions created for one run and whether they became champion."""

    churn_version: str
    spend_version: str
    promoted: bool
    reason: str


# --------------------------------------------------------------------------- registry integrity
#
# Invariant. The champion is one pair of versions from one training run. A champion change is
# decided and applied under the store's ``registry`` lock (one process at a time) in this order:
#   1. both versions registered (``clvcast.status`` = ``candidate``, or ``rejected``);
#   2. the experiment tag PROMOTION_TAG = {churn, spend, run_id, at}: one atomic write, the commit
#      point; from here on the new pair is the champion (load_champion reads this tag first);
#   3. the ``champion`` aliases moved (spend, then churn);
#   4. the status tags settled: the new pair ``champion``, every other ``champion`` ``superseded``;
#   5. PROMOTION_TAG deleted.
# A process killed anywhere leaves either no PROMOTION_TAG (nothing changed: the aliases and tags
# still agree on the old pair) or a PROMOTION_TAG whose steps 3-5 the next check_registry, under
# the same lock, completes. The aliases and status tags are therefore never split for longer than
# a crash-to-next-command interval, and no reader ever combines two runs.


_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
# Version tags the pipeline sets on both halves of a pair (copied when a half is completed).
_PAIR_TAGS = ("feature_set_id", "horizon_days", "cutoff", "business", "churn_definition")


def _alias_target(client, name: str):
    """The version ``name@champion``, or ``None`` when the model or its alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def _pending_promotion(client) -> dict[str, str] | None:
    """The champion change in progress (:data:`PROMOTION_TAG`), if any."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    raw = None if exp is None else exp.tags.get(PROMOTION_TAG)
    return json.loads(raw) if raw else None


def _champion_pair(client, uri: str):
    """(churn, spend) versions of the champion in effect; :class:`ChampionError` when there is none."""
    pending = _pending_promotion(client)
    if pending is not None:
        return (_version(client, CHURN_MODEL, pending["churn"], uri), _version(client, SPEND_MODEL, pending["spend"], uri))
    pair = []
    for name in (CHURN_MODEL, SPEND_MODEL):
        version = _alias_target(client, name)
        if version is None:
            raise ChampionError(
                f"no '{ALIAS}' version of registered model '{name}' at {display_uri(uri)}: "
                "train one with `clvcast train`"
            )
        pair.append(version)
    return tuple(pair)


def champion_versions() -> tuple[str, str] | None:
    """(churn, spend) champion versions in effect, or ``None`` when there is no champion. Reads only.

    Raises
    ------
    StoreError
        The store is missing, unreachable or damaged (never mistaken for "no champion").
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri):
        try:
            churn, spend = _champion_pair(client, uri)
        except ChampionError:
            return None
        return str(churn.version), str(spend.version)


def register_pair(
    run: LoggedRun,
    decision: Decision,
    *,
    tags: dict[str, str] | None = None,
    basis: tuple[str, str] | None = None,
    redecide: Callable[[], Decision] | None = None,
) -> Registration:
    """Register both models of ``run``; make them champion iff the decision says so.

    Everything happens under the store's ``registry`` lock, after :func:`check_registry` has
    completed whatever a killed process left. Both versions are registered either way, tagged
    ``clvcast.status`` (``candidate`` until promoted, or ``rejected``) and ``clvcast.reason``, so a
    rejected candidate stays inspectable and can be promoted by hand (:func:`promote`).

    Parameters
    ----------
    run : LoggedRun
        A training run with both models logged.
    decision : Decision
        The champion rule's verdict against the champion ``basis``.
    tags : dict, optional
        More version tags.
    basis : (str, str), optional
        The (churn, spend) champion versions the decision compared with (``None``: no champion).
    redecide : callable, optional
        Called under the lock when the champion is no longer ``basis`` (another training promoted
        meanwhile): returns the decision against the champion now in effect.

    Raises
    ------
    ValueError
        The run has no logged models.
    StoreError
        The store is unusable, or another process held the lock for :data:`LOCK_TIMEOUT_S`.
    """
    from mlflow.exceptions import MlflowException

    if run.churn_model_uri is None or run.spend_model_uri is None:
        raise ValueError(f"run {run.run_id} has no logged models to register")
    client = _client(create=True)
    uri = tracking_uri()
    with _store_errors(uri), _store_lock(uri, "registry"):
        _repair_locked(client, uri)
        if decision.promote and redecide is not None:
            now = _current_pair(client, uri)
            if now != basis:
                log.info("the champion changed during this training (%s -> %s): deciding again", basis, now)
                decision = redecide()
        status = "candidate" if decision.promote else "rejected"
        common = {"clvcast.run_id": run.run_id, "clvcast.status": status, "clvcast.reason": decision.reason[:5000],
                  **(tags or {})}
        versions = []
        for name, model_uri, model_id in (
            (CHURN_MODEL, run.churn_model_uri, run.churn_model_id),
            (SPEND_MODEL, run.spend_model_uri, run.spend_model_id),
        ):
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            version = client.create_model_version(name, model_uri, run_id=run.run_id, tags=common, model_id=model_id)
            versions.append(str(version.version))
            _test_hook(f"{name} registered")
        if decision.promote:
            _promote_locked(client, uri, versions[0], versions[1])
    return Registration(versions[0], versions[1], decision.promote, decision.reason)


def _current_pair(client, uri: str) -> tuple[str, str] | None:
    try:
        churn, spend = _champion_pair(client, uri)
    except ChampionError:
        return None
    return str(churn.version), str(spend.version)


def promote(churn_version: str, spend_version: str) -> None:
    """Make the given versions the champion pair (under the store's lock; see the invariant above).

    Raises
    ------
    ChampionError
        The versions come from different runs or do not exist.
    StoreError
        The store is unusable, or another process held the lock for :data:`LOCK_TIMEOUT_S`.
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri), _store_lock(uri, "registry"):
        _repair_locked(client, uri)
        _promote_locked(client, uri, str(churn_version), str(spend_version))


def promote_run(run_id: str) -> tuple[str, str]:
    """Make the pair registered from training run ``run_id`` the champion; returns its versions.

    Raises
    ------
    ChampionError
        The run has no registered churn and spend versions.
    StoreError
        As for :func:`promote`.
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri):
        found = {}
        for name in (CHURN_MODEL, SPEND_MODEL):
            mine = [v for v in _versions(client, name) if _run_of(v) == run_id]
            if not mine:
                raise ChampionError(f"run {run_id} has no registered version of '{name}' at {display_uri(uri)}")
            found[name] = str(max(int(v.version) for v in mine))
    promote(found[CHURN_MODEL], found[SPEND_MODEL])
    return found[CHURN_MODEL], found[SPEND_MODEL]


def _promote_locked(client, uri: str, churn_version: str, spend_version: str) -> None:
    churn = _version(client, CHURN_MODEL, churn_version, uri)
    spend = _version(client, SPEND_MODEL, spend_version, uri)
    if _run_of(churn) is None or _run_of(churn) != _run_of(spend):
        raise ChampionError(
            f"'{CHURN_MODEL}' v{churn_version} and '{SPEND_MODEL}' v{spend_version} come from different runs"
        )
    pending = {
        "churn": churn_version,
        "spend": spend_version,
        "run_id": _run_of(churn),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    experiment_id = _experiment_id(client)
    client.set_experiment_tag(experiment_id, PROMOTION_TAG, json.dumps(pending))  # the commit point
    _test_hook("promotion committed")
    _complete_promotion(client, experiment_id, pending)


def _complete_promotion(client, experiment_id: str, pending: dict[str, str]) -> None:
    """Steps 3-5 of the invariant; idempotent, so a crash in here is completed by running it again."""
    client.set_registered_model_alias(SPEND_MODEL, ALIAS, pending["spend"])
    _test_hook("spend alias moved")
    client.set_registered_model_alias(CHURN_MODEL, ALIAS, pending["churn"])
    _test_hook("aliases moved")
    for name, version in ((CHURN_MODEL, pending["churn"]), (SPEND_MODEL, pending["spend"])):
        _settle_status(client, name, version, promoted_at=pending["at"])
    _test_hook("status tags set")
    client.delete_experiment_tag(experiment_id, PROMOTION_TAG)


def _settle_status(client, name: str, champion: str, *, promoted_at: str | None = None) -> list[str]:
    """Tag ``champion`` as the champion and every other version that says so as superseded."""
    changed = []
    for v in _versions(client, name):
        status = v.tags.get("clvcast.status")
        if str(v.version) == str(champion):
            if status != "champion":
                client.set_model_version_tag(name, v.version, "clvcast.status", "champion")
                changed.append(f"'{name}' v{v.version} tagged champion (the alias is on it)")
            if promoted_at is not None or "clvcast.promoted_at" not in v.tags:
                stamp = promoted_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
                client.set_model_version_tag(name, v.version, "clvcast.promoted_at", stamp)
        elif status == "champion":
            client.set_model_version_tag(name, v.version, "clvcast.status", "superseded")
            changed.append(f"'{name}' v{v.version} said champion but the alias is on v{champion}: tagged superseded")
    return changed


def _versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return []
        raise


@dataclass(frozen=True)
class RegistryCheck:
    """What :func:`check_registry` found.

    Attributes
    ----------
    repaired : list of str
        Faults found and put right (one line each).
    unresolved : list of str
        Faults that need a person, each with the command that resolves it.
    """

    repaired: list[str]
    unresolved: list[str]

    @property
    def ok(self) -> bool:
        return not self.unresolved


def check_registry(*, repair: bool = True, create: bool = False) -> RegistryCheck:
    """Find, and by default repair, what killed or racing processes can leave in the registry.

    Under the store's ``registry`` lock (so never in the middle of another process's change):

    - a champion change whose commit point is written but not its aliases or tags: completed;
    - a run with a churn version but no spend version (or the reverse): the missing one
      registered from the run's logged model, so versions stay paired by number;
    - a pair left ``candidate`` by a process that died before the commit point: ``rejected``
      (nothing changed; :func:`promote_run` makes it champion by hand);
    - status tags that say ``champion`` where the aliases are not: ``superseded``, and the alias
      pair tagged ``champion``;
    - runs ``RUNNING`` whose process has ended (its lock can be taken): ``FAILED``;
    - aliases split across two runs, or only one alias: unresolved, with the command to run.

    Parameters
    ----------
    repair : bool, default True
        Put right what can be; with ``False`` everything found is reported as unresolved.
    create : bool, default False
        Create the store if it does not exist (training); otherwise a missing store is an error.

    Returns
    -------
    RegistryCheck

    Raises
    ------
    StoreError
        The store is missing, unreachable or damaged.
    """
    client = _client(create=create)
    uri = tracking_uri()
    with _store_errors(uri):
        if not repair:
            return RegistryCheck([], _problems(client, uri))
        with _store_lock(uri, "registry"):
            return _repair_locked(client, uri)


def _problems(client, uri: str) -> list[str]:
    """A read-only list of the faults :func:`check_registry` would repair or report."""
    found = []
    pending = _pending_promotion(client)
    if pending is not None:
        found.append(f"an interrupted champion change to run {pending['run_id']} is not complete")
    found += _split_aliases(client)
    return found


def _split_aliases(client) -> list[str]:
    churn, spend = _alias_target(client, CHURN_MODEL), _alias_target(client, SPEND_MODEL)
    if churn is None and spend is None:
        return []
    if churn is None or spend is None:
        have, name = (churn, CHURN_MODEL) if churn is not None else (spend, SPEND_MODEL)
        return [
            f"only '{name}' has a '{ALIAS}' alias (v{have.version}, run {_run_of(have)}): "
            f"make one run's pair champion with `clvcast registry promote --run {_run_of(have)}`"
        ]
    if _run_of(churn) != _run_of(spend):
        return [
            f"the '{ALIAS}' aliases are split: '{CHURN_MODEL}' v{churn.version} is from run {_run_of(churn)}, "
            f"'{SPEND_MODEL}' v{spend.version} from run {_run_of(spend)}; make one run's pair champion with "
            f"`clvcast registry promote --run {_run_of(churn)}` (or --run {_run_of(spend)})"
        ]
    return []


def _repair_locked(client, uri: str) -> RegistryCheck:
    repaired: list[str] = []
    exp = client.get_experiment_by_name(EXPERIMENT)
    backtests = client.get_experiment_by_name(BACKTEST_EXPERIMENT)
    if backtests is not None:
        repaired += _fail_abandoned_runs(client, backtests.experiment_id, uri)
    if exp is None:
        return RegistryCheck(repaired, [])
    pending = _pending_promotion(client)
    if pending is not None:
        _complete_promotion(client, exp.experiment_id, pending)
        repaired.append(
            f"completed the interrupted champion change to run {pending['run_id']} "
            f"('{CHURN_MODEL}' v{pending['churn']}, '{SPEND_MODEL}' v{pending['spend']})"
        )
    repaired += _complete_half_pairs(client)
    unresolved = _split_aliases(client)
    churn, spend = _alias_target(client, CHURN_MODEL), _alias_target(client, SPEND_MODEL)
    aliased = {CHURN_MODEL: churn, SPEND_MODEL: spend}
    for name, version in aliased.items():
        for v in _versions(client, name):
            if v.tags.get("clvcast.status") == "candidate" and (version is None or str(v.version) != str(version.version)):
                client.set_model_version_tag(name, v.version, "clvcast.status", "rejected")
                client.set_model_version_tag(
                    name, v.version, "clvcast.reason",
                    "registration interrupted before the champion change took effect; "
                    f"`clvcast registry promote --run {_run_of(v)}` makes it champion",
                )
                repaired.append(f"'{name}' v{v.version} left a candidate by a killed process: tagged rejected")
        if version is not None and not unresolved:
            repaired += _settle_status(client, name, str(version.version))
    repaired += _fail_abandoned_runs(client, exp.experiment_id, uri)
    for line in repaired:
        log.warning("registry check: %s", line)
    for line in unresolved:
        log.error("registry check: %s", line)
    return RegistryCheck(repaired, unresolved)


def _complete_half_pairs(client) -> list[str]:
    """Register the missing half of a run's pair from the run's logged model.

    Registration adds a run's churn version, then its spend version: a run with more versions of
    one model than of the other was killed in between, and its newest unpaired versions get their
    partner, so that version numbers keep pairing the two models.
    """
    by_run: dict[str, dict[str, list]] = {}
    for name in (CHURN_MODEL, SPEND_MODEL):
        for v in _versions(client, name):
            by_run.setdefault(_run_of(v), {CHURN_MODEL: [], SPEND_MODEL: []})[name].append(v)
    done = []
    for run_id, have in by_run.items():
        churn, spend = have[CHURN_MODEL], have[SPEND_MODEL]
        if run_id is None or len(churn) == len(spend):
            continue
        present_name, missing, extra = (
            (CHURN_MODEL, SPEND_MODEL, churn) if len(churn) > len(spend) else (SPEND_MODEL, CHURN_MODEL, spend)
        )
        raw = client.get_run(run_id).data.tags.get(MODELS_TAG)
        if not raw:
            continue
        models = json.loads(raw)
        key = "spend" if missing == SPEND_MODEL else "churn"
        unpaired = sorted(extra, key=lambda v: int(v.version))[len(churn) + len(spend) - len(extra) :]
        for present in unpaired:
            copied = {k: v for k, v in present.tags.items() if k.startswith("clvcast.") or k in _PAIR_TAGS}
            version = client.create_model_version(
                missing, models[f"{key}_model_uri"], run_id=run_id, model_id=models.get(f"{key}_model_id"), tags=copied
            )
            done.append(
                f"run {run_id} had '{present_name}' v{present.version} without its '{missing}' version "
                f"(registration killed in between): registered '{missing}' v{version.version}"
            )
    return done


def _fail_abandoned_runs(client, experiment_id: str, uri: str) -> list[str]:
    """Mark ``FAILED`` the ``RUNNING`` runs whose process has ended (their owner lock is free)."""
    done = []
    if _sqlite_path(uri) is None and _scheme(uri) != "postgresql":
        return done  # no process locks on this kind of store: a free lock would prove nothing
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        owner = run.data.tags.get(OWNER_TAG)
        if not owner:
            continue
        with _store_lock(uri, f"run-{owner}", blocking=False) as free:
            if not free or client.get_run(run.info.run_id).info.status != "RUNNING":
                continue
            client.set_tag(run.info.run_id, "clvcast.failure", "the process ended before finishing the run")
            client.set_terminated(run.info.run_id, status="FAILED")
        _remove_run_lock(uri, owner)
        done.append(
            f"run {run.info.run_id} was RUNNING but its process (pid {run.data.tags.get('clvcast.pid')} on "
            f"{run.data.tags.get('clvcast.host')}) has ended: marked FAILED"
        )
    return done


def last_good_champion(*, exclude: tuple[str, str] | None = None) -> Champion | None:
    """The most recently promoted pair that still loads (the champion rule's fallback).

    When the champion in effect cannot be loaded (artifacts gone, split aliases), the rule still
    compares with the last pair that was champion and loads, rather than promoting blind.

    Parameters
    ----------
    exclude : (str, str), optional
        (churn, spend) versions not to try (the pair that just failed).

    Returns
    -------
    Champion or None
        ``None`` when no pair that was ever champion loads.
    """
    client = _client()
    uri = tracking_uri()
    with _store_errors(uri):
        spend_by_run = {_run_of(v): v for v in _versions(client, SPEND_MODEL)}
        tried = []
        for churn in _versions(client, CHURN_MODEL):
            spend = spend_by_run.get(_run_of(churn))
            if spend is None or "clvcast.promoted_at" not in churn.tags:
                continue
            if exclude is not None and (str(churn.version), str(spend.version)) == tuple(map(str, exclude)):
                continue
            tried.append((churn.tags["clvcast.promoted_at"], int(churn.version), churn, spend))
        for _, _, churn, spend in sorted(tried, key=lambda t: (t[0], t[1]), reverse=True):
            try:
                return _load_pair(client, churn, spend, uri, check_compatible=True)
            except ChampionError as exc:
                log.info("pair v%s/v%s of run %s cannot be used: %s", churn.version, spend.version, _run_of(churn), exc)
    return None


def registry_snapshot() -> dict[str, dict[str, Any]]:
    """Versions (with their status tag) and aliases of both registered models. Reads only."""
    from mlflow.exceptions import MlflowException

    client = _client()
    uri = tracking_uri()
    out: dict[str, dict[str, Any]] = {}
    with _store_errors(uri):
        for name in (CHURN_MODEL, SPEND_MODEL):
            try:
                model = client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code not in _NOT_FOUND:
                    raise
                out[name] = {"versions": {}, "aliases": {}}
                continue
            out[name] = {
                "versions": {str(v.version): v.tags.get("clvcast.status", "") for v in _versions(client, name)},
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
