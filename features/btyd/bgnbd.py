"""BG/NBD: the beta-geometric / negative binomial distribution model of repeat purchases [1]_.

Closed-form likelihood, maximum-likelihood fit, P(alive), P(no purchase in t) and expected purchases.
Inputs follow the BTYD summary (:mod:`features.btyd.summary`): x repeat purchase days, t_x and T in
one time unit (weeks by default).

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. *Marketing Science* 24(2), 275-284.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from features.btyd._mle import minimize_log, group_rows, validate_rft, validate_weights

__all__ = [
    "BGNBDParams",
    "fit_bgnbd",
    "bgnbd_log_likelihood",
    "bgnbd_expected_purchases",
    "bgnbd_expected_purchases_new",
    "bgnbd_probability_alive",
    "bgnbd_probability_no_purchase",
]


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
    x, tx, T = validate_rft(frequency, recency, T)
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
    x, tx, T = validate_rft(frequency, recency, T)
    w = validate_weights(weights, x.size)
    if penalizer < 0:
        raise ValueError(f"penalizer: rule 'penalizer >= 0': got {penalizer}")
    cols, w = group_rows({"x": x, "tx": tx, "T": T}, w)
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
    r, alpha, a, b = minimize_log(objective, start)
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
    x, tx, T = validate_rft(frequency, recency, T)
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
    x, tx, T = validate_rft(frequency, recency, T)
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
    x, tx, T = validate_rft(frequency, recency, T)
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
