"""Declared feature and label columns: one schema per feature family, and the feature-set identity.

Every column that :func:`features.build.build_features` returns is declared here once, with its
dtype, its meaning and its unit. Training, serving and the tests import these declarations rather
than repeating column names. The columns depend only on the :class:`~features.config.FeatureConfig`,
never on which tables or columns a batch of data happens to have: a value that cannot be computed
from the batch is NaN (or the documented default), in the same declared column.

Dtypes are ``"int64"`` (counts and whole days, never missing), ``"float64"`` (amounts, ratios and
anything that can be missing, as NaN) and ``"str"`` (pandas string dtype, missing as NaN; training
encodes these as categoricals).

Two feature sets are compatible when :func:`feature_set_id` agrees: the id combines
:data:`FEATURE_SET_VERSION`, bumped whenever a definition changes without changing a name, with a
hash of the declared names and dtypes and of the settings that change values but not names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from features.config import FeatureConfig

__all__ = [
    "FEATURE_SET_VERSION",
    "FAMILIES",
    "LABEL_SCHEMA",
    "CUTOFF_COLUMN",
    "FeatureSpec",
    "feature_schema",
    "feature_names",
    "categorical_features",
    "feature_set_id",
    "training_set_schema",
    "check_frame",
    "windows",
    "window_pairs",
    "event_types",
    "categorical_covariates",
]

# Bump when the meaning of an existing column changes (the names/dtypes hash cannot see that).
FEATURE_SET_VERSION = "fs1"

DTYPES = ("int64", "float64", "str")


@dataclass(frozen=True)
class FeatureSpec:
    """One declared column.

    Parameters
    ----------
    name : str
        Column name.
    dtype : {"int64", "float64", "str"}
        Pandas dtype of the column.
    description : str
        What the value means, with its unit.
    family : str
        Feature family that computes it (a key of :data:`FAMILIES`), or ``"label"`` / ``"key"``.
    """

    name: str
    dtype: str
    description: str
    family: str

    def __post_init__(self):
        if self.dtype not in DTYPES + ("datetime64[ns]",):
            raise ValueError(f"FeatureSpec {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")


# --------------------------------------------------------------------------------------------------
# helpers shared with features.build


def windows(config: FeatureConfig) -> tuple[int, ...]:
    """Look-back windows of ``config``, validated, de-duplicated and sorted ascending (days)."""
    values = tuple(config.windows_days)
    bad = [w for w in values if isinstance(w, bool) or not isinstance(w, int) or w < 1]
    if bad:
        raise ValueError(f"windows_days: rule 'whole numbers of days >= 1': {bad} break it")
    if not values:
        raise ValueError("windows_days: rule 'at least one window': got none")
    return tuple(sorted(set(values)))


def window_pairs(config: FeatureConfig) -> tuple[tuple[int, int], ...]:
    """Consecutive (short, long) window pairs that get a trend ratio."""
    w = windows(config)
    return tuple(zip(w[:-1], w[1:]))


def event_types(config: FeatureConfig) -> tuple[str, ...]:
    """Event types of ``config``, validated (non-empty, unique)."""
    values = tuple(config.event_types)
    if any(not isinstance(e, str) or not e for e in values):
        raise ValueError(f"event_types: rule 'non-empty strings': got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"event_types: rule 'unique': got {values!r}")
    return values


def categorical_covariates(config: FeatureConfig) -> tuple[str, ...]:
    """Covariates kept as strings; validated to be a subset of ``config.covariates``."""
    extra = [c for c in config.categorical_covariates if c not in config.covariates]
    if extra:
        raise ValueError(f"categorical_covariates: rule 'each is also in covariates': {extra} break it")
    return tuple(config.categorical_covariates)


def _trend(what: str, short: int, long: int) -> str:
    return (
        f"{what} per day in the last {short} days divided by {what} per day in the last {long} days "
        f"(1 = steady, > 1 = accelerating); NaN when the {long}-day window is empty"
    )


# --------------------------------------------------------------------------------------------------
# one schema per family


def rfm_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Recency, frequency, monetary value and refunds over the whole history."""
    f = "rfm"
    return (
        FeatureSpec("recency_days", "int64", "days from the last purchase day to the cutoff day (0 = bought on the cutoff day)", f),
        FeatureSpec("frequency", "int64", "repeat purchase days: distinct purchase days minus one (BTYD's x)", f),
        FeatureSpec("tenure_days", "int64", "days from the first purchase day to the cutoff day (BTYD's T, in days)", f),
        FeatureSpec("purchase_count", "int64", "purchase transactions (amount >= 0), same-day ones counted separately", f),
        FeatureSpec("total_spend", "float64", "net spend over the history, refunds deducted (currency units)", f),
        FeatureSpec("monetary_value", "float64", "net spend per purchase day: total_spend / (frequency + 1) (currency units)", f),
        FeatureSpec("first_order_value", "float64", "purchases on the first purchase day, refunds excluded (currency units)", f),
        FeatureSpec("last_order_value", "float64", "purchases on the last purchase day, refunds excluded (currency units)", f),
        FeatureSpec("max_order_value", "float64", "largest purchase-day value, refunds excluded (currency units)", f),
        FeatureSpec("refund_count", "int64", "refund transactions (amount < 0)", f),
        FeatureSpec("refund_amount", "float64", "refunded amount over the history, as a positive number (currency units)", f),
        FeatureSpec("refund_share", "float64", "refund_amount / purchases before refunds (0..1 for ordinary data); NaN when all purchases are 0", f),
    )


def purchase_window_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Purchase days and net spend in each look-back window, and their trends."""
    f = "purchase_windows"
    specs = []
    for w in windows(config):
        specs.append(FeatureSpec(f"purchase_days_{w}d", "int64", f"purchase days in the last {w} days (cutoff day included)", f))
        specs.append(FeatureSpec(f"spend_{w}d", "float64", f"net spend in the last {w} days, refunds deducted (currency units)", f))
    for short, long in window_pairs(config):
        specs.append(FeatureSpec(f"purchase_trend_{short}d_{long}d", "float64", _trend("purchase days", short, long), f))
        specs.append(FeatureSpec(f"spend_trend_{short}d_{long}d", "float64", _trend("net spend", short, long), f))
    return tuple(specs)


def purchase_gap_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Inter-purchase gaps and purchase rates."""
    f = "purchase_gaps"
    return (
        FeatureSpec("gap_mean_days", "float64", "mean days between consecutive purchase days; NaN with one purchase day", f),
        FeatureSpec("gap_std_days", "float64", "sample standard deviation of the gaps between purchase days (days); NaN with fewer than two gaps", f),
        FeatureSpec("gap_max_days", "float64", "longest gap between consecutive purchase days (days); NaN with one purchase day", f),
        FeatureSpec("recency_gap_ratio", "float64", "recency_days / gap_mean_days: how overdue the next purchase is (> 1 = later than usual); NaN with one purchase day", f),
        FeatureSpec("purchase_rate_per_day", "float64", "purchase days / days observed (tenure_days + 1: the first purchase day through the cutoff day)", f),
        FeatureSpec("spend_rate_per_day", "float64", "total_spend / (tenure_days + 1) (currency units per day)", f),
    )


def engagement_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Event counts, recency and trends per configured event type."""
    f = "engagement"
    specs = []
    for e in event_types(config):
        specs.append(FeatureSpec(f"{e}_count", "int64", f"'{e}' events over the whole history", f))
        for w in windows(config):
            specs.append(FeatureSpec(f"{e}_count_{w}d", "int64", f"'{e}' events in the last {w} days (cutoff day included)", f))
        specs.append(FeatureSpec(f"{e}_days_since_last", "float64", f"days from the last '{e}' event to the cutoff day; NaN when there is none", f))
        for short, long in window_pairs(config):
            specs.append(FeatureSpec(f"{e}_trend_{short}d_{long}d", "float64", _trend(f"'{e}' events", short, long), f))
    return tuple(specs)


def attribute_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """Customer attributes from the ``customers`` table, and the configured covariates."""
    f = "attributes"
    specs = [
        FeatureSpec("channel", "str", "acquisition channel (categorical); NaN when unknown", f),
        FeatureSpec("days_since_acquisition", "int64", "days from acquired_at (default, or when later than the cutoff: the first purchase day) to the cutoff day", f),
        FeatureSpec("acquisition_cost", "float64", "CAC paid for this customer (currency units); NaN when unknown", f),
        FeatureSpec("is_referred", "float64", "1 when referred_by names a referrer, 0 when it is empty; NaN when the customers table or column is missing", f),
    ]
    categorical = categorical_covariates(config)
    for c in config.covariates:
        if c in categorical:
            specs.append(FeatureSpec(c, "str", f"customers.{c} (categorical covariate); NaN when missing", f))
        else:
            specs.append(FeatureSpec(c, "float64", f"customers.{c} (numeric covariate, units of the source); NaN when missing", f))
    return tuple(specs)


def btyd_schema(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """BG/NBD and Gamma-Gamma predictions, with population parameters fitted up to the cutoff."""
    f = "btyd"
    h = config.btyd_horizon_days
    return (
        FeatureSpec("btyd_expected_purchases", "float64", f"BG/NBD expected purchase days in the {h} days after the cutoff", f),
        FeatureSpec("btyd_p_alive", "float64", "BG/NBD probability that the customer is still active at the cutoff (0..1)", f),
        FeatureSpec("btyd_p_no_purchase", "float64", f"BG/NBD probability of no purchase in the {h} days after the cutoff (0..1): its churn probability", f),
        FeatureSpec("btyd_expected_order_value", "float64", "Gamma-Gamma expected value of a purchase day, refunds excluded (currency units)", f),
        FeatureSpec("btyd_expected_spend", "float64", f"btyd_expected_purchases * btyd_expected_order_value: expected spend in the {h} days after the cutoff (currency units)", f),
    )


# Order is the column order of build_features.
FAMILIES: dict[str, Callable[[FeatureConfig], tuple[FeatureSpec, ...]]] = {
    "rfm": rfm_schema,
    "purchase_windows": purchase_window_schema,
    "purchase_gaps": purchase_gap_schema,
    "engagement": engagement_schema,
    "attributes": attribute_schema,
    "btyd": btyd_schema,
}

LABEL_SCHEMA: tuple[FeatureSpec, ...] = (
    FeatureSpec("churn", "int64", "1 when the customer has no purchase (or, contractual: cancels) in the label window (cutoff, cutoff + horizon_days]; else 0", "label"),
    FeatureSpec("spend", "float64", "net sum of amounts in the label window, refunds deducted (currency units)", "label"),
    FeatureSpec("purchase_days", "int64", "distinct purchase days in the label window", "label"),
)

CUTOFF_COLUMN = FeatureSpec("cutoff", "datetime64[ns]", "the origin (last day of history) the row's features and labels are computed at", "key")


# --------------------------------------------------------------------------------------------------
# whole feature set


def feature_schema(config: FeatureConfig = FeatureConfig()) -> tuple[FeatureSpec, ...]:
    """Every feature column of ``config``, in the column order of ``build_features``.

    Raises
    ------
    ValueError
        If a setting is invalid or two columns would share a name (e.g. a covariate named like a
        built-in feature).
    """
    specs = tuple(spec for schema in FAMILIES.values() for spec in schema(config))
    seen: dict[str, str] = {}
    clashes = []
    for spec in specs:
        if spec.name in seen:
            clashes.append(f"{spec.name!r} ({seen[spec.name]} and {spec.family})")
        seen[spec.name] = spec.family
    label_clash = [s.name for s in LABEL_SCHEMA + (CUTOFF_COLUMN,) if s.name in seen]
    if clashes or label_clash:
        raise ValueError(
            "feature names: rule 'unique, and distinct from the label columns': "
            + ", ".join(clashes + [f"{n!r} (a label column)" for n in label_clash])
        )
    return specs


def feature_names(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """Feature column names of ``config``, in order."""
    return [s.name for s in feature_schema(config)]


def categorical_features(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """Names of the string (categorical) feature columns of ``config``."""
    return [s.name for s in feature_schema(config) if s.dtype == "str"]


def training_set_schema(config: FeatureConfig = FeatureConfig()) -> tuple[FeatureSpec, ...]:
    """Columns of :func:`features.labels.build_training_set`: features, labels, then ``cutoff``."""
    return feature_schema(config) + LABEL_SCHEMA + (CUTOFF_COLUMN,)


def feature_set_id(config: FeatureConfig = FeatureConfig()) -> str:
    """Identity of the feature set of ``config``, e.g. ``"fs1-3f2a9c0b1d"``.

    The hash covers the declared names and dtypes in order, and the settings that change values
    without changing names (the BTYD horizon and time unit), so that models trained on one feature
    set are never fed another.
    """
    lines = [f"{s.name}:{s.dtype}" for s in feature_schema(config)]
    lines.append(f"btyd_horizon_days={config.btyd_horizon_days}")
    lines.append(f"btyd_time_unit_days={float(config.btyd_time_unit_days)!r}")
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]
    return f"{FEATURE_SET_VERSION}-{digest}"


def check_frame(frame: pd.DataFrame, specs: tuple[FeatureSpec, ...]) -> None:
    """Raise if ``frame`` does not have exactly the declared columns, in order, with their dtypes.

    Parameters
    ----------
    frame : pandas.DataFrame
    specs : tuple of FeatureSpec
        E.g. ``feature_schema(config)``.

    Raises
    ------
    ValueError
        Naming the missing, unexpected, misplaced or mistyped columns.
    """
    expected = [s.name for s in specs]
    actual = [str(c) for c in frame.columns]
    problems = []
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if not missing and not extra and actual != expected:
        problems.append("columns are not in the declared order")
    for spec in specs:
        if spec.name in frame.columns and str(frame[spec.name].dtype) != spec.dtype:
            problems.append(f"column {spec.name!r}: dtype {frame[spec.name].dtype} instead of {spec.dtype}")
    if problems:
        raise ValueError("frame does not match the declared schema: " + "; ".join(problems))
