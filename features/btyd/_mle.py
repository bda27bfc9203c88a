"""Shared machinery of the BTYD maximum-likelihood fits: input checks, row grouping, the optimiser.

Every model module (:mod:`.bgnbd`, :mod:`.gamma_gamma`) validates its inputs with these helpers at its
boundary, collapses identical customer summaries into weighted rows, and optimises on log-parameters
with L-BFGS-B and the analytic gradient.

Why hand-written: the likelihoods are this project's core (the classic CLV models), and no maintained
package fits them on pandas 3 (``lifetimes`` is unmaintained; ``pymc-marketing`` needs a PyMC stack for
a point estimate). scipy's optimiser does the numerical work.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

# Parameters are optimised on the log scale; these bounds (1e-9 .. 1e9) keep exp() finite while the
# line search explores, and are far outside any value a real customer base produces.
LOG_BOUND = 9.0 * np.log(10.0)
_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9}


def as_float_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: rule 'finite': {int((~np.isfinite(arr)).sum())} value(s) break it")
    return arr


def validate_rft(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single check of (x, t_x, T) at the boundary of every BG/NBD function."""
    x = as_float_array("frequency", frequency)
    tx = as_float_array("recency", recency)
    T = as_float_array("T", T)
    if not (x.shape == tx.shape == T.shape):
        raise ValueError(f"frequency, recency and T must have one length, got {x.size}, {tx.size}, {T.size}")
    rules = [
        ("frequency", "x >= 0 and whole", (x < 0) | (x != np.round(x))),
        ("recency", "0 <= recency <= T", (tx < 0) | (tx > T * (1 + 1e-12))),
        ("recency", "recency == 0 when frequency == 0", (x == 0) & (tx != 0)),
        ("T", "T >= 0", T < 0),
    ]
    for name, rule, bad in rules:
        if bad.any():
            first = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"{name}: rule '{rule}': {int(bad.sum())} row(s) break it, first rows: {first}")
    return x, tx, T


def validate_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = as_float_array("weights", weights)
    if w.size != n:
        raise ValueError(f"weights: rule 'one per row': got {w.size} for {n} rows")
    if (w < 0).any():
        raise ValueError(f"weights: rule 'weights >= 0': {int((w < 0).sum())} value(s) break it")
    return w


def group_rows(columns: dict[str, np.ndarray], weights: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Collapse identical rows into one with summed weight.

    Customer bases have many identical summaries (all one-time buyers of a cohort share x = 0,
    t_x = 0 and T), so the likelihood is evaluated on far fewer rows than there are customers.
    Rows are keyed by mixing per-column factorize codes into one integer, several times faster than
    a multi-column groupby; the key is re-densified only when it could overflow int64.
    """
    keep = weights > 0
    columns = {k: v[keep] for k, v in columns.items()}
    weights = weights[keep]
    codes = np.zeros(weights.size, dtype=np.int64)
    n_keys = 1
    for values in columns.values():
        col_codes, uniques = pd.factorize(values)
        if n_keys * len(uniques) >= 2**62:
            codes = pd.factorize(codes)[0]
            n_keys = int(codes.max()) + 1
        codes = codes * len(uniques) + col_codes
        n_keys *= len(uniques)
    codes = pd.factorize(codes)[0]
    n_groups = int(codes.max()) + 1 if codes.size else 0
    # The rows of a group are identical, so whichever of them the assignment keeps stands for it.
    representative = np.empty(n_groups, dtype=np.int64)
    representative[codes] = np.arange(codes.size)
    grouped = {k: v[representative] for k, v in columns.items()}
    return grouped, np.bincount(codes, weights=weights, minlength=n_groups)


def minimize_bounded(objective, start: np.ndarray, bounds, options: dict | None = None) -> np.ndarray:
    """L-BFGS-B with the analytic gradient (``objective`` returns value and gradient); the optimum.

    Raises
    ------
    RuntimeError
        If the optimiser ends on a non-finite point or value.
    """
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options or _OPTIONS)
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        raise RuntimeError(f"fit did not converge: {result.message}")
    return result.x


def minimize_log(objective, start: np.ndarray) -> np.ndarray:
    return np.exp(minimize_bounded(objective, start, [(-LOG_BOUND, LOG_BOUND)] * start.size))
