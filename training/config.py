"""The one typed configuration of clvcast: features, training and CLV arithmetic.

Built in one place, :func:`load_config`, from an optional YAML/JSON file and keyword overrides (the
CLI flags), and logged whole to MLflow through :meth:`Config.to_flat_dict`. Every dataclass is
frozen: a run's settings cannot change after they were logged.

File format (every key optional; unknown keys are an error, so a typo never silently falls back to
a default)::

    features:
      windows_days: [30, 90, 180, 365]
    training:
      horizon_days: 182
      spend_objective: tweedie
      churn_params: {num_leaves: 15, learning_rate: 0.05}
    clv:
      gross_margin: 0.3
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from features.config import FeatureConfig

ChurnDefinition = Literal["purchase", "cancel"]
SpendObjective = Literal["tweedie", "gamma", "regression", "regression_l1", "huber"]
ChurnCalibration = Literal["none", "isotonic"]

# Features that grow with a customer's age rather than describe its behaviour: counts and sums over
# the whole history, and the age itself. Training origins see younger customers than the
# prediction date (a cohort ages between them), so trees trained on these extrapolate badly.
AGE_DEPENDENT_FEATURES = (
    "tenure_days",
    "days_since_acquisition",
    "frequency",
    "purchase_count",
    "total_spend",
    "refund_count",
    "refund_amount",
)
# Log-offset features of the BG/NBD + Gamma-Gamma start (see TrainingConfig.btyd_offset).
BTYD_OFFSET_FEATURES = ("btyd_p_no_purchase", "btyd_expected_spend")


class ConfigError(ValueError):
    """A configuration file or override breaks a rule; the message names the key and the rule."""


@dataclass(frozen=True, kw_only=True)
class LightGBMParams:
    """Hyperparameters of one LightGBM model (names as in the ``lightgbm`` scikit-learn API).

    Parameters
    ----------
    num_boost_round : int
        Maximum number of trees; early stopping on the time-held-out slice usually stops sooner.
    learning_rate : float
        Shrinkage per tree.
    num_leaves : int
        Maximum leaves per tree.
    min_child_samples : int
        Minimum rows per leaf. High by default: customer data is noisy and rows of one customer
        repeat across stacked origins, so small leaves memorise customers.
    subsample : float
        Row fraction per bagging round (used every ``subsample_freq`` trees).
    subsample_freq : int
        Bagging frequency; 0 turns bagging off.
    colsample_bytree : float
        Feature fraction per tree.
    reg_lambda : float
        L2 regularisation of leaf values.
    max_bin : int
        Histogram bins per feature.
    min_split_gain : float
        Minimum loss reduction to split.
    """

    num_boost_round: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 100
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    max_bin: int = 255
    min_split_gain: float = 0.0

    def validate(self, prefix: str) -> None:
        _check(self.num_boost_round >= 1, f"{prefix}.num_boost_round", "must be >= 1")
        _check(self.learning_rate > 0, f"{prefix}.learning_rate", "must be > 0")
        _check(self.num_leaves >= 2, f"{prefix}.num_leaves", "must be >= 2")
        _check(self.min_child_samples >= 1, f"{prefix}.min_child_samples", "must be >= 1")
        _check(0 < self.subsample <= 1, f"{prefix}.subsample", "must be in (0, 1]")
        _check(self.subsample_freq >= 0, f"{prefix}.subsample_freq", "must be >= 0")
        _check(0 < self.colsample_bytree <= 1, f"{prefix}.colsample_bytree", "must be in (0, 1]")
        _check(self.reg_lambda >= 0, f"{prefix}.reg_lambda", "must be >= 0")
        _check(self.max_bin >= 2, f"{prefix}.max_bin", "must be >= 2")
        _check(self.min_split_gain >= 0, f"{prefix}.min_split_gain", "must be >= 0")


# Small trees with large leaves: customers repeat across stacked origins, so bigger trees memorise
# them (on CDNOW pseudo-holdouts 63 leaves lost 0.01 churn AUC; 15 leaves x 200 rows beat the
# generic 31 x 100 on decile MAPE, 0.107 vs 0.149, at the same MAE). More rounds, since the trees
# only correct the BTYD start.
_RECIPE_PARAMS = LightGBMParams(num_leaves=15, min_child_samples=200, num_boost_round=600)


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """How the churn and spend models are trained and judged.

    Parameters
    ----------
    horizon_days : int
        Label horizon H in days: churn = no purchase in (cutoff, cutoff + H], spend = their sum.
        The BTYD features use the same horizon unless ``features.btyd_horizon_days`` is set.
        Default 182 (half a year): long enough that most active customers buy again (CDNOW median
        repeat gap is ~2 months), short enough to leave several training origins in two years of
        history, and the standard CDNOW benchmark protocol.
    n_cutoffs : int
        Number of rolling training origins stacked into the training set. Their label windows end
        on or before the evaluation cutoff, so the evaluation window is never seen in training.
        Origins before the first purchase are dropped.
    step_days : int
        Days between consecutive training origins. Default 13 origins 14 days apart: half a year
        of origins, so the models see customers at many ages (on CDNOW, step 7 did no better than
        14 at twice the rows).
    min_history_days : int
        Origins less than this many days after the first purchase are dropped: there the history
        cannot identify BG/NBD (a fit six days in gave P(no purchase) up to 1 and poisoned the
        boosters' start). 0 keeps every origin on or after the first purchase.
    validation_cutoffs : int
        How many of the latest training origins form the time-held-out slice used for early
        stopping and for the isotonic calibration of the churn probability; 0 trains on every
        origin for ``num_boost_round`` trees without calibration.
    early_stopping_rounds : int
        Stop when the validation loss has not improved for this many trees; 0 disables.
    churn_definition : {"purchase", "cancel"}
        ``"purchase"``: non-contractual churn, no purchase in the window; ``"cancel"``:
        contractual, a ``cancel`` event in the window (needs an events table).
    churn_params, spend_params : LightGBMParams
        Hyperparameters of the churn classifier and of the spend regressor; by default 15 leaves,
        200 rows per leaf, up to 600 trees.
    spend_objective : {"tweedie", "gamma", "regression", "regression_l1", "huber"}
        Loss of the spend regressor. Tweedie by default: spend given a purchase is right-skewed.
        Measured on CDNOW at cutoff 1997-09-30, horizon 91 days (before the benchmark holdout),
        expected-spend MAE / RMSE / decile MAPE / total vs actual 299k: tweedie 14.95 / 43.4 /
        0.174 / 260k; gamma 14.88 / 44.6 / 0.189 / 250k; l2 15.03 / 44.2 / 0.177 / 265k; l1
        14.21 / 46.5 / 0.351 / 206k; huber 16.00 / 50.0 / 0.190 / 241k. Tweedie has the best RMSE
        and decile totals and an MAE within 0.5% of the best smooth loss; l1's lower MAE comes
        from predicting the median, which misses totals by a third.
    tweedie_variance_power : float
        Tweedie power p in (1, 2); only used with ``spend_objective="tweedie"``.
    btyd_offset : bool
        Boost from the BG/NBD + Gamma-Gamma forecast instead of from a constant: the churn
        classifier starts from the log-odds of ``btyd_p_no_purchase`` and the spend regressor from
        the log of ``btyd_expected_spend / (1 - btyd_p_no_purchase)`` (BTYD's spend given a
        purchase), so the trees learn corrections to a model that already extrapolates with the
        customer's age. Needs those two features and a log-link spend objective (tweedie, gamma).
    exclude_features : tuple of str
        Feature columns the models do not see. By default :data:`AGE_DEPENDENT_FEATURES`.
    churn_calibration : {"none", "isotonic"}
        ``"isotonic"`` maps the classifier's probability through an isotonic regression fitted on
        the time-held-out slice. Off by default: with the BTYD offset the classifier is already
        calibrated by its log loss, and the slice's churn rate (younger customers) is not the
        prediction date's, so the map moved the forecast the wrong way.

    How the defaults were chosen: on CDNOW pseudo-holdouts that end before the benchmark window
    (cutoff 1997-07-31 and 1997-09-30, horizon 91 days, origins every 7 or 14 days back to January
    1997); see ``BENCHMARKS.md``.
    seed : int
        Seed of every random choice (bagging, feature fraction). Together with ``num_threads`` and
        LightGBM's ``deterministic`` mode it makes the same data + config give the same metrics.
    num_threads : int
        LightGBM threads. Fixed rather than "all cores" so results do not depend on the machine.
        1 by default: on books up to a few hundred thousand rows OpenMP threads cost more than they
        gain whenever other processes share the cores (measured on CDNOW's 94k training rows on a
        busy 2-core machine: 2.1 s per 100 trees with 1 thread, 14.6 s with 2). Raise it for large
        books on a dedicated machine.
    """

    horizon_days: int = 182
    n_cutoffs: int = 13
    step_days: int = 14
    min_history_days: int = 0
    validation_cutoffs: int = 1
    early_stopping_rounds: int = 50
    churn_definition: ChurnDefinition = "purchase"
    churn_params: LightGBMParams = field(default_factory=lambda: _RECIPE_PARAMS)
    spend_params: LightGBMParams = field(default_factory=lambda: _RECIPE_PARAMS)
    spend_objective: SpendObjective = "tweedie"
    tweedie_variance_power: float = 1.5
    btyd_offset: bool = True
    exclude_features: tuple[str, ...] = AGE_DEPENDENT_FEATURES
    churn_calibration: ChurnCalibration = "none"
    seed: int = 42
    num_threads: int = 1

    def validate(self) -> None:
        _check(self.horizon_days >= 1, "training.horizon_days", "must be >= 1")
        _check(self.n_cutoffs >= 1, "training.n_cutoffs", "must be >= 1")
        _check(self.step_days >= 1, "training.step_days", "must be >= 1")
        _check(self.min_history_days >= 0, "training.min_history_days", "must be >= 0")
        _check(
            0 <= self.validation_cutoffs < self.n_cutoffs,
            "training.validation_cutoffs",
            f"must be >= 0 and < n_cutoffs ({self.n_cutoffs}): training needs at least one origin",
        )
        _check(self.early_stopping_rounds >= 0, "training.early_stopping_rounds", "must be >= 0")
        _check(1 < self.tweedie_variance_power < 2, "training.tweedie_variance_power", "must be in (1, 2)")
        _check(
            not self.btyd_offset or self.spend_objective in ("tweedie", "gamma"),
            "training.btyd_offset",
            f"needs a log-link spend_objective (tweedie or gamma), got {self.spend_objective!r}",
        )
        clash = sorted(set(BTYD_OFFSET_FEATURES) & set(self.exclude_features)) if self.btyd_offset else []
        _check(not clash, "training.exclude_features", f"must keep {clash}: btyd_offset starts from them")
        _check(self.num_threads >= 1, "training.num_threads", "must be >= 1 (a fixed count keeps runs reproducible)")
        self.churn_params.validate("training.churn_params")
        self.spend_params.validate("training.spend_params")


@dataclass(frozen=True, kw_only=True)
class ClvConfig:
    """Parameters of the CLV and CAC arithmetic (used by serving and the finance report).

    Parameters
    ----------
    gross_margin : float
        m, share of spend kept as margin, in [0, 1].
    cost_to_serve : float
        c, cost per active customer per horizon, in currency units.
    annual_discount_rate : float
        d, yearly discount rate; per horizon δ = (1 + d)^(H/365) − 1.
    lifetime_horizons : int
        K, number of horizons summed in lifetime CLV (the lifetime cap). Default 10 (five years at
        H = 182 days): beyond that a forecast is a guess that discounting barely dampens.
    target_ltv_cac : float
        Target LTV:CAC ratio; maximum allowable CAC = mean CLV / target.
    referral_share : float
        Share of a referred customer's CLV credited to the referrer, in [0, 1].
    referral_bonus : float
        Referral bonus paid per referred customer, in currency units; deducted from the credit.
    """

    gross_margin: float = 0.3
    cost_to_serve: float = 0.0
    annual_discount_rate: float = 0.10
    lifetime_horizons: int = 10
    target_ltv_cac: float = 3.0
    referral_share: float = 0.1
    referral_bonus: float = 0.0

    def validate(self) -> None:
        _check(0 <= self.gross_margin <= 1, "clv.gross_margin", "must be in [0, 1]")
        _check(0 <= self.referral_share <= 1, "clv.referral_share", "must be in [0, 1]")
        _check(self.referral_bonus >= 0, "clv.referral_bonus", "must be >= 0")
        _check(self.cost_to_serve >= 0, "clv.cost_to_serve", "must be >= 0")
        _check(self.annual_discount_rate > -1, "clv.annual_discount_rate", "must be > -1")
        _check(self.lifetime_horizons >= 1, "clv.lifetime_horizons", "must be >= 1")
        _check(self.target_ltv_cac > 0, "clv.target_ltv_cac", "must be > 0")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a run depends on: feature, training and CLV settings."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    clv: ClvConfig = field(default_factory=ClvConfig)

    def validate(self) -> Config:
        self.training.validate()
        self.clv.validate()
        _check(
            not self.training.btyd_offset or self.features.btyd_horizon_days == self.training.horizon_days,
            "features.btyd_horizon_days",
            f"must equal training.horizon_days ({self.training.horizon_days}) with btyd_offset: the "
            f"models start from the BTYD forecast over the label horizon, got {self.features.btyd_horizon_days}",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples become lists), the inverse of :func:`config_from_dict`."""
        return json.loads(json.dumps(asdict(self)))

    def to_flat_dict(self) -> dict[str, Any]:
        """Flat ``{"training.churn_params.num_leaves": 31, ...}`` for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


_SECTIONS = {"features": FeatureConfig, "training": TrainingConfig, "clv": ClvConfig}


def load_config(path: str | Path | None = None, /, **overrides: Any) -> Config:
    """Build the configuration from an optional file and overrides.

    Parameters
    ----------
    path : str or Path, optional
        A ``.yaml``/``.yml`` or ``.json`` file with the sections ``features``, ``training``, ``clv``.
    **overrides
        Values that win over the file, typically CLI flags. A key is either a field name that is
        unique across sections (``horizon_days``, ``gross_margin``, ``target_ltv_cac``) or a path
        joined by double underscores (``training__churn_params__num_leaves``). ``None`` values are
        ignored, so unset CLI flags can be passed through as they are.

    Returns
    -------
    Config
        Validated configuration.

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, wrong type or a value outside its range.
    """
    data = _read_file(Path(path)) if path is not None else {}
    return config_from_dict(_apply_overrides(data, overrides))


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (as read from a file or MLflow)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected {sorted(_SECTIONS)}")
    built = {name: _build(cls, data.get(name) or {}, name) for name, cls in _SECTIONS.items()}
    if "btyd_horizon_days" not in (data.get("features") or {}):
        # The BTYD features forecast over the label horizon unless told otherwise.
        built["features"] = dataclasses.replace(built["features"], btyd_horizon_days=built["training"].horizon_days)
    return Config(**built).validate()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    import yaml

    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path}: cannot parse: {first_line}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    return data


def _leaf_index() -> dict[str, list[tuple[str, ...]]]:
    index: dict[str, list[tuple[str, ...]]] = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            index.setdefault(f.name, []).append((section, f.name))
    return index


def _resolve_override(key: str) -> tuple[str, ...]:
    if "__" in key:
        parts = tuple(key.split("__"))
        if parts[0] not in _SECTIONS:
            raise ConfigError(f"override {key!r}: unknown section {parts[0]!r}")
        return parts
    matches = _leaf_index().get(key, [])
    if not matches:
        raise ConfigError(f"unknown config override {key!r}")
    if len(matches) > 1:
        options = ", ".join("__".join(m) for m in matches)
        raise ConfigError(f"override {key!r} is ambiguous; use one of {options}")
    return matches[0]


def _build(cls: type, values: Any, where: str) -> Any:
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"config {where}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"config {where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {where}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert a value read from YAML/JSON/CLI to the declared type, or say which rule it breaks."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = getattr(hint, "__origin__", None)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"config {where}: must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {where}: expected a list, got {value!r}")
        (item,) = get_args(hint)[:1]
        return tuple(_coerce(item, v, f"{where}[]") for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config {where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config {where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config {where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config {where}: expected a string, got {value!r}")
        return value
    return value


def with_overrides(config: Config, **overrides: Any) -> Config:
    """A validated copy of ``config`` with overrides applied as in :func:`load_config`."""
    data = config.to_dict()
    if data["features"]["btyd_horizon_days"] == data["training"]["horizon_days"]:
        # The BTYD horizon follows the label horizon: a new horizon carries it along.
        del data["features"]["btyd_horizon_days"]
    return config_from_dict(_apply_overrides(data, overrides))


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None:
            continue
        parts = _resolve_override(key)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key {'.'.join(parts)!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _check(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config {key}: {rule}")


__all__ = [
    "AGE_DEPENDENT_FEATURES",
    "BTYD_OFFSET_FEATURES",
    "ChurnCalibration",
    "ChurnDefinition",
    "ClvConfig",
    "Config",
    "ConfigError",
    "LightGBMParams",
    "SpendObjective",
    "TrainingConfig",
    "config_from_dict",
    "load_config",
    "with_overrides",
]
