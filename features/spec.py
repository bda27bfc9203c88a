"""How a feature column is declared: :class:`FeatureSpec`, the settings every family reads, and frame assembly.

Every column clvcast computes (features, labels, keys) is declared once as a :class:`FeatureSpec` with
its dtype, its meaning and its unit, in the module that computes it. Dtypes are ``"int64"`` (counts
and whole days, never missing), ``"float64"`` (amounts, ratios and anything that can be missing, as
NaN) and ``"str"`` (pandas string dtype, missing as NaN; training encodes these as categoricals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import FeatureConfig

__all__ = [
    "DTYPES",
    "FeatureSpec",
    "assemble",
    "categorical_covariates",
    "check_frame",
    "event_types",
    "trend_description",
    "window_pairs",
    "windows",
]

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


def windows(config: FeatureConfig) -> tuple[int, ...]:
    """Look-back windows of ``config``, de-duplicated and sorted ascending (days).

    The values themselves are validated where they are declared, in :class:`FeatureConfig`.
    """
    return tuple(sorted(set(config.windows_days)))


def window_pairs(config: FeatureConfig) -> tuple[tuple[int, int], ...]:
    """Consecutive (short, long) window pairs that get a trend ratio."""
    w = windows(config)
    return tuple(zip(w[:-1], w[1:]))


def event_types(config: FeatureConfig) -> tuple[str, ...]:
    """Event types of ``config`` that get engagement features, in order."""
    return tuple(config.event_types)


def categorical_covariates(config: FeatureConfig) -> tuple[str, ...]:
    """Covariates kept as strings (a subset of ``config.covariates``, checked by :class:`FeatureConfig`)."""
    return tuple(config.categorical_covariates)


def trend_description(what: str, short: int, long: int) -> str:
    return (
        f"{what} per day in the last {short} days divided by {what} per day in the last {long} days "
        f"(1 = steady, > 1 = accelerating); NaN when the {long}-day window is empty"
    )


def assemble(ids: pd.Index, specs: tuple[FeatureSpec, ...], columns: dict) -> pd.DataFrame:
    """Assemble declared columns, in declared order and dtype, on the customer index."""
    data = {}
    for spec in specs:
        values = columns[spec.name]
        if spec.dtype == "str":
            data[spec.name] = values if isinstance(values.dtype, pd.StringDtype) else pd.array(values, dtype="str")
        else:
            data[spec.name] = np.asarray(values, dtype=spec.dtype)
    return pd.DataFrame(data, index=ids, columns=[s.name for s in specs], copy=False)


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
