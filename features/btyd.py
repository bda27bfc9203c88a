"""BG/NBD and Gamma-Gamma: closed-form likelihoods, fits and predictions ("buy till you die" models).

These are the baseline models of the project and may also serve as features. They are written here
with scipy rather than taken from a package because no maintained package fits them on pandas 3.

Conventions
-----------
Inputs follow the BTYD summary of :func:`summary_from_transactions`, all times in one *time unit*
(``time_unit_days`` days, weeks by default):

- ``frequency`` x: number of repeat purchase days (distinct purchase days minus one);
- ``recency`` t_x: time from the first to the last purchase day (0 when x = 0). Note that this is the
  BTYD quantity, not the project's ``recency_days`` (last purchase to cutoff);
- ``T``: time from the first purchase day to the cutoff day;
- ``monetary_value``: mean value of the repeat purchase days (the first purchase day excluded).

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. *Marketing Science* 24(2), 275-284.
.. [2] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. *Journal of Marketing Research* 42(4), 415-430.
.. [3] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
   http://www.brucehardie.com/notes/025/
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "fit_bgnbd",
    "bgnbd_log_likelihood",
    "bgnbd_expected_purchases",
    "bgnbd_expected_purchases_new",
    "bgnbd_probability_alive",
    "bgnbd_probability_no_purchase",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "gamma_gamma_expected_value",
    "summary_from_transactions",
]

# Parameters are optimised on the log scale; these bounds (1e-9 .. 1e9) keep exp() finite while the
# line search explores, and are far outside any value a real customer base produces.
_LOG_BOUND = 9.0 * np.log(10.0)
_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9}


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters [1]_.

    Parameters
    ----------
    r, alpha : float
        Shape and rate of the gamma heterogeneity of the purchase rate lambda; ``alpha`` is in the time
        unit of the data the model was fitted on (weeks by default).
    a, b : float
        Shapes of the beta heterogeneity of the drop-out probability p after each repeat purchase.
    """

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters [2]_, [3]_.

    Parameters
    ----------
    p : float
        Shape of the gamma distribution of a single purchase-day value.
    q, v : float
        Shape and rate of the gamma heterogeneity of that distribution's rate across customers. The
        population mean purchase-day value is ``p * v / (q - 1)`` (finite only when ``q > 1``).
    """

    p: float
    q: float
    v: float


# --------------------------------------------------------------------------- validation and grouping


def _as_float_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: rule 'finite': {int((~np.isfinite(arr)).sum())} value(s) break it")
    return arr


def _validate_rft(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single check of (x, t_x, T) at the boundary of every BG/NBD function."""
    x = _as_float_array("frequency", frequency)
    tx = _as_float_array("recency", recency)
    T = _as_float_array("T", T)
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


def _validate_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = _as_float_array("weights", weights)
    if w.size != n:
        raise ValueError(f"weights: rule 'one per row': got {w.size} for {n} rows")
    if (w < 0).any():
        raise ValueError(f"weights: rule 'weights >= 0': {int((w < 0).sum())} value(s) break it")
    return w


def _group(columns: dict[str, np.ndarray], weights: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
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
    first = np.empty(n_groups, dtype=np.int64)
    # The rows of a group are identical, so whichever of them the assignment keeps stands for it.
    representative = np.empty(n_groups, dtype=np.int64)
    representative[codes] = np.arange(codes.size)
    grouped = {k: v[representative] for k, v in columns.items()}
    return grouped, np.bincount(codes, weights=weights, minlength=n_groups)


def _minimize(objective, start: np.ndarray) -> np.ndarray:
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * start.size
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=_OPTIONS)
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        raise RuntimeError(f"fit did not converge: {result.message}")
    return np.exp(result.x)


# --------------------------------------------------------------------------- BG/NBD


def _bgnbd_terms(params: np.ndarray, ux: np.ndarray):
    """Terms of the log-likelihood that depend on x only, evaluated once per distinct x."""
    r, alpha, a, b = params
    positive = ux > 0
    # For x = 0 the drop-out term does not exist; b + x - 1 would then be b - 1, which may be <= 0.
    bx1 = np.where(positive, b + ux - 1.0, 1.0)
    c1 = gammaln(r + ux) - gammaln(r) + r * np.log(alpha)
    c2 = betaln(a, b + ux) - betaln(a, b)
    c3 = np.where(positive, betaln(a + 1.0, bx1) - betaln(a, b), -np.inf)
    return c1, c2, c3, bx1, positive


def _bgnbd_loglik_grad(params: np.ndarray, ux, ix, tx, T, need_grad: bool):
    """Per-row log-likelihood (eq. 6 of [1]) and, optionally, its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = params
    c1, c2, c3, bx1, positive = _bgnbd_terms(params, ux)
    x = ux[ix]
    log_aT = np.log(alpha + T)
    log_atx = np.log(alpha + tx)
    # log of the two mixture terms: still alive at T, or dropped out right after the last purchase.
    l2 = c2[ix] - (r + x) * log_aT
    l3 = c3[ix] - (r + x) * log_atx
    top = np.maximum(l2, l3)
    e2 = np.exp(l2 - top)
    e3 = np.exp(l3 - top)
    total = e2 + e3
    ll = c1[ix] + top + np.log(total)
    if not need_grad:
        return ll, None
    w2 = e2 / total
    w3 = e3 / total
    dig_ab = digamma(a + b)
    dig_abx = digamma(a + b + ux)
    d_r = (digamma(r + ux) - digamma(r) + np.log(alpha))[ix] - w2 * log_aT - w3 * log_atx
    d_alpha = r / alpha - (r + x) * (w2 / (alpha + T) + w3 / (alpha + tx))
    da2 = digamma(a) - dig_abx
    da3 = digamma(a + 1.0) - dig_abx
    db2 = digamma(b + ux) - dig_abx
    db3 = np.where(positive, digamma(bx1) - dig_abx, 0.0)
    d_a = w2 * da2[ix] + w3 * da3[ix] - (digamma(a) - dig_ab)
    d_b = w2 * db2[ix] + w3 * db3[ix] - (digamma(b) - dig_ab)
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def bgnbd_log_likelihood(params: BGNBDParams, frequency, recency, T) -> np.ndarray:
    """Log-likelihood of each customer's (x, t_x, T) under BG/NBD.

    Implements eq. (6) of [1]_ in log space:

    .. math::

        L = \\frac{B(a, b+x)}{B(a, b)} \\frac{\\Gamma(r+x)\\,\\alpha^r}{\\Gamma(r)(\\alpha+T)^{r+x}}
          + \\delta_{x>0} \\frac{B(a+1, b+x-1)}{B(a, b)}
            \\frac{\\Gamma(r+x)\\,\\alpha^r}{\\Gamma(r)(\\alpha+t_x)^{r+x}}

    Parameters
    ----------
    params : BGNBDParams
    frequency, recency, T : array_like
        x, t_x and T per customer, in the time unit of ``params``.

    Returns
    -------
    numpy.ndarray
        One log-likelihood per customer.
    """
    x, tx, T = _validate_rft(frequency, recency, T)
    ux, ix = np.unique(x, return_inverse=True)
    theta = np.array([params.r, params.alpha, params.a, params.b], dtype=float)
    return _bgnbd_loglik_grad(theta, ux, ix, tx, T, need_grad=False)[0]


def fit_bgnbd(frequency, recency, T, *, penalizer: float = 0.0, weights=None) -> BGNBDParams:
    """Fit BG/NBD by maximum likelihood.

    Maximises the weighted mean of eq. (6) of [1]_ minus ``penalizer * (r² + alpha² + a² + b²)`` (the
    penalty of the ``lifetimes`` package), with L-BFGS-B on log-parameters and the analytic gradient.
    Identical (x, t_x, T) rows are grouped first, so a million customers fit in a few seconds.

    Parameters
    ----------
    frequency, recency, T : array_like
        x (repeat purchase days), t_x (first to last purchase) and T (first purchase to cutoff) per
        customer, times in one unit (weeks by default).
    penalizer : float, default 0
        L2 penalty on the parameters; a small value (0.001 - 0.1) stabilises fits on few customers.
    weights : array_like, optional
        Number of customers each row stands for (rows already grouped by the caller).

    Returns
    -------
    BGNBDParams
    """
    x, tx, T = _validate_rft(frequency, recency, T)
    w = _validate_weights(weights, x.size)
    if penalizer < 0:
        raise ValueError(f"penalizer: rule 'penalizer >= 0': got {penalizer}")
    cols, w = _group({"x": x, "tx": tx, "T": T}, w)
    if w.sum() <= 0:
        raise ValueError("fit_bgnbd: no customers to fit (all weights are zero or no rows)")
    if not (cols["x"] > 0).any():
        raise ValueError("fit_bgnbd: rule 'some frequency > 0': no customer has a repeat purchase")
    ux, ix = np.unique(cols["x"], return_inverse=True)
    tx, T = cols["tx"], cols["T"]
    w_total = w.sum()

    def objective(log_theta):
        theta = np.exp(log_theta)
        ll, grad = _bgnbd_loglik_grad(theta, ux, ix, tx, T, need_grad=True)
        value = -(w @ ll) / w_total + penalizer * (theta @ theta)
        # Chain rule to log-parameters: d/d log(theta) = theta * d/d theta.
        gradient = (-(grad @ w) / w_total + 2.0 * penalizer * theta) * theta
        return value, gradient

    # Start with r = 1 and alpha so that the mean rate r/alpha matches the observed repeat rate; the
    # likelihood is invariant to the time unit only through alpha, so this start is unit-free.
    rate = (w @ cols["x"]) / max(w @ T, np.finfo(float).tiny)
    start = np.log([1.0, 1.0 / max(rate, 1e-9), 1.0, 1.0])
    r, alpha, a, b = _minimize(objective, start)
    return BGNBDParams(r=float(r), alpha=float(alpha), a=float(a), b=float(b))


def _bgnbd_future_purchases(params: BGNBDParams, x, t, horizon_start):
    """``(a+b+x-1)/(a-1) [1 - ((alpha+s)/(alpha+s+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+s+t))]``, s = horizon_start.

    The bracket is evaluated through Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B)
    2F1(C-A, C-B; C; z), which turns it into ``1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``:
    the first two arguments no longer grow with x, so the series stays well conditioned for heavy
    buyers and long horizons.
    """
    r, alpha, a, b = params.r, params.alpha, _away_from_one(params.a), params.b
    z = t / (alpha + horizon_start + t)
    log1mz = np.log1p(-z)
    bracket = 1.0 - np.exp((a - 1.0) * log1mz) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    return (a + b + x - 1.0) / (a - 1.0) * bracket


def _away_from_one(a: float) -> float:
    """``a`` moved to 1 ± 1e-6 when closer to 1, where the expected-purchases formula is 0/0.

    The expectation is continuous in ``a``, and the fit leaves ``a`` at exactly 1 (its start) when
    the data say nothing about dropout, e.g. at a cutoff weeks after the first purchases.
    """
    if abs(a - 1.0) >= _A_NEAR_ONE:
        return a
    return 1.0 + _A_NEAR_ONE if a >= 1.0 else 1.0 - _A_NEAR_ONE


_A_NEAR_ONE = 1e-6


def _non_negative(values: np.ndarray) -> np.ndarray:
    # Near t = 0 the bracket is 1 minus a number close to 1: roundoff can leave -1e-17 or -0.0.
    return np.maximum(values, 0.0) + 0.0


def bgnbd_probability_alive(params: BGNBDParams, frequency, recency, T) -> np.ndarray:
    """Probability that each customer is still active at T.

    Eq. (A.10) of the technical appendix to [1]_:

    .. math::

        P(\\text{alive} \\mid x, t_x, T) = \\left[1 + \\delta_{x>0} \\frac{a}{b+x-1}
            \\left(\\frac{\\alpha+T}{\\alpha+t_x}\\right)^{r+x}\\right]^{-1}

    Parameters
    ----------
    params : BGNBDParams
    frequency, recency, T : array_like
        x, t_x and T per customer, in the time unit of ``params``.

    Returns
    -------
    numpy.ndarray
        Probabilities in [0, 1]; exactly 1 for customers without a repeat purchase.
    """
    x, tx, T = _validate_rft(frequency, recency, T)
    return _p_alive(params, x, tx, T)


def _p_alive(params: BGNBDParams, x, tx, T) -> np.ndarray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    positive = x > 0
    # log of the odds "dropped out : alive", computed in logs because ((alpha+T)/(alpha+t_x))^(r+x)
    # overflows for frequent buyers that went quiet.
    log_odds = (
        np.log(a)
        - np.log(np.where(positive, b + x - 1.0, 1.0))
        + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    )
    return np.where(positive, expit(-log_odds), 1.0)


def bgnbd_probability_no_purchase(params: BGNBDParams, t, frequency, recency, T) -> np.ndarray:
    """Probability of no purchase in (T, T + t] given each customer's history.

    A customer who has dropped out never buys again; one who is alive keeps its purchase rate
    lambda until the next purchase (BG/NBD drops customers out only right after a purchase), and
    given the history lambda ~ Gamma(r + x, alpha + T). So

    .. math::

        P(X(T, T+t] = 0 \\mid x, t_x, T) = 1 - P(\\text{alive})
            \\left[1 - \\left(\\frac{\\alpha+T}{\\alpha+T+t}\\right)^{r+x}\\right]

    Parameters
    ----------
    params : BGNBDParams
    t : float or array_like
        Horizon length in the time unit of ``params``.
    frequency, recency, T : array_like
        x, t_x and T per customer.

    Returns
    -------
    numpy.ndarray
        Probabilities in [0, 1]: BG/NBD's churn probability over the horizon.
    """
    x, tx, T = _validate_rft(frequency, recency, T)
    t = np.asarray(t, dtype=float)
    if (t < 0).any():
        raise ValueError("t: rule 't >= 0' is broken")
    r, alpha = params.r, params.alpha
    # -expm1((r+x) log((alpha+T)/(alpha+T+t))) = 1 - ((alpha+T)/(alpha+T+t))^(r+x), exact for small t.
    buys_if_alive = -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    return np.clip(1.0 - _p_alive(params, x, tx, T) * buys_if_alive, 0.0, 1.0)


def bgnbd_expected_purchases(params: BGNBDParams, t, frequency, recency, T) -> np.ndarray:
    """Expected number of purchases in (T, T + t] given each customer's history.

    Eq. (10) of [1]_:

    .. math::

        E[Y(t) \\mid x, t_x, T] = \\frac{a+b+x-1}{a-1}
          \\left[1 - \\left(\\frac{\\alpha+T}{\\alpha+T+t}\\right)^{r+x}
          {}_2F_1\\!\\left(r+x, b+x; a+b+x-1; \\frac{t}{\\alpha+T+t}\\right)\\right]
          \\Big/ \\left[1 + \\delta_{x>0} \\frac{a}{b+x-1}
          \\left(\\frac{\\alpha+T}{\\alpha+t_x}\\right)^{r+x}\\right]

    The denominator is 1 / P(alive) (:func:`bgnbd_probability_alive`). At a = 1 exactly the
    formula is 0/0 (a removable singularity, where a fit on data that say nothing about dropout
    stays); the limit is taken by evaluating at a = 1 ± 1e-6.

    Parameters
    ----------
    params : BGNBDParams
    t : float or array_like
        Horizon length in the time unit of ``params`` (26 for 182 days in weeks); broadcast
        against the customers.
    frequency, recency, T : array_like
        x, t_x and T per customer.

    Returns
    -------
    numpy.ndarray
        Expected purchases (purchase days) per customer.
    """
    x, tx, T = _validate_rft(frequency, recency, T)
    t = np.asarray(t, dtype=float)
    if (t < 0).any():
        raise ValueError("t: rule 't >= 0' is broken")
    return _non_negative(_bgnbd_future_purchases(params, x, t, T) * _p_alive(params, x, tx, T))


def bgnbd_expected_purchases_new(params: BGNBDParams, t) -> np.ndarray | float:
    """Expected number of repeat purchases of a new customer in (0, t].

    Eq. (9) of [1]_:

    .. math::

        E[X(t)] = \\frac{a+b-1}{a-1}\\left[1 - \\left(\\frac{\\alpha}{\\alpha+t}\\right)^r
            {}_2F_1\\!\\left(r, b; a+b-1; \\frac{t}{\\alpha+t}\\right)\\right]

    Parameters
    ----------
    params : BGNBDParams
    t : float or array_like
        Time since the first purchase, in the time unit of ``params``.

    Returns
    -------
    float or numpy.ndarray
        A float for a scalar ``t``, else an array shaped like ``t``.
    """
    t_arr = np.asarray(t, dtype=float)
    if (t_arr < 0).any():
        raise ValueError("t: rule 't >= 0' is broken")
    value = _non_negative(_bgnbd_future_purchases(params, 0.0, t_arr, 0.0))
    return float(value) if np.ndim(value) == 0 else value


# --------------------------------------------------------------------------- Gamma-Gamma


def _validate_xm(frequency, monetary_value) -> tuple[np.ndarray, np.ndarray]:
    x = _as_float_array("frequency", frequency)
    m = _as_float_array("monetary_value", monetary_value)
    if x.shape != m.shape:
        raise ValueError(f"frequency and monetary_value must have one length, got {x.size} and {m.size}")
    if (x < 0).any():
        raise ValueError(f"frequency: rule 'x >= 0': {int((x < 0).sum())} value(s) break it")
    return x, m


def _gg_loglik_grad(params: np.ndarray, ux, ix, m, log_mx, need_grad: bool):
    """Per-row log-likelihood of the mean purchase-day value and, optionally, its gradient in (p, q, v)."""
    p, q, v = params
    px = p * ux
    log_vmx = np.log(v + m * ux[ix])
    c = gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + np.log(ux)
    ll = c[ix] + (px[ix] - 1.0) * log_mx - (px + q)[ix] * log_vmx
    if not need_grad:
        return ll, None
    dig_pxq = digamma(px + q)
    d_p = ux[ix] * ((dig_pxq - digamma(px))[ix] + log_mx - log_vmx)
    d_q = (dig_pxq - digamma(q) + np.log(v))[ix] - log_vmx
    d_v = q / v - (px + q)[ix] / (v + m * ux[ix])
    return ll, np.stack([d_p, d_q, d_v])


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency, monetary_value) -> np.ndarray:
    """Log-likelihood of each customer's mean repeat purchase-day value under Gamma-Gamma.

    With x purchase values z_i ~ Gamma(p, nu) and nu ~ Gamma(q, v) across customers, the mean
    m = (1/x) sum z_i has density ([2]_, appendix; [3]_, eq. 1 with the Jacobian x):

    .. math::

        f(m \\mid p, q, v, x) = \\frac{\\Gamma(px+q)}{\\Gamma(px)\\Gamma(q)}
            \\frac{v^q\\,(mx)^{px-1}\\,x}{(v+mx)^{px+q}}

    Parameters
    ----------
    params : GammaGammaParams
    frequency, monetary_value : array_like
        x > 0 and m > 0 per customer.

    Returns
    -------
    numpy.ndarray
    """
    x, m = _validate_xm(frequency, monetary_value)
    if ((x <= 0) | (m <= 0)).any():
        raise ValueError("gamma_gamma_log_likelihood: rule 'frequency > 0 and monetary_value > 0' is broken")
    ux, ix = np.unique(x, return_inverse=True)
    theta = np.array([params.p, params.q, params.v], dtype=float)
    return _gg_loglik_grad(theta, ux, ix, m, np.log(m * x), need_grad=False)[0]


def fit_gamma_gamma(frequency, monetary_value, *, penalizer: float = 0.0, weights=None) -> GammaGammaParams:
    """Fit the Gamma-Gamma model of mean purchase-day value by maximum likelihood.

    Only rows with ``frequency > 0`` and ``monetary_value > 0`` are used: the model describes the
    mean of repeat purchase values, which one-time buyers do not have. Maximises the weighted mean of
    the log-likelihood (:func:`gamma_gamma_log_likelihood`) minus ``penalizer * (p² + q² + v²)``,
    with L-BFGS-B on log-parameters and the analytic gradient.

    Parameters
    ----------
    frequency : array_like
        x, number of repeat purchase days.
    monetary_value : array_like
        Mean value of the repeat purchase days (first purchase day excluded), currency units.
    penalizer : float, default 0
        L2 penalty on the parameters.
    weights : array_like, optional
        Number of customers each row stands for.

    Returns
    -------
    GammaGammaParams
    """
    x, m = _validate_xm(frequency, monetary_value)
    w = _validate_weights(weights, x.size)
    if penalizer < 0:
        raise ValueError(f"penalizer: rule 'penalizer >= 0': got {penalizer}")
    keep = (x > 0) & (m > 0)
    cols, w = _group({"x": x[keep], "m": m[keep]}, w[keep])
    if w.sum() <= 0:
        raise ValueError("fit_gamma_gamma: no row with frequency > 0 and monetary_value > 0")
    ux, ix = np.unique(cols["x"], return_inverse=True)
    m = cols["m"]
    log_mx = np.log(m * ux[ix])
    w_total = w.sum()

    def objective(log_theta):
        theta = np.exp(log_theta)
        ll, grad = _gg_loglik_grad(theta, ux, ix, m, log_mx, need_grad=True)
        value = -(w @ ll) / w_total + penalizer * (theta @ theta)
        gradient = (-(grad @ w) / w_total + 2.0 * penalizer * theta) * theta
        return value, gradient

    # Start at p = 2, q = 3 and v so that the population mean p*v/(q-1) equals the observed mean:
    # v carries the currency scale, so the start is right whatever the currency.
    mean_m = (w @ m) / w_total
    start = np.log([2.0, 3.0, mean_m])
    p, q, v = _minimize(objective, start)
    return GammaGammaParams(p=float(p), q=float(q), v=float(v))


def gamma_gamma_expected_value(params: GammaGammaParams, frequency, monetary_value) -> np.ndarray:
    """Expected mean purchase-day value of each customer given their history.

    Eq. (5) of [2]_: a weighted average of the population mean and the customer's own mean,

    .. math::

        E[Z \\mid p, q, v, m, x] = \\frac{q-1}{px+q-1}\\,\\frac{pv}{q-1} + \\frac{px}{px+q-1}\\,m
            = \\frac{p\\,(v + m x)}{px + q - 1}

    For ``frequency == 0`` this is the population mean ``p * v / (q - 1)`` whatever
    ``monetary_value`` holds.

    Parameters
    ----------
    params : GammaGammaParams
    frequency, monetary_value : array_like
        x and m per customer (m is ignored where x == 0).

    Returns
    -------
    numpy.ndarray
        Currency units per purchase day.
    """
    x, m = _validate_xm(frequency, monetary_value)
    p, q, v = params.p, params.q, params.v
    if q <= 1:
        raise ValueError(f"gamma_gamma_expected_value: rule 'q > 1' (finite population mean): got q={q}")
    m = np.where(x > 0, m, 0.0)
    return p * (v + m * x) / (p * x + q - 1.0)


# --------------------------------------------------------------------------- summary


def summary_from_transactions(
    transactions: pd.DataFrame, *, cutoff, time_unit_days: float = 7.0
) -> pd.DataFrame:
    """One BTYD summary row per customer as of ``cutoff``.

    Conventions (those of ``lifetimes.utils.summary_data_from_transaction_data`` with ``freq="D"``,
    then divided by ``time_unit_days``; they reproduce the published CDNOW fits):

    - history is every transaction with ``timestamp`` before the end of the ``cutoff`` day;
    - a purchase is a row with ``amount >= 0``; refunds neither make a purchase day nor enter
      ``monetary_value``. Purchases on one calendar day (UTC) are one purchase day, worth their sum;
    - ``frequency`` = purchase days - 1;
    - ``recency`` = (last purchase day - first purchase day) / ``time_unit_days`` (BTYD's t_x);
    - ``T`` = (cutoff day - first purchase day) / ``time_unit_days``: measured to the *start* of the
      cutoff day, so a customer whose first purchase is on the cutoff day has T = 0. (Measuring to
      the end of the cutoff day instead moves the CDNOW fit of ``a`` by 3% off the published value.)
    - ``monetary_value`` = mean value of the repeat purchase days, the first purchase day excluded;
      0 when ``frequency == 0``.

    Customers without a purchase before the end of the cutoff day have no row.

    Parameters
    ----------
    transactions : pandas.DataFrame
        Columns ``customer_id`` (string), ``timestamp`` (datetime64, naive UTC), ``amount`` (float).
    cutoff : date-like
        Last day of history.
    time_unit_days : float, default 7
        Days per time unit of ``recency`` and ``T`` (7 = weeks).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id``; float columns ``frequency``, ``recency``, ``T``, ``monetary_value``.
        Read T as ``frame["T"]``: ``frame.T`` is the transpose.
    """
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days: rule '> 0': got {time_unit_days}")
    cutoff_day = pd.Timestamp(cutoff)
    if cutoff_day != cutoff_day.normalize():
        raise ValueError(f"cutoff: rule 'a date, not a time of day': got {cutoff!r}")
    columns = ["frequency", "recency", "T", "monetary_value"]
    in_history = (transactions["timestamp"] < cutoff_day + pd.Timedelta(days=1)) & (transactions["amount"] >= 0)
    history = transactions.loc[in_history, ["customer_id", "timestamp", "amount"]]
    days = (
        # Positional (to_numpy) so that a caller's non-unique index cannot misalign the days.
        history.assign(day=history["timestamp"].dt.floor("D").to_numpy())
        .groupby(["customer_id", "day"], sort=True, observed=True)["amount"]
        .sum()
        .reset_index()
    )
    # Days are sorted within each customer: the first row of a customer is the first purchase day,
    # whose value is left out of monetary_value (summed separately rather than subtracted from the
    # total, which would lose precision when the first order is large).
    is_repeat = days["customer_id"].duplicated()
    days["repeat_amount"] = days["amount"].where(is_repeat, 0.0)
    per = days.groupby("customer_id", sort=True, observed=True).agg(
        first=("day", "first"),
        last=("day", "last"),
        n_days=("day", "size"),
        repeat_total=("repeat_amount", "sum"),
    )
    unit = pd.Timedelta(days=time_unit_days)
    frequency = (per["n_days"] - 1).astype(float)
    repeat_value = per["repeat_total"].to_numpy(float)
    freq = frequency.to_numpy()
    monetary = np.divide(repeat_value, freq, out=np.zeros_like(repeat_value), where=freq > 0)
    out = pd.DataFrame(
        {
            "frequency": frequency.to_numpy(),
            "recency": ((per["last"] - per["first"]) / unit).to_numpy(float),
            "T": ((cutoff_day - per["first"]) / unit).to_numpy(float),
            "monetary_value": monetary,
        },
        index=per.index.rename("customer_id"),
        columns=columns,
    )
    return out
