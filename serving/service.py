"""The clvcast HTTP service (BentoML).

Endpoints
---------
- ``POST /clv``: customers' raw history and ``as_of`` → churn probability, P(alive), expected
  spend and lifetime CLV with their intervals, the spend curve, expected lifetime, segment, top
  drivers and model versions (:mod:`serving.api_models`).
- ``POST /acquisition_budget``: channels with their CAC → new-customer CLV, LTV:CAC, maximum
  allowable CAC and a recommendation, from the new-customer CLV table of ``clvcast budget``.
- ``GET /model``: versions, training date, holdout metrics, feature-set version.
- BentoML's own ``/healthz``, ``/livez``, ``/readyz``, ``/metrics`` and ``/docs.json`` (OpenAPI).
- ``GET /`` and ``GET /docs``: clvcast's API page (Swagger UI over ``/docs.json``, BentoML's
  OpenAPI document with clvcast's title and description), offline.

Configuration (environment)
---------------------------
- ``MLFLOW_TRACKING_URI``: where the ``champion`` models are (default ``sqlite:///mlruns/mlflow.db``
  under the working directory, see :func:`training.registry.tracking_uri`).
- ``CLVCAST_CONFIG``: optional config file (as ``clvcast --config``) whose ``clv`` section sets
  margin, cost to serve, discount rate, lifetime cap and target LTV:CAC; default: the settings
  stored with the champion, else the documented defaults.
- ``CLVCAST_NEW_CUSTOMER_CLV``: optional ``new_customer_clv.csv`` written by ``clvcast budget``;
  without it ``POST /acquisition_budget`` answers 503.
- ``CLVCAST_SCORES``: optional scores file of ``clvcast score`` (``.parquet`` or ``.csv``): CLV
  tiers and RFM segments are then relative to those customers, as in the batch run; without it,
  relative to the customers of each request (the response says which in ``segment_basis``).

The champion is checked once, in the serving process, before any worker starts (a missing or
incompatible champion stops the server with a message naming the model and the tracking URI), then
loaded by each worker.

Running it
----------
:func:`serve` serves in the foreground until SIGINT or SIGTERM (``clvcast serve``);
:func:`running_service` starts the server in the background and stops it on leaving its block (the
demo, the HTTP tests, the service benchmark). Both start it with BentoML's own ``bentoml.serve``
and set the variables above, and the worker count, for the server's lifetime. This is the one
module that talks to BentoML, so they live here.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import bentoml
import pandas as pd
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import JSONResponse

from features.spec import categorical_covariates
from serving.contractual import ContractualModel
from serving.api_models import (
    MAX_CUSTOMERS,
    MAX_ROWS_PER_CUSTOMER,
    MAX_ROWS_PER_REQUEST,
    BudgetRequest,
    BudgetResponse,
    ClvRequest,
    ClvResponse,
    CustomerClv,
    ModelInfo,
    ModelVersions,
)
from serving.finance.acquisition import acquisition_budget
from serving.http_guard import Guard, api_keys, max_body_bytes, quiet_client_errors
from serving.scores import read_scores
from serving.scoring import champion_clv_config, score_columns
from serving.segments import SegmentReference
from training.config import CONFIG_FILE_ENV, load_config
from training.registry import Champion, ChampionError, StoreError, check_registry, load_champion, load_pair

if TYPE_CHECKING:
    # What bentoml.serve returns: BentoML exports no public name for the class.
    from bentoml._internal.utils.circus import Server

log = logging.getLogger(__name__)

CONFIG_ENV = CONFIG_FILE_ENV
NEW_CUSTOMER_CLV_ENV = "CLVCAST_NEW_CUSTOMER_CLV"
SCORES_ENV = "CLVCAST_SCORES"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: BentoML reads its configuration overrides (here: the worker count) from this variable.
BENTOML_OVERRIDES_ENV = "BENTOML_CONFIG_OVERRIDES"

#: The import path ``bentoml serve`` and :func:`serve` are given.
SERVICE = "serving.service:ClvService"
LOOPBACK = "127.0.0.1"
#: Seconds a started server may take to answer ``/readyz`` (workers load the champion first).
READY_TIMEOUT_S = 180.0
#: The server's own directory (the pair every worker serves, the workers' acknowledgements).
RUNTIME_DIR_ENV = "CLVCAST_RUNTIME_DIR"
PAIR_FILE = "pair.json"
#: How often a worker looks for a new pair, and a worker that could not load retries.
POLL_S = 0.25
RETRY_S = 5.0
#: Seconds POST /reload waits for every worker to serve the new pair.
RELOAD_TIMEOUT_S = 300.0

# GET routes: BentoML API methods are POST only, so GET /model lives in a mounted FastAPI app
# whose class-view methods receive the service instance as ``self``.
# FastAPI's own /docs and /openapi.json are off: they would load Swagger UI from a CDN and describe
# only this app; the page below describes the whole service.
_model_app = FastAPI(title="clvcast model info", docs_url=None, redoc_url=None, openapi_url=None)

#: The title of the API page at ``/`` and ``/docs``.
DOCS_TITLE = "clvcast API: churn, spend and customer lifetime value"
#: Where BentoML serves the Swagger UI files its package ships: the page needs no internet.
_SWAGGER_ASSETS = "/static_content"


@_model_app.get("/", include_in_schema=False)
@_model_app.get("/docs", include_in_schema=False)
def _api_page():
    """Swagger UI over the OpenAPI document ``/docs.json``.

    It replaces BentoML's stock index page, which loads a tag manager from the internet; the
    JavaScript and CSS are the Swagger UI files of the installed ``bentoml`` package.
    """
    return get_swagger_ui_html(
        openapi_url="/docs.json",
        title=DOCS_TITLE,
        swagger_js_url=f"{_SWAGGER_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_SWAGGER_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{_SWAGGER_ASSETS}/favicon-light-32x32.png",
    )


@_model_app.get("/docs.json", include_in_schema=False)
def _openapi_document() -> JSONResponse:
    """BentoML's OpenAPI document of every endpoint, described as clvcast.

    Served in place of BentoML's own ``/docs.json``, whose description is BentoML's stock README
    (badges loaded from the internet) unless the service runs from a built Bento.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("clvcast")
    except PackageNotFoundError:  # a built Bento carries the modules, not the distribution
        release = "dev"
    spec = ClvService.openapi_spec.asdict()
    spec["info"] = {"title": "clvcast", "version": release, "description": inspect.cleandoc(ClvService.inner.__doc__)}
    return JSONResponse(spec)


@dataclass(frozen=True)
class _Loaded:
    """Everything a worker answers from that depends on the pair: swapped as one reference."""

    champion: Champion
    clv_config: object
    numeric_covariates: frozenset
    versions: ModelVersions
    generation: int


def _load(churn: str, spend: str, generation: int) -> _Loaded:
    return _prepare(load_pair(churn, spend), generation)


def _prepare(champion: Champion, generation: int) -> _Loaded:
    # One thread per prediction: requests are small, and concurrency comes from the workers;
    # OpenMP threads that wait for a busy core turn a 0.5 ms prediction into several ms.
    for booster in (champion.models.churn_model_, champion.models.spend_model_):
        booster.set_params(n_jobs=1)
    champion.models.explainers()  # the TreeSHAP tables of the drivers, before any request
    config_path = os.environ.get(CONFIG_ENV)
    feature_config = champion.feature_config
    return _Loaded(
        champion=champion,
        clv_config=load_config(config_path).clv if config_path else champion_clv_config(champion),
        numeric_covariates=frozenset(set(feature_config.covariates) - set(categorical_covariates(feature_config))),
        versions=ModelVersions(churn=champion.churn_version, spend=champion.spend_version,
                               feature_set=champion.feature_set_id),
        generation=generation,
    )


def _runtime_dir() -> Path:
    return Path(os.environ[RUNTIME_DIR_ENV])


def _read_pair() -> dict:
    return json.loads((_runtime_dir() / PAIR_FILE).read_text())


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` so that a reader sees the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=503)


@bentoml.service(name="clvcast", traffic={"timeout": 60})
@bentoml.asgi_app(_model_app, path="/")
class ClvService:
    """Churn probability, expected spend and customer lifetime value (CLV) from the `champion` models.

    `POST /clv` takes customers' raw transactions (and optionally events and attributes) with an
    `as_of` date and answers, per customer, the churn probability and expected spend over the
    model's horizon, lifetime CLV, expected remaining lifetime, CLV tier and RFM segment, and the
    drivers of both predictions. `POST /acquisition_budget` turns channels' acquisition costs into
    LTV:CAC and a maximum allowable CAC. `GET /model` names the models and their holdout metrics.

    Every worker serves the pair named in the server's ``pair.json`` (written at start and by
    ``POST /reload``), not whatever the aliases say when it happens to (re)start: a restarted
    worker answers from the same models as the others. A worker that cannot load that pair
    answers 503 and ``/readyz`` 503 until it can (it retries).
    """

    @bentoml.on_deployment
    def check_startup() -> None:
        """Fail the server before any worker starts when the champion or a setting is unusable.

        Runs once in the serving process; a failure in the workers' ``__init__`` would only make
        BentoML restart them forever. Repairs what a killed training left in the registry, fixes
        the pair the workers will load in ``pair.json``, and says when the service is open to anyone.
        """
        found = check_registry()
        if not found.ok:
            raise ChampionError("; ".join(found.unresolved))
        champion = load_champion()
        if os.environ.get(CONFIG_ENV):
            load_config(os.environ[CONFIG_ENV])
        _read_new_customer_clv(os.environ.get(NEW_CUSTOMER_CLV_ENV))
        _contractual_for(champion, _read_reference(os.environ.get(SCORES_ENV))[2])
        keys = api_keys()
        max_body_bytes()
        # bentoml.serve applied its logging config to this process (disable_existing_loggers):
        # without this the warning below went nowhere.
        log.disabled = False
        if not keys:
            log.warning("no API keys (%s, %s): anyone who reaches the port can call every endpoint",
                        "CLVCAST_API_KEYS", "CLVCAST_API_KEYS_FILE")
        if not os.environ.get(RUNTIME_DIR_ENV):
            # Under a plain `bentoml serve`: the workers, started after this, inherit the variable.
            os.environ[RUNTIME_DIR_ENV] = tempfile.mkdtemp(prefix="clvcast-server-")
        _write_json(_runtime_dir() / PAIR_FILE, {
            "generation": 1, "churn": champion.churn_version, "spend": champion.spend_version,
            "run_id": champion.run_id,
        })

    def __init__(self) -> None:
        quiet_client_errors()
        self.worker = str(bentoml.server_context.worker_index or os.getpid())
        self.loaded: _Loaded | None = None
        self.load_error = "not loaded yet"
        self.reference, self.prospects, self.contractual = _read_reference(os.environ.get(SCORES_ENV))
        self.segment_basis = "scored population" if self.reference is not None else "this request"
        self.new_customer_clv = _read_new_customer_clv(os.environ.get(NEW_CUSTOMER_CLV_ENV))
        self._failed: tuple[int, float] | None = None  # generation that did not load, and when
        if not os.environ.get(RUNTIME_DIR_ENV):
            # In process (tests, benchmarks), not under a server: the champion, once.
            self.loaded = _prepare(load_champion(), 0)
            gc.collect()
            gc.freeze()
            return
        self._follow_pair()
        threading.Thread(target=self._watch_pair, name="clvcast-pair", daemon=True).start()

    @property
    def champion(self) -> Champion:
        """The pair this worker answers from."""
        return self.loaded.champion

    @property
    def clv_config(self):
        """The CLV arithmetic settings of the answers."""
        return self.loaded.clv_config

    def _follow_pair(self) -> None:
        """Load the pair of ``pair.json`` unless this worker serves it already; acknowledge the result."""
        pair = _read_pair()
        current = self.loaded
        ack = _runtime_dir() / f"ack-{self.worker}.json"
        if current is not None and current.generation == pair["generation"]:
            return
        if current is not None and (current.versions.churn, current.versions.spend) == (pair["churn"], pair["spend"]):
            self.loaded = _Loaded(**{**current.__dict__, "generation": pair["generation"]})
        else:
            try:
                loaded = _load(pair["churn"], pair["spend"], pair["generation"])
            except (ChampionError, StoreError, OSError, ValueError) as exc:
                self.load_error = f"cannot load clvcast-churn v{pair['churn']}, clvcast-spend v{pair['spend']}: {exc}"
                self._failed = (pair["generation"], time.monotonic())
                log.error("worker %s: %s", self.worker, self.load_error)
                _write_json(ack, {"generation": pair["generation"], "ok": False, "error": self.load_error})
                return
            self.loaded = loaded  # one assignment: a request sees the old pair or the new one, whole
            log.info("worker %s serving clvcast-churn v%s and clvcast-spend v%s (feature set %s) from %s",
                     self.worker, pair["churn"], pair["spend"], loaded.champion.feature_set_id,
                     loaded.champion.tracking_uri)
            # What is loaded lives as long as the pair: out of the collector's reach, or full
            # collections over the boosters pause ~2 % of large requests by ~250 ms.
            gc.collect()
            gc.freeze()
        self.load_error, self._failed = "", None
        _write_json(ack, {"generation": pair["generation"], "ok": True})

    def _watch_pair(self) -> None:
        """Follow ``pair.json`` (a reload), and retry a pair that did not load every :data:`RETRY_S`."""
        while True:
            time.sleep(POLL_S)
            try:
                generation = _read_pair()["generation"]
                if self.loaded is not None and self.loaded.generation == generation:
                    continue
                if self._failed is not None and self._failed[0] == generation and time.monotonic() - self._failed[1] < RETRY_S:
                    continue
                self._follow_pair()
            except Exception:  # the watcher must outlive any one failure; the next poll retries
                log.exception("worker %s: following %s failed", self.worker, PAIR_FILE)

    def __is_ready__(self) -> bool:
        """Ready when this worker serves the pair the server names (BentoML's ``/readyz``)."""
        loaded = self.loaded
        if loaded is None:
            return False
        return not os.environ.get(RUNTIME_DIR_ENV) or loaded.generation == _read_pair()["generation"]

    @bentoml.api(route="/clv")
    def clv(self, request: ClvRequest, /) -> ClvResponse:
        """Churn probability, expected spend, CLV, segment and drivers of each customer as of ``as_of``."""
        loaded = self.loaded  # one pair for the whole request, whatever a reload does meanwhile
        if loaded is None:
            return _unavailable(f"models not loaded: {self.load_error}")
        request.check_covariates(loaded.numeric_covariates)
        prospects = self.prospects  # of the scores: their horizon must be the pair's
        prospects = prospects if prospects and prospects.horizon_days == loaded.champion.horizon_days else None
        request.check_prospects(prospects is not None)
        try:  # a subscription champion scores subscribers with the contractual model of the scores
            contractual = _contractual_for(loaded.champion, self.contractual)
        except ChampionError as exc:
            return _unavailable(str(exc))
        # The columns as arrays, not a DataFrame: a frame and its rows cost milliseconds per request.
        scores = score_columns(
            request.to_tables(),
            as_of=request.as_of,
            champion=loaded.champion,
            clv=loaded.clv_config,
            reference=self.reference,
            top_drivers=request.drivers,
            attributes=False,
            prospects=prospects,
            undated_known=True,  # every customer of a request is one
            contractual=contractual,
        )
        customers = CustomerClv.from_columns(scores, order=[c.customer_id for c in request.customers])
        return ClvResponse(
            as_of=request.as_of,
            horizon_days=loaded.champion.horizon_days,
            interval_coverage=loaded.champion.lifetime.interval_coverage,
            segment_basis=self.segment_basis,
            model_versions=loaded.versions,
            customers=customers,
        )

    @bentoml.api(route="/acquisition_budget")
    def acquisition_budget(self, request: BudgetRequest, /) -> BudgetResponse:
        """LTV:CAC, maximum allowable CAC and a grow / hold / cut recommendation per channel."""
        loaded = self.loaded
        if loaded is None:
            return _unavailable(f"models not loaded: {self.load_error}")
        if self.new_customer_clv is None:
            return _unavailable(
                f"no new-customer CLV table: start the service with {NEW_CUSTOMER_CLV_ENV} "
                "set to the new_customer_clv.csv written by `clvcast budget`"
            )
        target = request.target_ltv_cac or loaded.clv_config.target_ltv_cac
        rows = acquisition_budget(
            [c.model_dump() for c in request.channels], self.new_customer_clv, target_ratio=target
        )
        return BudgetResponse(target_ltv_cac=target, model_versions=loaded.versions, channels=rows,
                              warning=_stale_new_customer_clv(self.new_customer_clv, loaded.versions))

    @_model_app.get("/model", response_model=ModelInfo)
    def model(self) -> ModelInfo:
        """Model versions, training date, holdout metrics and feature-set version."""
        loaded = self.loaded
        if loaded is None:
            return _unavailable(f"models not loaded: {self.load_error}")
        described = loaded.champion.describe()
        return ModelInfo(
            model_versions=loaded.versions,
            model_names={"churn": described["churn_model"]["name"], "spend": described["spend_model"]["name"]},
            run_id=described["run_id"],
            trained_at=described["trained_at"],
            training_cutoff=described["training_cutoff"],
            horizon_days=described["horizon_days"],
            holdout_metrics=described["holdout_metrics"],
            clv_settings=loaded.clv_config.model_dump(),
            segment_basis=self.segment_basis,
            limits={
                "customers_per_request": MAX_CUSTOMERS,
                "rows_per_customer": MAX_ROWS_PER_CUSTOMER,
                "rows_per_request": MAX_ROWS_PER_REQUEST,
            },
            tracking_uri=loaded.champion.tracking_uri,
        )

    @_model_app.post("/reload")
    def reload(self) -> JSONResponse:
        """Move every worker to the registry's champion; answer once all of them serve it.

        The new pair is loaded here first (a pair that does not load changes nothing: 409). Then
        ``pair.json`` names it, each worker loads it beside the pair it serves and swaps, so no
        request fails during the switch; the answer comes when every worker has acknowledged.
        """
        try:
            check_registry()
            champion = load_champion()
        except (ChampionError, StoreError) as exc:
            log.warning("reload refused: %s", exc)
            return JSONResponse({"error": f"the registry's champion cannot be served: {exc}"}, status_code=409)
        import filelock

        with filelock.FileLock(str(_runtime_dir() / "reload.lock")):
            pair = _read_pair()
            generation = pair["generation"] + 1
            _write_json(_runtime_dir() / PAIR_FILE, {
                **pair, "generation": generation, "churn": champion.churn_version, "spend": champion.spend_version,
                "run_id": champion.run_id,
            })
        log.info("reload: generation %d, clvcast-churn v%s and clvcast-spend v%s",
                 generation, champion.churn_version, champion.spend_version)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while True:
            # Every worker slot acknowledges each pair it loads in ack-<worker index>.json (a
            # restarted worker takes its slot's file): the files are the workers.
            acks = []
            for path in _runtime_dir().glob("ack-*.json"):
                with contextlib.suppress(OSError, ValueError):
                    acks.append(json.loads(path.read_text()))
            workers = len(acks)
            current = [a for a in acks if a.get("generation", 0) >= generation]
            failed = [a["error"] for a in current if not a.get("ok")]
            if failed or len(current) >= workers or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        body = {"generation": generation, "workers": workers, "workers_switched": len(current) - len(failed),
                "model_versions": {"churn": champion.churn_version, "spend": champion.spend_version,
                                   "feature_set": champion.feature_set_id}}
        if failed or len(current) < workers:
            body["error"] = "; ".join(failed) or f"only {len(current)} of {workers} workers switched in time"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)


ClvService.add_asgi_middleware(Guard)


def _read_reference(path: str | None):
    """Segment reference, prospect model and contractual model (subscription scores, else None) of a
    ``clvcast score`` output, or ``(None, None, None)`` if unset."""
    if not path:
        return None, None, None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{SCORES_ENV}={path}: no such file (write it with `clvcast score`)")
    scores = read_scores(path)
    run = scores.run
    contractual = ContractualModel.from_dict(run.contractual) if run.contractual is not None else None
    if contractual is not None and contractual.settings.horizon_days != run.horizon_days:
        raise ValueError(f"{SCORES_ENV}={path}: its contractual model's horizon differs from the scores' "
                         f"({contractual.settings.horizon_days} vs {run.horizon_days} days)")
    return SegmentReference.from_scores(scores.frame), run.prospects, contractual


def _contractual_for(champion: Champion, contractual: ContractualModel | None) -> ContractualModel | None:
    """The contractual model ``/clv`` scores subscribers with, for this champion.

    A champion trained with ``business: subscription`` needs the model of a subscription scoring
    (``CLVCAST_SCORES``) with its horizon: a request's few customers cannot fit the survival model. A retail
    champion uses none.

    Raises
    ------
    ChampionError
        A subscription champion without such scores.
    """
    if champion.serving.config.business != "subscription":
        return None
    if contractual is None:
        raise ChampionError(
            "the champion was trained with business: subscription: POST /clv scores subscribers with the "
            f"contractual model of a subscription scoring; set {SCORES_ENV} to a `clvcast score` output "
            "written with business: subscription"
        )
    if contractual.settings.horizon_days != champion.horizon_days:
        raise ChampionError(
            f"{SCORES_ENV}: its contractual model is for a horizon of {contractual.settings.horizon_days} days, "
            f"the champion's is {champion.horizon_days}: re-score with the champion"
        )
    return contractual


def _stale_new_customer_clv(table: pd.DataFrame, versions) -> str | None:
    """A warning when ``new_customer_clv.csv`` names other model versions than ``versions`` (None otherwise).

    A file written before ``clvcast budget`` recorded them has no such columns: nothing to compare.
    """
    if not {"churn_model_version", "spend_model_version"} <= set(table.columns) or table.empty:
        return None
    made = (str(table["churn_model_version"].iloc[0]), str(table["spend_model_version"].iloc[0]))
    if made == (str(versions.churn), str(versions.spend)):
        return None
    return (f"new_customer_clv.csv was written from clvcast-churn v{made[0]} and clvcast-spend v{made[1]}; this "
            f"service serves v{versions.churn} and v{versions.spend}: its values are the older models'. Rewrite it with "
            "`clvcast score` and `clvcast budget`, and restart the service with it")


def _read_new_customer_clv(path: str | None):
    """The ``new_customer_clv.csv`` of ``clvcast budget`` (indexed by channel), or ``None`` if unset."""
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{NEW_CUSTOMER_CLV_ENV}={path}: no such file (write it with `clvcast budget`)")
    table = pd.read_csv(file, dtype={"channel": "str", "churn_model_version": "str", "spend_model_version": "str"})
    table = table.set_index("channel")
    missing = {"customers", "new_customer_clv"} - set(table.columns)
    if missing:
        raise ValueError(f"{NEW_CUSTOMER_CLV_ENV}={path}: missing column(s) {sorted(missing)}")
    return table


# --------------------------------------------------------------------------- running the server


def serve(
    *,
    host: str = LOOPBACK,
    port: int = 3000,
    workers: int = 1,
    scores: str | Path | None = None,
    new_customer_clv: str | Path | None = None,
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (``bentoml.serve(..., blocking=True)``).

    Parameters
    ----------
    host, port : str, int
        Where to listen; loopback by default.
    workers : int
        Worker processes, each with its own copy of the champion.
    scores : str or Path, optional
        ``CLVCAST_SCORES``: a ``clvcast score`` file that segments are relative to.
    new_customer_clv : str or Path, optional
        ``CLVCAST_NEW_CUSTOMER_CLV``: the ``new_customer_clv.csv`` of ``clvcast budget``.

    Raises
    ------
    training.registry.ChampionError
        No usable champion at ``MLFLOW_TRACKING_URI`` (the startup check, before any worker).
    FileNotFoundError, ValueError
        ``scores``, ``new_customer_clv`` or ``CLVCAST_CONFIG`` unreadable (the same check).
    """
    with _server_environ(workers=workers, scores=scores, new_customer_clv=new_customer_clv), _callers_logging_kept():
        # The arbiter runs in this (main) thread, as under `bentoml serve`: SIGINT and SIGTERM
        # stop the workers, then the call returns.
        bentoml.serve(SERVICE, host=host, port=port, blocking=True)


@contextlib.contextmanager
def running_service(
    *,
    port: int | None = None,
    workers: int = 1,
    tracking_uri: str | None = None,
    scores: str | Path | None = None,
    new_customer_clv: str | Path | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    service: str = SERVICE,
) -> Iterator[Server]:
    """The service running in the background on loopback, ready; stopped on leaving the block.

    Started with ``bentoml.serve(..., blocking=False)``, which returns BentoML's server handle
    (``url``, ``running``, ``stop()``, a context manager); readiness is BentoML's client waiting
    for ``/readyz``.

    Parameters
    ----------
    port : int, optional
        Default: a port free on the loopback interface.
    workers, scores, new_customer_clv
        As for :func:`serve`.
    tracking_uri : str, optional
        ``MLFLOW_TRACKING_URI`` of the service; default: this process's.
    ready_timeout : float
        Seconds to wait for ``/readyz`` to answer 200.
    service : str
        Import path of the service.

    Yields
    ------
    Server
        BentoML's handle of the running server; ``server.url`` is its base URL.

    Raises
    ------
    training.registry.ChampionError, FileNotFoundError, ValueError
        As for :func:`serve`, before any worker starts.
    bentoml.exceptions.ServiceUnavailable
        Not ready after ``ready_timeout`` seconds (the workers' log is on this process's stderr).
    """
    with (
        _server_environ(workers=workers, tracking_uri=tracking_uri, scores=scores, new_customer_clv=new_customer_clv),
        _callers_signal_handlers_kept(),
    ):
        with _callers_logging_kept():
            server = bentoml.serve(service, host=LOOPBACK, port=port or free_port(), blocking=False)
        # While it runs, SIGINT and SIGTERM stop the server (BentoML's process manager handles them).
        with server:
            # BentoML's client waits in its constructor until /readyz answers 200, then reads the
            # schema, which needs a key when keys are set.
            keys = api_keys()
            bentoml.SyncHTTPClient(
                server.url, server_ready_timeout=ready_timeout, token=keys[0] if keys else None
            ).close()
            yield server


@contextlib.contextmanager
def _server_environ(
    *,
    workers: int,
    tracking_uri: str | None = None,
    scores: str | Path | None = None,
    new_customer_clv: str | Path | None = None,
) -> Iterator[None]:
    """The service's variables, worker count and runtime directory, in ``os.environ`` until the block ends.

    ``bentoml.serve`` takes no environment: the workers inherit this process's when they start
    (and restart), and BentoML reads the worker count from its configuration overrides at start.
    The runtime directory (the pair every worker serves) is removed at the end.
    """
    runtime = tempfile.mkdtemp(prefix="clvcast-server-")
    values = {
        BENTOML_OVERRIDES_ENV: json.dumps({"services": {ClvService.name: {"workers": workers}}}),
        RUNTIME_DIR_ENV: runtime,
    }
    if tracking_uri is not None:
        values[TRACKING_URI_ENV] = tracking_uri
    for name, path in ((SCORES_ENV, scores), (NEW_CUSTOMER_CLV_ENV, new_customer_clv)):
        if path is not None:
            values[name] = str(Path(path).resolve())
    try:
        with environ(**values):
            yield
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables until the block ends, then put back what was there before.

    Parameters
    ----------
    **values : str
        Variable names and their values for the block.
    """
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _callers_logging_kept() -> Iterator[None]:
    """Undo what ``bentoml.serve`` does to the calling process's logging.

    It applies BentoML's command-line logging config (``logging.config.dictConfig`` with
    ``disable_existing_loggers``): every logger that exists goes silent (clvcast's steps, a test
    runner's capture) and the root logger loses its handlers and drops to WARNING. Its own
    ``bentoml`` logger keeps BentoML's settings.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    enabled = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
        for logger in enabled:
            logger.disabled = False


@contextlib.contextmanager
def _callers_signal_handlers_kept() -> Iterator[None]:
    """Put back the calling process's handlers of the signals a background server takes over.

    ``bentoml.serve(..., blocking=False)`` builds its process manager (circus) in this thread, and
    that installs handlers of SIGHUP, SIGQUIT, SIGINT, SIGTERM and SIGWINCH that stop the server.
    Its own attempt to restore them runs in the manager's thread, where Python refuses to set
    handlers: without this, Ctrl-C would do nothing once the server has stopped.
    """
    signals = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM, signal.SIGWINCH)
    handlers = {sig: signal.getsignal(sig) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def free_port() -> int:
    """A TCP port free on the loopback interface now.

    The OS picks it (bind to port 0); BentoML has no public helper for this.

    Returns
    -------
    int
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
