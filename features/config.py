"""Feature settings. A frozen dataclass: built once from file + CLI flags, logged whole to MLflow."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_EVENT_TYPES = ("session", "email_open", "email_click", "support_ticket", "cancel")


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Settings that decide which feature columns exist.

    Parameters
    ----------
    windows_days : tuple of int
        Look-back windows, in days, for purchase and engagement counts.
    event_types : tuple of str
        Event types that get engagement features. Fixed per feature set so that the columns do not
        depend on which events happen to be in a batch.
    covariates : tuple of str
        Extra columns of the ``customers`` table used as features (numeric, or categorical if string).
    categorical_covariates : tuple of str
        The names among ``covariates`` that are categorical: kept as strings (training encodes them).
        The other covariates are cast to float64. Declared here rather than read from the data, so
        that the feature columns and dtypes depend on the config only.
    btyd_horizon_days : int
        Horizon, in days, of the BG/NBD expected-purchases feature.
    btyd_time_unit_days : float
        Time unit of the BG/NBD and Gamma-Gamma fits (7 = weeks, as in the literature).
    """

    windows_days: tuple[int, ...] = (30, 90, 180, 365)
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    covariates: tuple[str, ...] = ()
    categorical_covariates: tuple[str, ...] = ()
    btyd_horizon_days: int = 182
    btyd_time_unit_days: float = 7.0

    def to_dict(self) -> dict:
        return asdict(self)
