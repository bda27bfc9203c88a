"""Drift of a scoring against the reference its model stored at training: PSI and a KS test per column.

The reference (:class:`training.artifact.DriftReference`) keeps, per numeric column, the PSI bins
and 101 quantiles of the reference population, and per categorical column the share of each level;
nothing here needs the training data. Both tests come from well-kept definitions: the PSI formula
below, and :func:`scipy.stats.kstest` against the reference CDF rebuilt from its quantiles.

Why not Evidently: its drift presets compare two full datasets, so the artifact would have to carry
the reference customers' rows (or a sample), and it brings its own report stack (a large dependency
tree beside jinja2 and matplotlib, which the finance report already uses). Two well-defined tests on
a compact reference are a few lines with numpy and scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from training.artifact import CategoricalReference, NumericReference
from training.config import MonitorConfig
from training.reference import QUANTILE_LEVELS, bin_shares

__all__ = ["DRIFT_COLUMNS", "PSI_FLOOR", "categorical_drift", "drift_status", "drift_table", "ks_test", "numeric_drift",
           "psi", "reference_cdf"]

#: Share a bin is given when it is empty on one side, so that ln(a / e) stays finite. 1e-4 (one
#: customer in ten thousand) is the usual choice; it bounds one bin's contribution to about 9.2 · share.
PSI_FLOOR = 1e-4
#: Columns of :func:`drift_table`.
DRIFT_COLUMNS = ("column", "kind", "psi", "ks_statistic", "ks_pvalue", "missing_share", "reference_missing_share",
                 "importance", "status", "alerts")


def psi(expected, actual) -> float:
    """Population stability index of two distributions over the same bins.

    PSI = Σ_i (a_i − e_i) · ln(a_i / e_i), with shares of 0 raised to :data:`PSI_FLOOR` (Siddiqi,
    *Credit Risk Scorecards*, 2006, ch. 8; the symmetrised Kullback–Leibler divergence of the binned
    distributions). 0 for identical shares.

    Parameters
    ----------
    expected, actual : array-like of float, shape (n_bins,)
        Shares of the reference and of the current population in each bin (each summing to 1).

    Returns
    -------
    float
        Non-negative.

    Raises
    ------
    ValueError
        Shapes differ, or a share is negative or not finite.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"expected and actual must be 1-d of equal length, got {e.shape} and {a.shape}")
    if not (np.isfinite(e).all() and np.isfinite(a).all()) or (e < 0).any() or (a < 0).any():
        raise ValueError("shares must be finite and non-negative")
    e = np.maximum(e, PSI_FLOOR)
    a = np.maximum(a, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_cdf(quantiles):
    """The reference CDF from its 0..100 % quantiles, and its left limit.

    Exact at the quantiles and linear in between. Where quantiles tie (a mass of equal values,
    e.g. 60 % of customers with frequency 0) the CDF jumps at that value: its left limit is the
    lowest level of the tie and its value the highest, as for the empirical CDF.

    Parameters
    ----------
    quantiles : array-like of float, shape (101,)
        :attr:`training.artifact.NumericReference.quantiles`.

    Returns
    -------
    cdf, cdf_left : callable
        ``cdf(x)`` = P(X <= x) and ``cdf_left(x)`` = P(X < x) of the reference, arrays in [0, 1].
    """
    q = np.asarray(quantiles, dtype=float)
    values = np.unique(q)
    upper = QUANTILE_LEVELS[np.searchsorted(q, values, side="right") - 1]
    lower = QUANTILE_LEVELS[np.searchsorted(q, values, side="left")]

    def cdf(x):
        return np.interp(np.asarray(x, dtype=float), values, upper, left=0.0, right=1.0)

    def cdf_left(x):
        x = np.asarray(x, dtype=float)
        at = np.searchsorted(values, x, side="left")
        on_knot = (at < len(values)) & (values[np.minimum(at, len(values) - 1)] == x)
        # Between knots the CDF is continuous; at a knot its left limit is the tie's lowest level.
        return np.where(on_knot, lower[np.minimum(at, len(values) - 1)], cdf(x))

    return cdf, cdf_left


def ks_test(values, reference: NumericReference) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test of ``values`` against the reference population.

    D = sup_x |F_n(x) − F_ref(x)|, taken over the current values and the reference quantiles on
    both sides of every jump, so ties (counts, a mass at 0) are compared as the empirical CDFs
    would be (:func:`scipy.stats.kstest` against a callable assumes a continuous CDF and reports
    the mass of a tie as a gap). The p-value is the asymptotic two-sample one,
    ``scipy.stats.kstwobign.sf(D · sqrt(n m / (n + m)))`` with m the reference's finite values
    (the ``asymp`` method of :func:`scipy.stats.ks_2samp`); it is conservative for discrete data.
    The reference CDF is known at every percent, so D is exact to within 0.01 between quantiles.

    Parameters
    ----------
    values : ndarray of float, shape (n,)
        Finite current values, n >= 1.
    reference : NumericReference
        With quantiles.

    Returns
    -------
    statistic : float
        D in [0, 1].
    pvalue : float
    """
    x = np.sort(np.asarray(values, dtype=float))
    cdf, cdf_left = reference_cdf(reference.quantiles)
    points = np.unique(np.concatenate([x, np.asarray(reference.quantiles, dtype=float)]))
    n = len(x)
    right = np.abs(np.searchsorted(x, points, side="right") / n - cdf(points))
    left = np.abs(np.searchsorted(x, points, side="left") / n - cdf_left(points))
    statistic = float(max(right.max(), left.max()))
    m = reference.count * (1.0 - reference.missing_share)
    effective = n * m / (n + m)
    return statistic, float(stats.kstwobign.sf(statistic * np.sqrt(effective)))


def numeric_drift(values, reference: NumericReference) -> dict[str, float | None]:
    """PSI over the reference's bins (missing values as one more bin) and a KS test of the finite values.

    Parameters
    ----------
    values : array-like of float, shape (n,)
    reference : NumericReference

    Returns
    -------
    dict
        ``psi``, ``ks_statistic`` and ``ks_pvalue`` (:func:`ks_test`; ``None`` when either side
        has no finite value), ``missing_share`` of ``values``.
    """
    shares, missing = bin_shares(values, reference.edges)
    value = psi([*reference.shares, reference.missing_share], [*shares, missing])
    finite = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0 or len(reference.quantiles) == 0:
        return {"psi": value, "ks_statistic": None, "ks_pvalue": None, "missing_share": missing}
    statistic, pvalue = ks_test(finite, reference)
    return {"psi": value, "ks_statistic": statistic, "ks_pvalue": pvalue, "missing_share": missing}


def categorical_drift(values, reference: CategoricalReference) -> dict[str, float | None]:
    """PSI over the reference's levels, with one bin for levels it never saw and one for missing values.

    Returns
    -------
    dict
        ``psi``; ``ks_statistic`` and ``ks_pvalue`` are ``None`` (a KS test needs an order).
    """
    series = pd.Series(values, dtype="object")
    n = len(series)
    present = series.dropna().astype(str)
    counts = present.value_counts()
    levels = list(reference.shares)
    current = [float(counts.get(level, 0) / n) if n else 0.0 for level in levels]
    unseen = float(counts[~counts.index.isin(levels)].sum() / n) if n else 0.0
    missing = float((n - len(present)) / n) if n else 0.0
    value = psi([*reference.shares.values(), 0.0, reference.missing_share], [*current, unseen, missing])
    return {"psi": value, "ks_statistic": None, "ks_pvalue": None, "missing_share": missing}


def drift_status(psi_value: float, ks_statistic: float | None, ks_pvalue: float | None, config: MonitorConfig) -> str:
    """``"alert"``, ``"warn"`` or ``"ok"`` from the PSI and KS thresholds of ``config``.

    The KS statistic counts only when its p-value is below ``config.ks_pvalue``.
    """
    ks = ks_statistic if ks_statistic is not None and ks_pvalue is not None and ks_pvalue < config.ks_pvalue else 0.0
    if psi_value >= config.psi_alert or ks >= config.ks_alert:
        return "alert"
    if psi_value >= config.psi_warn or ks >= config.ks_warn:
        return "warn"
    return "ok"


def drift_table(
    frame: pd.DataFrame,
    references: dict[str, NumericReference | CategoricalReference],
    *,
    config: MonitorConfig,
    importance: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Drift of every column of ``frame`` that has a reference, worst first.

    Parameters
    ----------
    frame : DataFrame, shape (n_customers, n_columns)
        Current values (features as of the scoring date, or the scoring's predictions).
    references : dict
        :attr:`DriftReference.features` or :attr:`DriftReference.predictions`.
    config : MonitorConfig
        Thresholds.
    importance : dict of str to float, optional
        Gain share per column (:attr:`DriftReference.importance`). With it, a column alerts only
        when its status is ``"alert"`` and its share reaches ``config.drift_min_importance``;
        without it (predictions) every ``"alert"`` status alerts.

    Returns
    -------
    DataFrame
        One row per column with :data:`DRIFT_COLUMNS`: ``kind`` (numeric or categorical),
        ``psi``, ``ks_statistic``, ``ks_pvalue`` (NaN for categorical columns), ``missing_share``
        now and in the reference, ``importance`` (NaN without it), ``status`` and ``alerts``
        (bool); sorted by PSI, largest first.
    """
    rows = []
    for name, ref in references.items():
        if name not in frame.columns:
            continue
        result = numeric_drift(frame[name].astype(float), ref) if isinstance(ref, NumericReference) else (
            categorical_drift(frame[name].astype("object"), ref)
        )
        status = drift_status(result["psi"], result["ks_statistic"], result["ks_pvalue"], config)
        share = None if importance is None else float(importance.get(name, 0.0))
        alerts = status == "alert" and (share is None or share >= config.drift_min_importance)
        rows.append({
            "column": name, "kind": ref.kind, "psi": result["psi"],
            "ks_statistic": np.nan if result["ks_statistic"] is None else result["ks_statistic"],
            "ks_pvalue": np.nan if result["ks_pvalue"] is None else result["ks_pvalue"],
            "missing_share": result["missing_share"], "reference_missing_share": ref.missing_share,
            "importance": np.nan if share is None else share, "status": status, "alerts": alerts,
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)

