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

The champion is checked once before any worker starts (a missing or incompatible champion stops
``bentoml serve`` with a message naming the model and the tracking URI), then loaded by each worker.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse

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

log = logging.getLogger(__name__)

CONFIG_ENV = "CLVCAST_CONFIG"
NEW_CUSTOMER_CLV_ENV = "CLVCAST_NEW_CUSTOMER_CLV"
SCORES_ENV = "CLVCAST_SCORES"

# GET routes: BentoML API methods are POST only, so GET /model lives in a mounted FastAPI app
# whose class-view methods receive the service instance as ``self``.
_model_app = FastAPI(title="clvcast model info")


@bentoml.service(name="clvcast", traffic={"timeout": 60})
@bentoml.asgi_app(_model_app, path="/")
class ClvService:
    """Churn, spend and CLV of customers from the ``champion`` models, over HTTP."""

    @bentoml.on_deployment
    def check_startup() -> None:
        """Fail ``bentoml serve`` before any worker starts when the champion or a setting is unusable.

        Runs once in the serving process; a failure in the workers' ``__init__`` would only make
        BentoML restart them forever.
        """
        from training.config import load_config
        from training.registry import load_champion

        load_champion()
        if os.environ.get(CONFIG_ENV):
            load_config(os.environ[CONFIG_ENV])
        _read_new_customer_clv(os.environ.get(NEW_CUSTOMER_CLV_ENV))
        _read_reference(os.environ.get(SCORES_ENV))

    def __init__(self) -> None:
        from features.spec import categorical_covariates
        from serving.scoring import champion_clv_config
        from training.config import load_config
        from training.registry import load_champion

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
        from serving.scoring import score_columns

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
        from serving.finance.acquisition import acquisition_budget

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
    from serving.scores import read_scores
    from serving.segments import SegmentReference

    if not Path(path).is_file():
        raise FileNotFoundError(f"{SCORES_ENV}={path}: no such file (write it with `clvcast score`)")
    return SegmentReference.from_scores(read_scores(path).frame)


def _read_new_customer_clv(path: str | None):
    """The ``new_customer_clv.csv`` of ``clvcast budget`` (indexed by channel), or ``None`` if unset."""
    if not path:
        return None
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{NEW_CUSTOMER_CLV_ENV}={path}: no such file (write it with `clvcast budget`)")
    table = pd.read_csv(file, dtype={"channel": "str"}).set_index("channel")
    missing = {"customers", "new_customer_clv"} - set(table.columns)
    if missing:
        raise ValueError(f"{NEW_CUSTOMER_CLV_ENV}={path}: missing column(s) {sorted(missing)}")
    return table
