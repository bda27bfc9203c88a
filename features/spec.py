"""How a feature column is declared: :class:`FeatureSpec`, the settings every family reads, and frame assembly.

Every column clvcast computes (features, labels, keys) is declared once as a :class:`FeatureSpec` with
its dtype, its meaning and its unit, in the module that computes it. Dtypes are ``"int64"`` (counts
and whole days, never missing), ``"float64"`` (amounts, ratios and anything that can be missing, as
NaN) and ``"str"`` (pandas string dtype, missing as NaN; training encodes these as categoricals).

A number column promises a finite value for every customer unless its spec says ``allow_nan``
(a value that is undefined for some customers, such as the mean gap of a customer with one purchase
day; the description says when). :func:`assemble` enforces the promise: no frame it builds holds
NaN where a number was promised, nor infinity anywhere.
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
    allow_nan : bool
        ``"float64"`` only: whether NaN is a legitimate value (undefined for some customers, as the
        description says). False: the column promises a finite number for every customer.

    Raises
    ------
    ValueError
        On an unknown dtype, or ``allow_nan`` on a column that is not ``"float64"``.
    """

    name: str
    dtype: str
    description: str
    family: str
    allow_nan: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES + ("datetime64[ns]",):
            raise ValueError(f"FeatureSpec {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.allow_nan and self.dtype != "float64":
            raise ValueError(f"FeatureSpec {self.name!r}: allow_nan applies to float64 columns, not {self.dtype}")


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
    """Assemble declared columns, in declared order and dtype, on the customer index.

    Parameters
    ----------
    ids : pandas.Index
        The customers, one per row.
    specs : tuple of FeatureSpec
        The columns, in order.
    columns : dict
        Values per column name, aligned with ``ids``.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        If a number column holds a value it does not allow: infinity anywhere, NaN where the spec
        promises a number (``allow_nan`` false). The message names the column and its first
        customers, so that no command writes such a value and exits 0.
    """
    data = {}
    for spec in specs:
        values = columns[spec.name]
        if spec.dtype == "str":
            data[spec.name] = values if isinstance(values.dtype, pd.StringDtype) else pd.array(values, dtype="str")
            continue
        values = np.asarray(values)
        if spec.dtype in ("float64", "int64") and values.dtype.kind in "fc":
            _check_finite(spec, values, ids)
        data[spec.name] = values.astype(spec.dtype, copy=False)
    return pd.DataFrame(data, index=ids, columns=[s.name for s in specs], copy=False)


def _check_finite(spec: FeatureSpec, values: np.ndarray, ids: pd.Index) -> None:
    # int64 is checked too: casting NaN to int64 would write -9223372036854775808, not fail.
    bad = np.isinf(values) if spec.allow_nan else ~np.isfinite(values)
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    shown = ", ".join(f"{ids[i]} ({values[i]})" for i in rows[:5])
    rule = "NaN allowed, infinity never" if spec.allow_nan else "a finite number for every customer"
    raise ValueError(
        f"{spec.family} column {spec.name!r}: rule 'finite' ({rule}): {rows.size:,} of {values.size:,} "
        f"customer(s) break it, first: {shown}"
    )


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
