"""The feature set: every feature column of a configuration, in order, and its identity.

The columns depend only on the :class:`~features.config.FeatureConfig`, never on which tables or
columns a batch of data happens to have: a value that cannot be computed from the batch is NaN (or
the documented default), in the same declared column. Each family declares its own columns
(:mod:`features.families`); this module composes them.

Two feature sets are compatible when :func:`feature_set_id` agrees: the id combines
:data:`FEATURE_SET_VERSION`, bumped whenever a definition changes without changing a name, with a
hash of the declared names and dtypes and of the settings that change values but not names.
"""

from __future__ import annotations

import hashlib

from features.config import FeatureConfig
from features.families import FAMILIES
from features.spec import FeatureSpec

__all__ = [
    "FEATURE_SET_VERSION",
    "categorical_features",
    "feature_names",
    "feature_schema",
    "feature_set_id",
]

# Bump when the meaning of an existing column changes (the names/dtypes hash cannot see that).
FEATURE_SET_VERSION = "fs1"


def feature_schema(config: FeatureConfig = FeatureConfig()) -> tuple[FeatureSpec, ...]:
    """Every feature column of ``config``, in the column order of ``build_features``.

    Raises
    ------
    ValueError
        If a setting is invalid or two columns would share a name (e.g. a covariate named like a
        built-in feature).
    """
    specs = tuple(spec for family in FAMILIES.values() for spec in family.schema(config))
    seen: dict[str, str] = {}
    clashes = []
    for spec in specs:
        if spec.name in seen:
            clashes.append(f"{spec.name!r} ({seen[spec.name]} and {spec.family})")
        seen[spec.name] = spec.family
    if clashes:
        raise ValueError("feature names: rule 'unique': " + ", ".join(clashes))
    return specs


def feature_names(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """Feature column names of ``config``, in order."""
    return [s.name for s in feature_schema(config)]


def categorical_features(config: FeatureConfig = FeatureConfig()) -> list[str]:
    """Names of the string (categorical) feature columns of ``config``."""
    return [s.name for s in feature_schema(config) if s.dtype == "str"]


def feature_set_id(config: FeatureConfig = FeatureConfig()) -> str:
    """Identity of the feature set of ``config``, e.g. ``"fs1-3f2a9c0b1d"``.

    The hash covers the declared names and dtypes in order, and the settings that change values
    without changing names (the BTYD horizon, time unit and model), so that models trained on one feature
    set are never fed another.
    """
    lines = [f"{s.name}:{s.dtype}" for s in feature_schema(config)]
    lines.append(f"btyd_horizon_days={config.btyd_horizon_days}")
    lines.append(f"btyd_time_unit_days={float(config.btyd_time_unit_days)!r}")
    if config.btyd_model != "bgnbd":  # the ids of BG/NBD feature sets stay what they were
        lines.append(f"btyd_model={config.btyd_model}")
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]
    return f"{FEATURE_SET_VERSION}-{digest}"
