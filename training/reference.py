"""The drift reference of a served model: its population's features and predictions, summarised per column.

:func:`drift_reference` is called by :func:`training.pipeline.train` on the customers as of the
last day the served models learnt from; the summary (quantiles and PSI bins per numeric column,
level shares per categorical one, the models' gain share per feature) is stored in the serving
artifact, so that ``clvcast monitor`` can measure drift without the training data.
:func:`bin_shares` is the one binning rule: the monitor bins a later scoring with it and the
stored edges, so reference and scoring are cut alike.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from training.artifact import CategoricalReference, DriftReference, NumericReference

__all__ = ["PREDICTION_COLUMNS", "QUANTILE_LEVELS", "bin_shares", "categorical_reference", "drift_reference",
           "numeric_reference"]

#: Quantile levels kept per numeric column: the reference CDF of the KS test at every percent.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
#: Model outputs whose distribution is part of the reference.
PREDICTION_COLUMNS = ("churn_probability", "spend_if_active", "expected_spend")


def _finite(values) -> tuple[np.ndarray, int]:
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return x[np.isfinite(x)], len(x)


def bin_shares(values, edges) -> tuple[np.ndarray, float]:
    """Share of all values in each bin cut at ``edges``, and the share that is missing or not finite.

    Parameters
    ----------
    values : array-like of float, shape (n,)
    edges : array-like of float, shape (k,)
        Increasing inner edges; bin ``i`` holds ``edges[i-1] <= x < edges[i]`` (bin 0 everything
        below ``edges[0]``, bin ``k`` everything from ``edges[-1]`` up).

    Returns
    -------
    shares : ndarray, shape (k + 1,)
        Shares of all ``n`` values (0 when ``n`` is 0).
    missing_share : float
    """
    finite, n = _finite(values)
    edges = np.asarray(edges, dtype=float)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    if n == 0:
        return np.zeros(len(edges) + 1), 0.0
    return counts / n, float((n - len(finite)) / n)


def numeric_reference(values, *, bins: int) -> NumericReference:
    """Quantiles and PSI bins of one numeric column.

    Parameters
    ----------
    values : array-like of float, shape (n,)
        Missing and non-finite values count in ``missing_share``.
    bins : int
        Number of quantile bins before tied quantiles are merged (10: deciles).
    """
    finite, n = _finite(values)
    if len(finite) == 0:
        return NumericReference(count=n, missing_share=1.0 if n else 0.0, quantiles=(), edges=(), shares=(0.0,))
    edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins))
    shares, missing = bin_shares(values, edges)
    return NumericReference(
        count=n,
        missing_share=missing,
        quantiles=tuple(float(q) for q in np.quantile(finite, QUANTILE_LEVELS)),
        edges=tuple(float(e) for e in edges),
        shares=tuple(float(s) for s in shares),
    )


def categorical_reference(values) -> CategoricalReference:
    """Share of each level of one categorical column (missing values in ``missing_share``)."""
    series = pd.Series(values, dtype="object")
    n = len(series)
    present = series.dropna().astype(str)
    counts = present.value_counts(sort=False)
    return CategoricalReference(
        count=n,
        missing_share=float((n - len(present)) / n) if n else 0.0,
        shares={str(level): float(c / n) for level, c in counts.sort_index().items()},
    )


def drift_reference(
    features: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    importance: pd.DataFrame,
    as_of: dt.date,
    bins: int = 10,
) -> DriftReference:
    """Summarise a served model's reference population for the drift checks of ``clvcast monitor``.

    Parameters
    ----------
    features : DataFrame, shape (n_customers, n_features)
        Feature rows of the reference population (one per customer); numeric and boolean columns
        are summarised as numbers, the others as categories.
    predictions : DataFrame, shape (n_customers, 3)
        The models' :data:`PREDICTION_COLUMNS` for the same customers.
    importance : DataFrame
        :meth:`training.models.ClvModels.feature_importance`: gain per feature (index) in columns
        ``churn`` and ``spend``.
    as_of : date
        Date of the population.
    bins : int
        PSI bins per numeric column (``monitor.psi_bins``).

    Returns
    -------
    DriftReference
    """
    summaries = {}
    for name in features.columns:
        column = features[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            summaries[str(name)] = numeric_reference(column.astype(float), bins=bins)
        else:
            summaries[str(name)] = categorical_reference(column.astype("object"))
    shares = pd.Series(0.0, index=[str(c) for c in features.columns])
    for model in ("churn", "spend"):
        gain = importance[model].astype(float)
        total = gain.sum()
        if total > 0:
            # Each model's gains as shares of its own total, averaged: the two are on other scales.
            shares = shares.add(0.5 * gain / total, fill_value=0.0)
    return DriftReference(
        as_of=as_of,
        customers=len(features),
        features=summaries,
        predictions={c: numeric_reference(predictions[c], bins=bins) for c in PREDICTION_COLUMNS},
        importance={str(k): float(v) for k, v in shares.items()},
    )
