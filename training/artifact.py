"""The champion's serving artifact: everything serving needs besides the two boosters, as one typed model.

Written by :func:`training.pipeline.train` as ``clvcast/serving.json`` of the training run and read
back by :func:`training.registry.load_champion`. Serving rebuilds features and predictions from it
exactly as in training: the feature settings and feature-set id, the BTYD parameters fitted at the
training cutoff, the encoder's columns and category levels, the calibration map, the horizon, and
the whole configuration of the run (its ``clv`` section gives the CLV settings).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from features.btyd import BTYDParams
from features.config import FeatureConfig
from training.config import Config
from training.lifetime import LifetimeModel

__all__ = [
    "SERVING_FORMAT_VERSION",
    "Calibration",
    "CategoricalReference",
    "DriftReference",
    "EncoderSpec",
    "EvaluatedModels",
    "NumericReference",
    "ServingArtifact",
]

#: Bumped when a field changes meaning; :func:`training.registry.load_champion` refuses other versions.
#: 2: the lifetime model (dropout process, interval level) and the boosters' own label horizon.
SERVING_FORMAT_VERSION = 2


class EncoderSpec(BaseModel):
    """Feature columns in model order and the category levels of the categorical ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]


class Calibration(BaseModel):
    """Isotonic map of the churn probability: raw ``x`` to calibrated ``y``, by linear interpolation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: tuple[float, ...]
    y: tuple[float, ...]


class NumericReference(BaseModel):
    """Distribution of one numeric column in a reference population, compact enough for the artifact.

    Attributes
    ----------
    count : int
        Rows of the reference population.
    missing_share : float
        Share of rows whose value is missing or not finite, 0..1.
    quantiles : tuple of float
        The 0, 1, ..., 100 % quantiles of the finite values (empty when there are none): the
        reference CDF of the KS test, exact at these points and linear in between.
    edges : tuple of float
        Increasing inner bin edges of the PSI (distinct quantiles of the finite values at
        1/bins, 2/bins, ...); bin ``i`` holds ``edges[i-1] <= x < edges[i]``.
    shares : tuple of float
        Share of all rows in each of the ``len(edges) + 1`` bins; with ``missing_share`` they sum to 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["numeric"] = "numeric"
    count: int = Field(ge=0)
    missing_share: float = Field(ge=0, le=1)
    quantiles: tuple[float, ...]
    edges: tuple[float, ...]
    shares: tuple[float, ...]


class CategoricalReference(BaseModel):
    """Distribution of one categorical column in a reference population: the share of each level.

    Attributes
    ----------
    count : int
    missing_share : float
        Share of rows without a level, 0..1.
    shares : dict of str to float
        Share of all rows at each level seen in the reference.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["categorical"] = "categorical"
    count: int = Field(ge=0)
    missing_share: float = Field(ge=0, le=1)
    shares: dict[str, float]


class DriftReference(BaseModel):
    """What a served model saw when it was trained, to measure how far later scorings have drifted.

    Built by :func:`training.reference.drift_reference` from the customers as of ``as_of`` (the
    last day of the data the served models learnt from): their features and the models'
    predictions for them, summarised per column, so drift needs neither the training data nor
    customer-level rows in the artifact.

    Attributes
    ----------
    as_of : date
        Date of the reference population.
    customers : int
    features : dict of str to NumericReference or CategoricalReference
        Every feature column, in model order.
    predictions : dict of str to NumericReference
        ``churn_probability``, ``spend_if_active`` and ``expected_spend`` of the served models.
    importance : dict of str to float
        Share of the models' total gain per feature (mean of the churn and spend shares; 0 for a
        feature the models do not use), which decides whether its drift alerts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: date
    customers: int = Field(ge=0)
    features: dict[str, Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]]
    predictions: dict[str, NumericReference]
    importance: dict[str, float]


class EvaluatedModels(BaseModel):
    """The pair evaluated on the holdout, logged beside a refitted (served) pair in the same run.

    The champion rule of a later training scores the champion on the new holdout through this
    pair when the served pair has seen that holdout window (see :mod:`training.registry`).

    Attributes
    ----------
    churn_model, spend_model : str
        Names of the two models logged in the run (``runs:/<run_id>/<name>``).
    training_cutoff : date
        The holdout cutoff: this pair learnt from data up to it only.
    encoder : EncoderSpec
    calibration : Calibration or None
    best_iterations : dict of str to int
    btyd_offset : bool
    lifetime : LifetimeModel or None
        The lifetime model fitted with this pair at its holdout cutoff (the served pair's otherwise).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    churn_model: str
    spend_model: str
    training_cutoff: date
    encoder: EncoderSpec
    calibration: Calibration | None = None
    best_iterations: dict[str, int]
    btyd_offset: bool = False
    lifetime: LifetimeModel | None = None


class ServingArtifact(BaseModel):
    """What a training run stores for serving (``clvcast/serving.json``).

    Attributes
    ----------
    format_version : int
        :data:`SERVING_FORMAT_VERSION` of the code that wrote it.
    feature_set_id : str
        :func:`features.schema.feature_set_id` of ``feature_config`` when trained.
    feature_config : FeatureConfig
    horizon_days : int
        H of the scores' churn probability and expected spend and of each lifetime horizon, days.
    label_horizon_days : int
        H_m, the boosters' label window, days (H unless the history was too short for it).
    lifetime : LifetimeModel
        The dropout process fitted at the training cutoff, how it joins the boosters, and the
        calibrated interval level (:mod:`training.lifetime`).
    training_cutoff : date
        The last day of the data the served models learnt from (labels included): the holdout
        cutoff for a pair registered as evaluated, the last day of the data for a refitted pair.
    training_origins : tuple of date
        The rolling origins of the training set, oldest first.
    trained_at : str
        ISO-8601 UTC time of the run.
    btyd_params : BTYDParams
        BG/NBD + Gamma-Gamma fitted on the history up to ``training_cutoff``.
    holdout_metrics : dict
        Holdout metrics per model (``clvcast``, ``btyd``, ``naive``); ``None`` where undefined.
        For a refitted pair these are the metrics of the evaluated pair of the same configuration
        (``evaluated``): the refitted pair has no unseen window left to be judged on.
    holdout_cutoff : date or None
        Cutoff of the holdout window the metrics were measured on (``None`` in artifacts written
        before it was recorded, where it equals ``training_cutoff``).
    config : Config
        The run's whole configuration.
    encoder : EncoderSpec
    calibration : Calibration or None
    best_iterations : dict of str to int
        Trees kept per model (``churn``, ``spend``).
    btyd_offset : bool
        Whether both boosters start from the BTYD forecast.
    refit : bool
        Whether the served pair was refitted on origins up to the last day after the decision.
    evaluated : EvaluatedModels or None
        With ``refit``: the evaluated pair the holdout metrics belong to.
    drift_reference : DriftReference or None
        Features and predictions of the served pair's reference population (``None`` in
        artifacts written before it was recorded: monitoring then reports no drift).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[2] = SERVING_FORMAT_VERSION
    feature_set_id: str
    feature_config: FeatureConfig
    horizon_days: int = Field(ge=1)
    label_horizon_days: int = Field(ge=1)
    lifetime: LifetimeModel
    training_cutoff: date
    training_origins: tuple[date, ...]
    trained_at: str
    btyd_params: BTYDParams
    holdout_metrics: dict[str, dict[str, float | None]]
    config: Config
    encoder: EncoderSpec
    calibration: Calibration | None = None
    best_iterations: dict[str, int]
    btyd_offset: bool = False
    holdout_cutoff: date | None = None
    refit: bool = False
    evaluated: EvaluatedModels | None = None
    drift_reference: DriftReference | None = None
