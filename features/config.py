"""Feature settings: a frozen pydantic model, built once (:func:`training.config.load_config`) and logged whole."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_EVENT_TYPES", "FeatureConfig"]

DEFAULT_EVENT_TYPES = ("session", "email_open", "email_click", "support_ticket", "cancel")


class FeatureConfig(BaseModel):
    """Settings that decide which feature columns exist.

    Parameters
    ----------
    windows_days : tuple of int
        Look-back windows, in days, for purchase and engagement counts (each >= 1; columns follow
        them sorted and de-duplicated).
    event_types : tuple of str
        Event types that get engagement features (non-empty, unique). Fixed per feature set so that
        the columns do not depend on which events happen to be in a batch.
    event_types_from_data : bool
        At training (``clvcast train``, ``backtest``, ``features``), append to ``event_types`` the
        other types of the history up to the cutoff that are usable (:mod:`features.event_types`:
        a snake-case name, at least 10 customers), e.g. a SaaS book's ``login``; the run's feature
        set then holds them. Unknown types are reported either way (True).
    covariates : tuple of str
        Extra columns of the ``customers`` table used as features (numeric, or categorical if listed
        in ``categorical_covariates``).
    categorical_covariates : tuple of str
        The names among ``covariates`` that are categorical: kept as strings (training encodes them).
        The other covariates are cast to float64. Declared here rather than read from the data, so
        that the feature columns and dtypes depend on the config only.
    btyd_horizon_days : int
        Horizon, in days, of the BG/NBD expected-purchases feature.
    btyd_time_unit_days : float
        Time unit of the BG/NBD and Gamma-Gamma fits (7 = weeks, as in the literature).
    btyd_model : {"bgnbd", "pareto"}
        The repeat-purchase model behind ``btyd_expected_purchases``, ``btyd_p_alive``,
        ``btyd_p_no_purchase`` and ``btyd_spend_if_active`` (and so the boosters' start): BG/NBD, or
        Pareto/NBD (fitted at each cutoff as well; a few seconds more per training origin).

    Raises
    ------
    pydantic.ValidationError
        On an unknown key, a wrong type or a value outside its range.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows_days: tuple[int, ...] = (30, 90, 180, 365)
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    event_types_from_data: bool = True
    covariates: tuple[str, ...] = ()
    categorical_covariates: tuple[str, ...] = ()
    btyd_horizon_days: int = Field(182, ge=1)
    btyd_time_unit_days: float = Field(7.0, gt=0, allow_inf_nan=False)
    btyd_model: Literal["bgnbd", "pareto"] = "bgnbd"

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("at least one window")
        bad = [w for w in value if w < 1]
        if bad:
            raise ValueError(f"whole numbers of days >= 1: {bad} break it")
        return value

    @field_validator("event_types")
    @classmethod
    def _event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not e for e in value):
            raise ValueError("non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError(f"unique: got {list(value)}")
        return value

    @model_validator(mode="after")
    def _categorical_are_covariates(self) -> FeatureConfig:
        extra = [c for c in self.categorical_covariates if c not in self.covariates]
        if extra:
            raise ValueError(f"categorical_covariates: each is also in covariates: {extra} break it")
        return self
