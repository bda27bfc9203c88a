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

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import digamma, expit, gammaln, roots_hermite, roots_legendre

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
    """Terms of the log-likelihood that depend on x only, evaluated once per distinct x.

    The beta-function ratios of eq. (6) are written as differences of log rising factorials, which
    stay accurate when a and b are large (``betaln(a, b + x) - betaln(a, b)`` cancels ~8 digits at
    a = b = 1e8).
    """
    r, alpha, a, b = params
    positive = ux > 0
    # For x = 0 the drop-out term does not exist; b + x - 1 would then be b - 1, which may be <= 0.
    bx1 = np.where(positive, b + ux - 1.0, 1.0)
    c1 = _log_rising(r, ux)
    c2 = _log_rising(b, ux) - _log_rising(a + b, ux)
    c3 = np.where(positive, np.log(a) + _log_rising(b, np.maximum(ux - 1.0, 0.0)) - _log_rising(a + b, ux), -np.inf)
    return c1, c2, c3, bx1, positive


def _bgnbd_loglik_grad(params: np.ndarray, ux, ix, tx, T, need_grad: bool):
    """Per-row log-likelihood (eq. 6 of [1]) and, optionally, its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = params
    c1, c2, c3, bx1, positive = _bgnbd_terms(params, ux)
    x = ux[ix]
    # log((alpha+T)/(alpha+t_x)) and log((alpha+T)/alpha) through log1p: exact when T - t_x << alpha.
    log_gap = np.log1p((T - tx) / (alpha + tx))
    log_grow = np.log1p(T / alpha)
    # Mixture of "still alive at T" (c2) and "dropped out right after the last purchase" (l3),
    # both relative to the common factor Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x)).
    l3 = c3[ix] + (r + x) * log_gap
    l2 = c2[ix]
    ll = c1[ix] - r * log_grow - x * np.log(alpha + T) + np.logaddexp(l2, l3)
    if not need_grad:
        return ll, None
    w3 = expit(l3 - l2)
    w2 = 1.0 - w3
    dig_ab = digamma(a + b)
    dig_abx = digamma(a + b + ux)
    d_r = (digamma(r + ux) - digamma(r))[ix] - log_grow + w3 * log_gap
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
    params = BGNBDParams(r=float(r), alpha=float(alpha), a=float(a), b=float(b))
    _check_fitted(params, cols["x"], tx, T)
    return params


def _check_fitted(params: BGNBDParams, x, tx, T) -> None:
    """Raise ValueError unless every BG/NBD quantity is finite at ``params`` on the fitted rows.

    The fit can wander to a, b of 1e6 and more when the data do not pin down the drop-out
    probability (only a / (a + b) is identified); the check makes sure such a fit is usable, with
    the expected purchases over a horizon as long as the longest history.
    """
    theta = np.array([params.r, params.alpha, params.a, params.b])
    ux, ix = np.unique(x, return_inverse=True)
    checks = {
        "parameters": np.isfinite(theta).all() and (theta > 0).all(),
        "log-likelihood": np.isfinite(_bgnbd_loglik_grad(theta, ux, ix, tx, T, need_grad=False)[0]).all(),
        "P(alive)": np.isfinite(_p_alive(params, x, tx, T)).all(),
        "expected purchases": np.isfinite(_bgnbd_future_purchases(params, x, max(T.max(), 1.0), T)).all(),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ValueError(f"fit_bgnbd: the fit {params} leaves {', '.join(failed)} not finite")


# --------------------------------------------------------------------------- numerics
#
# Every expectation below reduces to one quantity per customer (eq. 10 of [1] divided by P(alive)):
#
#     G(a, b', k, u) = E[(1 - (1 + p u)^(-k)) / p],   p ~ Beta(a, b'),
#
# the expected purchases in the horizon of a customer known to be alive, with b' = b + x,
# k = r + x and u = t / (alpha + T) (appendix of [1]: given alive at T, lambda ~ Gamma(r + x,
# alpha + T) and p ~ Beta(a, b + x) independently, and a customer with (lambda, p) makes
# (1 - exp(-lambda p t)) / p purchases in t on average, eq. 7). The closed form of [1] writes G
# with 2F1(r+x, b+x; a+b+x-1; z), z = u / (1 + u); scipy's hyp2f1 of it returns NaN or loses
# digits for large a and b, large r + x, a near 1 and a + b' near 1. G is instead evaluated by one
# of three methods, each exact up to rounding in its own region and none with cancellation:
#
# 1. a series of positive terms (_alive_purchases_series) whenever it needs few terms, which is
#    the case for every customer of an ordinary book;
# 2. Gauss-Hermite quadrature in logit(p) (_alive_purchases_hermite) when Beta(a, b') is
#    concentrated, min(a, b') >= 30, which covers the large-a, b limit of a constant drop-out
#    probability a / (a + b');
# 3. composite Gauss-Legendre quadrature in log(p) and log(1 - p) with the two end pieces
#    integrated analytically (_alive_purchases_quadrature) for the rest.

_SERIES_MAX_TERMS = 4000
_CONCENTRATED = 30.0
_HERMITE_NODES = 40
_LEGENDRE_NODES = 16
_LEGENDRE_PANELS = 64
_QUADRATURE_CHUNK = 1024
# Coefficients of the Stirling series of log Gamma, whose truncation error is below 1e-17 from
# z = 30 on (Abramowitz & Stegun 6.1.41).
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360)
_STIRLING_FROM = 30.0


def _stirling_tail(z: np.ndarray) -> np.ndarray:
    """``log Gamma(z) - [(z - 1/2) log z - z + log(2 pi) / 2]`` for z >= 30, A&S 6.1.41."""
    inv2 = 1.0 / (z * z)
    acc = np.zeros_like(z)
    for coefficient in reversed(_STIRLING):
        acc = acc * inv2 + coefficient
    return acc / z


def _log_rising(x, d) -> np.ndarray:
    """``log Gamma(x + d) - log Gamma(x)``, the log of the rising factorial (x)_d.

    Parameters
    ----------
    x : float or numpy.ndarray
        Positive base.
    d : float or numpy.ndarray
        Non-negative increment, broadcast against ``x``.

    Returns
    -------
    numpy.ndarray
        Broadcast shape of ``x`` and ``d``; absolute error about 1e-16 times the result. For
        x >= 30 the difference of Stirling series (A&S 6.1.41) is taken term by term, so
        ``gammaln(x + d) - gammaln(x)`` does not cancel digits when x is large and d small.
    """
    x, d = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(d, dtype=float))
    large = x >= _STIRLING_FROM
    xs = np.where(large, x, _STIRLING_FROM)
    # (xs+d-1/2) log(xs+d) - (xs-1/2) log(xs) - d, rearranged so that no two large terms cancel.
    stirling = (
        (xs - 0.5) * np.log1p(d / xs) + d * np.log(xs + d) - d + (_stirling_tail(xs + d) - _stirling_tail(xs))
    )
    with np.errstate(invalid="ignore"):
        direct = gammaln(np.where(large, 1.0, x) + d) - gammaln(np.where(large, 1.0, x))
    return np.where(large, stirling, direct)


def _log_beta(a, b) -> np.ndarray:
    """``log B(a, b)`` to about 1e-15 absolute while min(a, b) is small (scipy's betaln errs by
    ~1e-10 at B(1e6, 2))."""
    small, large = np.minimum(a, b), np.maximum(a, b)
    return gammaln(small) - _log_rising(large, small)


def _alive_purchases_series(a: float, bp, k, u):
    """G by a series of positive terms; returns (G, done) with ``done`` False where not used.

    With N ~ NegBin(k, z), z = u / (1 + u), the purchases a Poisson(lambda) customer would make in
    the horizon if it never dropped out (lambda ~ Gamma(k, alpha + T) mixed out), and J the
    purchase after which it drops out (geometric in p), the horizon's purchases are min(N, J), so

        G = sum_{m>=1} P(N = m) C_m,   C_m = sum_{j<m} E[(1-p)^j] = sum_{j<m} (b')_j / (a+b')_j.

    Every term is positive, so there is no cancellation at any a, b (a = 1 and a + b' = 1 included);
    both factors follow by forward recursion. Used when P(N = 0) = (1+u)^(-k) > 1e-260 (no
    underflow) and the terms needed for a tail below 1e-16 of the sum are at most
    ``_SERIES_MAX_TERMS``; the tail left after the last term is bounded by a geometric series in
    the ratio of successive terms and checked.
    """
    z = u / (1.0 + u)
    log_p0 = -k * np.log1p(u)
    mean = k * u
    # Mean + 12 sd covers the bulk; 40 (1 + u) terms take the geometric tail z^m below 1e-17.
    n_terms = np.ceil(mean + 12.0 * np.sqrt(mean * (1.0 + u)) + 40.0 * (1.0 + u))
    done = (log_p0 > -600.0) & (n_terms <= _SERIES_MAX_TERMS) & (u > 0)
    rows = np.flatnonzero(done)
    value = np.zeros(u.shape)
    if rows.size == 0:
        return value, done
    rows = rows[np.argsort(-n_terms[rows], kind="stable")]
    n_rows = n_terms[rows].astype(np.int64)
    zz, kk, bb = z[rows], k[rows], bp[rows]
    pm = np.exp(log_p0[rows])
    cm = np.ones(rows.size)  # E[(1-p)^(m-1)]
    big_c = np.zeros(rows.size)  # C_(m-1)
    total = np.zeros(rows.size)
    # Rows are sorted by terms needed, so the rows still summing at term m are a prefix.
    still = np.searchsorted(-n_rows, -np.arange(n_rows[0] + 1), side="right")
    for m in range(1, int(n_rows[0]) + 1):
        n = still[m]
        pm[:n] *= zz[:n] * (kk[:n] + (m - 1)) / m
        big_c[:n] += cm[:n]
        cm[:n] *= (bb[:n] + (m - 1)) / (a + bb[:n] + (m - 1))
        total[:n] += pm[:n] * big_c[:n]
    # Tail after the last term M: P(N = m) falls by at most rho per step from M on and C grows by
    # at most c_M per step, so the rest is below P_M (C_M rho / (1-rho) + c_M rho / (1-rho)^2).
    mm = n_rows.astype(float)
    rho = np.where(kk >= 1.0, zz * (kk + mm) / (mm + 1.0), zz)
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = pm * (big_c * rho / (1.0 - rho) + cm * rho / (1.0 - rho) ** 2)
    ok = (rho < 1.0) & (rest <= 1e-15 * total)
    value[rows] = total
    done[rows[~ok]] = False
    return value, done


@functools.cache
def _hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    return roots_hermite(n)


@functools.cache
def _legendre_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    return roots_legendre(n)


def _h(q, k, u):
    """(1 - (1 + q u)^(-k)) / q, the expected purchases in the horizon given the drop-out p = q."""
    return -np.expm1(-k * np.log1p(q * u)) / q


def _alive_purchases_hermite(a: float, bp, k, u) -> np.ndarray:
    """G by Gauss-Hermite quadrature in y = logit(p), for a concentrated Beta(a, b') (min >= 30).

    In y the Beta(a, b') density is exp(a y) / (1 + e^y)^(a + b') / B(a, b'), log-concave with mode
    y* = log(a / b') and curvature a b' / (a + b'), so nodes y* + sqrt(2) s x_i with s^2 = 1/a + 1/b'
    meet a near-Gaussian integrand; as a, b' grow this tends to the point mass at a / (a + b'), the
    constant drop-out limit. The density is normalised by the quadrature itself (sum of weights),
    and its log-ratio to the mode is formed by log1p of small differences so that a, b' ~ 1e8 do
    not cancel digits.
    """
    nodes, weights = _hermite_rule(_HERMITE_NODES)
    bp, k, u = (np.asarray(v, dtype=float)[:, None] for v in (bp, k, u))
    mode = np.log(a) - np.log(bp)
    d = np.sqrt(2.0 * (1.0 / a + 1.0 / bp)) * nodes
    # log p(y*+d) - log p(y*) and log(1-p)(y*+d) - log(1-p)(y*), with e^(-y*) = b'/a.
    ratio = bp / a
    dlog_p = np.log1p(ratio * -np.expm1(-d) / (1.0 + ratio * np.exp(-d)))
    dlog_1mp = np.log1p(-np.expm1(d) / (ratio + np.exp(d)))
    w = weights * np.exp(nodes**2 + a * dlog_p + bp * dlog_1mp)
    q = expit(mode + d)
    return (w * _h(q, k, u)).sum(axis=1) / w.sum(axis=1)


def _alive_purchases_quadrature(a: float, bp, k, u) -> np.ndarray:
    """G by composite Gauss-Legendre quadrature over p, for any a, b' (used where 1 and 2 are not).

    (0, 1/2] is integrated in v = log p and [1/2, 1) in w = log(1 - p): in these variables the Beta
    weight and the purchases term are smooth on a scale of about one unit whatever a, b', k and u
    (the nearest singularities are pi away from the real axis), so 64 panels of 16 nodes give
    ~1e-14. The two end pieces, p < p_L and 1 - p < e_R, are integrated analytically: there the
    integrand is p^(a-1) k u (resp. (1-p)^(b'-1) h(1)) up to a relative 1e-16, which is what sets
    p_L and e_R. This is what handles a or b' down to 1e-3 and below, where half of the Beta mass
    can sit below p = 1e-300.
    """
    nodes, weights = _legendre_rule(_LEGENDRE_NODES)
    offsets = (np.arange(_LEGENDRE_PANELS)[:, None] + 0.5 + 0.5 * nodes).ravel()
    node_weights = np.tile(weights, _LEGENDRE_PANELS) * 0.5
    value = np.empty(u.shape)
    half = np.log(0.5)
    for start in range(0, u.size, _QUADRATURE_CHUNK):
        rows = slice(start, start + _QUADRATURE_CHUNK)
        bb, kk, uu = (v[rows][:, None] for v in (bp, k, u))
        log_b = _log_beta(a, bb)
        # Left piece: p = e^v on [log p_L, log 1/2], then (0, p_L] in closed form.
        v_end = np.log(1e-16 / (1.0 + (kk + 1.0) * uu + np.abs(bb - 1.0)))
        width = (half - v_end) / _LEGENDRE_PANELS
        v = v_end + width * offsets
        q = np.exp(v)
        left = width * (node_weights * np.exp(a * v + (bb - 1.0) * np.log1p(-q) - log_b) * _h(q, kk, uu)).sum(1, keepdims=True)
        left_end = np.exp(np.log(kk * uu) + a * v_end - np.log(a) - log_b)
        # Right piece: 1 - p = e^w on [log e_R, log 1/2], then [1 - e_R, 1) in closed form.
        w_end = np.log(1e-16 / (2.0 + abs(a - 1.0)))
        width = (half - w_end) / _LEGENDRE_PANELS
        w = w_end + width * offsets
        q = -np.expm1(w)
        right = width * (node_weights * np.exp(bb * w + (a - 1.0) * np.log1p(-np.exp(w)) - log_b) * _h(q, kk, uu)).sum(1, keepdims=True)
        right_end = np.exp(np.log(_h(1.0, kk, uu)) + bb * w_end - np.log(bb) - log_b)
        value[rows] = (left + left_end + right + right_end)[:, 0]
    return value


def _alive_purchases(a: float, bp, k, u) -> np.ndarray:
    """G(a, b', k, u) per row (1-d arrays bp, k, u >= 0): each row by the first method that applies."""
    value, done = _alive_purchases_series(a, bp, k, u)
    done |= u == 0  # nothing is bought in an empty horizon; value is already 0 there
    rest = np.flatnonzero(~done)
    concentrated = rest[np.minimum(a, bp[rest]) >= _CONCENTRATED]
    spread = rest[np.minimum(a, bp[rest]) < _CONCENTRATED]
    if concentrated.size:
        value[concentrated] = _alive_purchases_hermite(a, bp[concentrated], k[concentrated], u[concentrated])
    if spread.size:
        value[spread] = _alive_purchases_quadrature(a, bp[spread], k[spread], u[spread])
    return value


def _bgnbd_future_purchases(params: BGNBDParams, x, t, horizon_start) -> np.ndarray:
    """Expected purchases in (s, s + t] of a customer alive at s, s = horizon_start (G above).

    Equal to eq. (10) of [1]_ times 1 / P(alive), and to eq. (9) at x = 0, s = 0:
    ``(a+b+x-1)/(a-1) [1 - ((alpha+s)/(alpha+s+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+s+t))]``.
    Distinct (x, u) pairs are evaluated once: books have far fewer of them than customers.

    Raises
    ------
    ValueError
        If a value is not finite or falls outside its bounds (h(1) <= G <= (r+x) u, h decreasing
        in p), naming the first rows; no such input is known.
    """
    x, t, s = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, t, horizon_start)))
    shape = x.shape
    x, t, s = x.ravel(), t.ravel(), s.ravel()
    u = t / (params.alpha + s)
    x_codes, x_values = pd.factorize(x)
    u_codes, u_values = pd.factorize(u)
    inverse, pairs = pd.factorize(x_codes.astype(np.int64) * len(u_values) + u_codes)
    ux, uu = x_values[pairs // len(u_values)], u_values[pairs % len(u_values)]
    k = params.r + ux
    g = _alive_purchases(params.a, params.b + ux, k, uu)
    with np.errstate(over="ignore", invalid="ignore"):
        low = _h(1.0, k, uu)
        bad = ~(np.isfinite(g) & (g >= low * (1 - 1e-9)) & (g <= k * uu * (1 + 1e-9)))
    if bad.any():
        rows = np.flatnonzero(np.isin(inverse, np.flatnonzero(bad)))
        raise ValueError(
            f"BG/NBD expected purchases: cannot be computed for {rows.size} row(s), first rows: "
            f"{rows[:5].tolist()} (params {params})"
        )
    return g[inverse].reshape(shape)


def _validate_horizon(t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    bad = ~(np.isfinite(t) & (t >= 0))
    if bad.any():
        raise ValueError(f"t: rule 'finite and t >= 0': {int(bad.sum())} value(s) break it")
    return t


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
    # overflows for frequent buyers that went quiet; log1p keeps T - t_x << alpha exact.
    log_odds = np.log(a) - np.log(np.where(positive, b + x - 1.0, 1.0)) + (r + x) * np.log1p((T - tx) / (alpha + tx))
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
    t = _validate_horizon(t)
    r, alpha = params.r, params.alpha
    # -expm1(-(r+x) log1p(t/(alpha+T))) = 1 - ((alpha+T)/(alpha+T+t))^(r+x), exact for small t.
    buys_if_alive = -np.expm1(-(r + x) * np.log1p(t / (alpha + T)))
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

    The denominator is 1 / P(alive) (:func:`bgnbd_probability_alive`). The closed form is not
    what is evaluated: it is 0/0 at a = 1 and at a + b + x = 1, and scipy's 2F1 fails for large
    a, b or r + x. The numerator is computed as P(alive) times the expected purchases of a customer
    alive at T, by a positive series or a quadrature over the Beta mixing distribution (see the
    numerics section of this module), to a relative 1e-12 over r, alpha, a, b in [1e-3, 1e8],
    x, T, t up to 1e4 (``tests/test_bgnbd_numerics.py``).

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
    t = _validate_horizon(t)
    return _bgnbd_future_purchases(params, x, t, T) * _p_alive(params, x, tx, T)


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
    t_arr = _validate_horizon(t)
    value = _bgnbd_future_purchases(params, 0.0, t_arr, 0.0)
    return float(value) if np.ndim(value) == 0 else value
