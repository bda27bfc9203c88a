"""The champion's serving artifact: everything serving needs besides the two boosters, as one typed model.

Written by :func:`training.pipeline.train` as ``clvcast/serving.json`` of the training run and read
back by :func:`training.registry.load_champion`. Serving rebuilds features and predictions from it
exactly as in training: the feature settings and feature-set id, the BTYD parameters fitted at the
training cutoff, the encoder's columns and category levels, the calibration map, the horizon, and
the whole configuration of the run (its ``clv`` section gives the CLV settings).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from features.btyd import BTYDParams
from features.config import FeatureConfig
from training.config import Config

__all__ = ["SERVING_FORMAT_VERSION", "Calibration", "EncoderSpec", "ServingArtifact"]

#: Bumped when a field changes meaning; :func:`training.registry.load_champion` refuses other versions.
SERVING_FORMAT_VERSION = 1


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
        H of the models' churn probability and spend, days.
    training_cutoff : date
        The holdout cutoff: the models learnt from data up to it only.
    training_origins : tuple of date
        The rolling origins of the training set, oldest first.
    trained_at : str
        ISO-8601 UTC time of the run.
    btyd_params : BTYDParams
        BG/NBD + Gamma-Gamma fitted on the history up to ``training_cutoff``.
    holdout_metrics : dict
        Holdout metrics per model (``clvcast``, ``btyd``, ``naive``); ``None`` where undefined.
    config : Config
        The run's whole configuration.
    encoder : EncoderSpec
    calibration : Calibration or None
    best_iterations : dict of str to int
        Trees kept per model (``churn``, ``spend``).
    btyd_offset : bool
        Whether both boosters start from the BTYD forecast.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = SERVING_FORMAT_VERSION
    feature_set_id: str
    feature_config: FeatureConfig
    horizon_days: int = Field(ge=1)
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
