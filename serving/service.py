"""The clvcast HTTP service (BentoML).

Endpoints
---------
- ``POST /clv``: customers' raw history and ``as_of`` → churn probability, expected spend, CLV,
  expected lifetime, segment, top drivers and model versions (:mod:`serving.api_models`).
- ``POST /acquisition_budget``: channels with their CAC → new-customer CLV, LTV:CAC, maximum
  allowable CAC and a recommendation, from the new-customer CLV table of ``clvcast budget``.
- ``GET /model``: versions, training date, holdout metrics, feature-set version.
- BentoML's own ``/healthz``, ``/livez``, ``/readyz``, ``/metrics`` and ``/docs.json`` (OpenAPI).

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
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import bentoml
import pandas as pd
from fastapi import FastAPI
from starlette.responses import JSONResponse

from features.spec import categorical_covariates
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
from serving.scores import read_scores
from serving.scoring import champion_clv_config, score_columns
from serving.segments import SegmentReference
from training.config import CONFIG_FILE_ENV, load_config
from training.registry import load_champion

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

# GET routes: BentoML API methods are POST only, so GET /model lives in a mounted FastAPI app
# whose class-view methods receive the service instance as ``self``.
_model_app = FastAPI(title="clvcast model info")


@bentoml.service(name="clvcast", traffic={"timeout": 60})
@bentoml.asgi_app(_model_app, path="/")
class ClvService:
    """Churn, spend and CLV of customers from the ``champion`` models, over HTTP."""

    @bentoml.on_deployment
    def check_startup() -> None:
        """Fail the server before any worker starts when the champion or a setting is unusable.

        Runs once in the serving process; a failure in the workers' ``__init__`` would only make
        BentoML restart them forever.
        """
        load_champion()
        if os.environ.get(CONFIG_ENV):
            load_config(os.environ[CONFIG_ENV])
        _read_new_customer_clv(os.environ.get(NEW_CUSTOMER_CLV_ENV))
        _read_reference(os.environ.get(SCORES_ENV))

    def __init__(self) -> None:
        self.champion = load_champion()
        # One thread per prediction: requests are small, and concurrency comes from the workers;
        # OpenMP threads that wait for a busy core turn a 0.5 ms prediction into several ms.
        for booster in (self.champion.models.churn_model_, self.champion.models.spend_model_):
            booster.set_params(n_jobs=1)
        self.champion.models.explainers()  # the TreeSHAP tables of the drivers, before any request
        config_path = os.environ.get(CONFIG_ENV)
        self.clv_config = load_config(config_path).clv if config_path else champion_clv_config(self.champion)
        self.reference = _read_reference(os.environ.get(SCORES_ENV))
        self.segment_basis = "scored population" if self.reference is not None else "this request"
        feature_config = self.champion.feature_config
        self.numeric_covariates = set(feature_config.covariates) - set(categorical_covariates(feature_config))
        self.new_customer_clv = _read_new_customer_clv(os.environ.get(NEW_CUSTOMER_CLV_ENV))
        self.versions = ModelVersions(
            churn=self.champion.churn_version,
            spend=self.champion.spend_version,
            feature_set=self.champion.feature_set_id,
        )
        log.info(
            "serving clvcast-churn v%s and clvcast-spend v%s (feature set %s) from %s",
            self.champion.churn_version,
            self.champion.spend_version,
            self.champion.feature_set_id,
            self.champion.tracking_uri,
        )
        # Everything loaded so far lives as long as the process: move it out of the collector's
        # reach, or full collections over the boosters pause ~2 % of large requests by ~250 ms.
        gc.collect()
        gc.freeze()

    @bentoml.api(route="/clv")
    def clv(self, request: ClvRequest, /) -> ClvResponse:
        """Churn probability, expected spend, CLV, segment and drivers of each customer as of ``as_of``."""
        request.check_covariates(self.numeric_covariates)
        # The columns as arrays, not a DataFrame: a frame and its rows cost milliseconds per request.
        scores = score_columns(
            request.to_tables(),
            as_of=request.as_of,
            champion=self.champion,
            clv=self.clv_config,
            reference=self.reference,
            top_drivers=request.drivers,
            attributes=False,
        )
        customers = CustomerClv.from_columns(scores, order=[c.customer_id for c in request.customers])
        return ClvResponse(
            as_of=request.as_of,
            horizon_days=self.champion.horizon_days,
            segment_basis=self.segment_basis,
            model_versions=self.versions,
            customers=customers,
        )

    @bentoml.api(route="/acquisition_budget")
    def acquisition_budget(self, request: BudgetRequest, /) -> BudgetResponse:
        """LTV:CAC, maximum allowable CAC and a grow / hold / cut recommendation per channel."""
        if self.new_customer_clv is None:
            return JSONResponse(
                {
                    "error": f"no new-customer CLV table: start the service with {NEW_CUSTOMER_CLV_ENV} "
                    "set to the new_customer_clv.csv written by `clvcast budget`"
                },
                status_code=503,
            )
        target = request.target_ltv_cac or self.clv_config.target_ltv_cac
        rows = acquisition_budget(
            [c.model_dump() for c in request.channels], self.new_customer_clv, target_ratio=target
        )
        return BudgetResponse(target_ltv_cac=target, model_versions=self.versions, channels=rows)

    @_model_app.get("/model", response_model=ModelInfo)
    def model(self) -> ModelInfo:
        """Model versions, training date, holdout metrics and feature-set version."""
        described = self.champion.describe()
        return ModelInfo(
            model_versions=self.versions,
            model_names={"churn": described["churn_model"]["name"], "spend": described["spend_model"]["name"]},
            run_id=described["run_id"],
            trained_at=described["trained_at"],
            training_cutoff=described["training_cutoff"],
            horizon_days=described["horizon_days"],
            holdout_metrics=described["holdout_metrics"],
            clv_settings=self.clv_config.model_dump(),
            segment_basis=self.segment_basis,
            limits={
                "customers_per_request": MAX_CUSTOMERS,
                "rows_per_customer": MAX_ROWS_PER_CUSTOMER,
                "rows_per_request": MAX_ROWS_PER_REQUEST,
            },
            tracking_uri=self.champion.tracking_uri,
        )


def _read_reference(path: str | None):
    """Segment reference of a ``clvcast score`` output, or ``None`` if unset."""
    if not path:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{SCORES_ENV}={path}: no such file (write it with `clvcast score`)")
    return SegmentReference.from_scores(read_scores(path).frame)


def _read_new_customer_clv(path: str | None):
    """The ``new_customer_clv.csv`` of ``clvcast budget`` (indexed by channel), or ``None`` if unset."""
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{NEW_CUSTOMER_CLV_ENV}={path}: no such file (write it with `clvcast budget`)")
    table = pd.read_csv(file, dtype={"channel": "str"}).set_index("channel")
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
            # BentoML's client waits in its constructor until /readyz answers 200.
            bentoml.SyncHTTPClient(server.url, server_ready_timeout=ready_timeout).close()
            yield server


def _server_environ(
    *,
    workers: int,
    tracking_uri: str | None = None,
    scores: str | Path | None = None,
    new_customer_clv: str | Path | None = None,
) -> contextlib.AbstractContextManager[None]:
    """The service's variables and worker count, set in ``os.environ`` until the block ends.

    ``bentoml.serve`` takes no environment: the workers inherit this process's when they start
    (and restart), and BentoML reads the worker count from its configuration overrides at start.
    """
    values = {BENTOML_OVERRIDES_ENV: json.dumps({"services": {ClvService.name: {"workers": workers}}})}
    if tracking_uri is not None:
        values[TRACKING_URI_ENV] = tracking_uri
    for name, path in ((SCORES_ENV, scores), (NEW_CUSTOMER_CLV_ENV, new_customer_clv)):
        if path is not None:
            values[name] = str(Path(path).resolve())
    return environ(**values)


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
