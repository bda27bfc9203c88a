"""Pareto/NBD: the Pareto / negative binomial distribution model of repeat purchases [1]_.

Likelihood, maximum-likelihood fit, P(alive), expected purchases (one horizon or a curve of
consecutive windows), P(no purchase in a horizon) and discounted expected residual transactions
(DERT). Inputs follow the BTYD summary (:mod:`features.btyd.summary`): x repeat purchase days, t_x and
T in one time unit (weeks by default).

Model: while alive a customer buys at Poisson rate lambda ~ Gamma(r, alpha); the lifetime is
exponential with rate mu ~ Gamma(s, beta), lambda and mu independent.

Why hand-written
----------------
No maintained package fits Pareto/NBD on pandas 3 (``lifetimes`` is unmaintained; ``pymc-marketing``
needs a PyMC stack for a point estimate), and the published evaluations are not numerically safe:
they take the difference of two Gauss hypergeometric terms ``2F1(r+s+x, s+1; r+s+x+1; z)`` that
cancel when t_x is close to T, and ``scipy.special.hyp2f1`` itself returns NaN or wrong digits for
large r+x or z close to 1 (the heavy buyers and the alpha >> beta or alpha << beta regions).

Numerics
--------
Every quantity reduces to one positive integral, the *tail*

.. math::

    \\mathcal{T}(m, n; a, b) = \\int_0^\\infty (a+\\tau)^{-m} (b+\\tau)^{-n} \\, d\\tau
      = \\frac{a^{-m} b^{1-n}}{m+n-1} \\; {}_2F_1(1, m; m+n; 1 - b/a) \\quad (a \\ge b)

(swap (m, a) with (n, b) when a < b): substituting tau = b t / (1 - t) turns the integral into
Euler's integral of that 2F1 (DLMF 15.6.1). The likelihood has m = r+x, n = s+1 and the tails at t_x
and T; P(no purchase) has m = r+x+1, n = s. Callers get the tail scaled by a^m b^(n-1)
(:func:`_log_scaled_tail`), so that the large powers (r+x up to 1e4) cancel by hand, never in
floating point. With w = min(a, b) / max(a, b), ``F = 2F1(1, b; c; 1 - w)`` (c > b > 0, c > 1) is a
series of positive terms, bounded by (c-1)/(c-b-1) when c - b > 1 and growing like w^(c-b-1)
(log(1/w) when c - b = 1) otherwise. It is evaluated in log space

- for w >= 1/2 by its power series (ratio of terms below 1/2: at most 57 terms);
- for w < 1/2 by splitting Euler's integral ``(c-1) int_0^1 u^(c-2) (w + (1-w) u)^(-b) du`` at u = w.
  The piece on [0, w] is ``w^(c-1-b) (2-w)^(-b) 2F1(1, b; c; (1-w)/(2-w))`` (Pfaff's
  transformation, DLMF 15.8.1), again a power series with ratio below 1/2. On [w, 1], in
  theta = log u, the log-integrand (c-1) theta - b log(w + (1-w) e^theta) is concave: it is written
  relative to its mode without differences of large numbers and integrated by Gauss-Legendre panels
  on a sinh map of the mode's width (:func:`_log_integral_logconcave`), doubling the panels until two
  rounds agree to 1e-13.

Derivatives for the fit are complex-step derivatives (every step above is analytic in the
parameters; branches are taken on real parts), exact to rounding.

References
----------
.. [1] Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987). Counting your customers: who
   are they and what will they do next? *Management Science* 33(1), 1-24.
.. [2] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and related
   expressions. http://brucehardie.com/notes/009/
.. [3] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. *Journal of Marketing Research* 42(4), 415-430.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import digamma, expit, exprel, gammaln

from features.btyd._mle import minimize_log, group_rows, validate_rft, validate_weights

__all__ = [
    "ParetoNBDParams",
    "fit_pareto_nbd",
    "pareto_nbd_log_likelihood",
    "pareto_nbd_probability_alive",
    "pareto_nbd_expected_purchases",
    "pareto_nbd_expected_purchases_new",
    "pareto_nbd_expected_purchases_curve",
    "pareto_nbd_probability_no_purchase",
    "pareto_nbd_dert",
]


@dataclass(frozen=True)
class ParetoNBDParams:
    """Pareto/NBD parameters [1]_.

    Parameters
    ----------
    r, alpha : float
        Shape and rate of the gamma heterogeneity of the purchase rate lambda; ``alpha`` is in the time
        unit of the data the model was fitted on (weeks by default).
    s, beta : float
        Shape and rate of the gamma heterogeneity of the dropout rate mu (exponential lifetimes);
        ``beta`` is in the same time unit.

    Raises
    ------
    ValueError
        If a parameter is not a finite positive number.
    """

    r: float
    alpha: float
    s: float
    beta: float

    def __post_init__(self):
        for name in ("r", "alpha", "s", "beta"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"ParetoNBDParams.{name}: rule 'finite and > 0': got {value!r}")


# --------------------------------------------------------------------------- numerical core

_GL_ORDER = 16
# Relative size of the last series term kept; the remainder is at most this (ratio of terms <= 1/2).
_SERIES_RTOL = 1e-17
_QUAD_RTOL = 1e-13
# Two rounds that agree to this but stop getting closer differ by the rounding of the integrand
# itself (b ~ 1e5), which more panels cannot remove.
_QUAD_NOISE = 1e-9
# Beyond the point where a log-concave integrand is below exp(-46) ~ 1e-20 of its peak, the rest of
# the interval is left out.
_TAIL_DROP = 46.0
# Stands for an infinite side when locating the peak's width and the cut-off (in log-space units).
_FAR = 1e4
_MAX_PANELS = 2048
# Rows integrated together, and rows x nodes evaluated at once, to bound memory on large inputs.
_ROW_BLOCK = 1 << 14
_BLOCK = 1 << 20


@lru_cache(maxsize=2)
def _gauss_legendre(order: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(order)


def _logaddexp(a, b):
    """log(exp(a) + exp(b)) for real or complex arrays (numpy's logaddexp is real only)."""
    top = np.maximum(np.real(a), np.real(b))
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(a - top) + np.exp(b - top))


def _log_hyp_series(b, c, y):
    """log of sum_k (b)_k / (c)_k y^k (that is 2F1(1, b; c; y)) for 0 <= Re y <= 1/2, c > b > 0."""
    term = np.ones(np.shape(b), dtype=np.result_type(b, c, y, float))
    total = term.copy()
    active = np.ones(term.shape, dtype=bool)
    k = 0
    while active.any():
        # Only the rows still converging are updated; a finished row keeps its last term.
        term = np.where(active, term * (b + k) / (c + k) * y, term)
        total = np.where(active, total + term, total)
        active = np.abs(term) > _SERIES_RTOL * np.abs(total)
        k += 1
    return np.log(total)


def _log_mix(e, one_minus_e, d):
    """log((1 - e) + e exp(d)) for 0 < e < 1 given with 1 - e, without cancellation.

    As log1p(e expm1(d)), except where e expm1(d) nears -1 (e ~ 1, d << 0) and 1 - e must come in
    exactly. Arrays broadcast; real or complex.
    """
    e, one_minus_e, d = np.broadcast_arrays(e, one_minus_e, d)
    step = e * np.expm1(d)
    far = np.real(step) < -0.5
    with np.errstate(divide="ignore"):
        out = np.log1p(np.where(far, 0.0, step))
    if far.any():
        out[far] = np.log(one_minus_e[far] + e[far] * np.exp(d[far]))
    return out


def _log_integral_logconcave(delta, lo, hi):
    """log of the integral over d in [lo, hi] of exp(delta(rows, d)), per row.

    ``delta(rows, d)`` (d of shape (len(rows), k)) is a log-integrand, real or complex, whose real
    part is concave in d with its maximum over [lo, hi] at d = 0 (lo <= 0 <= hi; either may be
    infinite). One probe on a grid of distances 4^-j from the peak gives, on each side, the width of
    the peak (where the integrand has fallen by e) and the cut-off (where it has fallen by
    exp(-_TAIL_DROP)). The integral is then taken in t with d = width * sinh(t), width the narrower
    side's: near the peak a linear map at its scale, far from it the exponential tails of a
    log-concave function become doubly exponential. Gauss-Legendre panels are doubled until two
    rounds agree to _QUAD_RTOL, or stop getting closer below _QUAD_NOISE (the rounding in ``delta``
    itself).
    """
    n = lo.size
    if n > _ROW_BLOCK:
        # Bounded memory on large inputs: the probe and the first rounds hold rows x nodes arrays.
        parts = []
        for start in range(0, n, _ROW_BLOCK):
            idx = np.arange(start, min(n, start + _ROW_BLOCK))
            parts.append(_log_integral_logconcave(lambda r, d, idx=idx: delta(idx[r], d), lo[idx], hi[idx]))
        return np.concatenate(parts)
    rows = np.arange(n)
    span_hi = np.where(np.isfinite(hi), hi, _FAR)
    span_lo = np.where(np.isfinite(lo), -lo, _FAR)
    fractions = 4.0 ** -np.arange(27.0)
    probe = np.concatenate([span_hi[:, None] * fractions, -span_lo[:, None] * fractions], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        level = np.real(delta(rows, probe))
    level = np.where(np.isnan(level), -np.inf, level)
    widths, cuts = [], []
    for side, span in ((slice(0, 27), span_hi), (slice(27, 54), span_lo)):
        distance = np.abs(probe[:, side])
        above = level[:, side] >= -1.0
        # Concave with its maximum at 0: the level falls monotonically with the distance, so the
        # level -1 lies between the last probe above it and the next one, 4 times farther; take the
        # geometric middle. A side above -1 all along has its length for width.
        inside = np.max(np.where(above, distance, distance[:, -1:]), axis=1)
        width = np.where(above[:, 0], span, 2.0 * inside)
        widths.append(np.where(span > 0, width, np.inf))
        cuts.append(np.min(np.where(level[:, side] < -_TAIL_DROP, distance, span[:, None]), axis=1))
    scale = np.minimum(widths[0], widths[1])
    t_lo = -np.arcsinh(cuts[1] / scale)
    t_hi = np.arcsinh(cuts[0] / scale)
    nodes, weights = _gauss_legendre(_GL_ORDER)
    out = None
    todo, previous, change = rows, None, None
    panels = 1
    while todo.size:
        edges = np.linspace(0.0, 1.0, panels + 1)
        half = np.diff(edges) / 2
        u = ((edges[:-1] + half)[:, None] + half[:, None] * nodes).ravel()
        wu = (half[:, None] * weights).ravel()
        step = max(1, _BLOCK // u.size)
        current = []
        for start in range(0, todo.size, step):
            sub = todo[start : start + step]
            width = (t_hi[sub] - t_lo[sub])[:, None]
            t = t_lo[sub, None] + width * u
            log_w = np.log(width * wu * scale[sub, None] * np.cosh(t))
            values = delta(sub, scale[sub, None] * np.sinh(t)) + log_w
            top = np.max(np.real(values), axis=1, keepdims=True)
            current.append(top[:, 0] + np.log(np.sum(np.exp(values - top), axis=1)))
        current = np.concatenate(current)
        if out is None:
            out = np.empty(n, dtype=current.dtype)
        if previous is not None:
            new_change = np.abs(np.expm1(np.real(current - previous)))
            done = (new_change <= _QUAD_RTOL) | (panels >= _MAX_PANELS)
            if change is not None:
                done |= (new_change <= _QUAD_NOISE) & (new_change >= change / 2)
            out[todo[done]] = current[done]
            todo, current, change = todo[~done], current[~done], new_change[~done]
        previous = current
        panels *= 2
    return out


def _log_hyp2f1_one(b, c, w, y):
    """log 2F1(1, b; c; y) with w = 1 - y passed separately (both exact), for c > b > 0, c > 1, 0 < w <= 1.

    Real or complex arrays of one shape; see the module docstring for the method.
    """
    dtype = np.result_type(b, c, w, y, float)
    out = np.empty(np.shape(b), dtype=dtype)
    easy = np.real(w) >= 0.5
    if easy.any():
        out[easy] = _log_hyp_series(b[easy], c[easy], y[easy])
    hard = ~easy
    if hard.any():
        out[hard] = _log_hyp2f1_split(b[hard], c[hard], w[hard])
    return out


def _log_hyp2f1_split(b, c, w):
    """The w < 1/2 branch: series on u in [0, w] plus quadrature on [w, 1] (module docstring)."""
    nu = c - 1.0 - b
    log_low = nu * np.log(w) - b * np.log(2.0 - w) + _log_hyp_series(b, c, (1.0 - w) / (2.0 - w))

    br, cr, wr = np.real(b), np.real(c), np.real(w)
    lw = np.log(wr)
    # Mode of g(theta) = (c-1) theta - b log(w + (1-w) e^theta) on [log w, 0]; g' = (c-1) - b E(theta)
    # with E = (1-w) e^theta / (w + (1-w) e^theta) increasing, so g' = 0 at E = (c-1)/b.
    e_star = (cr - 1.0) / br
    with np.errstate(divide="ignore", invalid="ignore"):
        interior = lw + np.log(e_star) - np.log1p(-wr) - np.log1p(-e_star)
    mode = np.where(cr - 1.0 >= br * (1.0 - wr), 0.0, np.where(cr - 1.0 <= br * (1.0 - wr) / (2.0 - wr), lw, interior))
    mode = np.clip(mode, lw, 0.0)
    # E and 1 - E at the mode, both without cancellation, in the (possibly complex) parameters.
    q = (1.0 - w) * np.exp(mode)
    e_mode = q / (w + q)
    one_minus_e = w / (w + q)
    # g at the mode as nu theta - b log(1 - w + w e^-theta): both terms stay moderate where the mode
    # lies, unlike (c-1) theta and b log(...), which cancel to ~1e-10 for b ~ 1e5.
    g_mode = nu * mode - b * np.log1p(w * np.expm1(-mode))

    def delta(rows, d):
        # g(mode + d) - g(mode) = (c-1) d - b log((1-E) + E e^d), E at the mode.
        return (c[rows, None] - 1.0) * d - b[rows, None] * _log_mix(e_mode[rows, None], one_minus_e[rows, None], d)

    log_int = _log_integral_logconcave(delta, lw - mode, -mode)
    log_high = np.log(c - 1.0) + g_mode + log_int
    if np.iscomplexobj(w):
        # The lower limit log w moves with a complex w; to first order (all a complex step needs) that
        # removes i Im(log w) times the integrand at the limit.
        shift = 1j * np.imag(np.log(w))
        at_limit = np.log(c - 1.0) + g_mode + delta(np.arange(mode.size), (lw - mode)[:, None])[:, 0]
        log_high = log_high + np.log1p(-shift * np.exp(at_limit - log_high))
    return _logaddexp(log_low, log_high)


def _log_scaled_tail(m, n, a, b):
    """log of a^m b^(n-1) times the integral over tau > 0 of (a + tau)^(-m) (b + tau)^(-n).

    Elementwise over broadcast arrays (real, or complex for the complex-step gradient), for m, n > 0,
    m + n > 1, a, b > 0. The scaling removes the powers of a and b, which are large (m ~ r + x up to
    1e4) and would otherwise cancel against the caller's own powers: what is left is
    ``2F1(1, m; m+n; 1 - b/a) / (m+n-1)`` when a >= b and ``(a/b) 2F1(1, n; m+n; 1 - a/b) / (m+n-1)``
    when a < b (module docstring), all moderate numbers.
    """
    m, n, a, b = np.broadcast_arrays(m, n, a, b)
    a_big = np.real(a) >= np.real(b)
    big, small = np.where(a_big, a, b), np.where(a_big, b, a)
    c = m + n
    log_f = _log_hyp2f1_one(np.where(a_big, m, n), c, small / big, (big - small) / big)
    return np.where(a_big, 0.0, np.log(a) - np.log(b)) + log_f - np.log(c - 1.0)


def _log_laplace_lomax(s, z):
    """log of R(s, z) = integral over v in (0, inf) of exp(-v) (1 + v/z)^(-s), for s, z > 0.

    R = z U(1, 2 - s, z) (Tricomi's U, DLMF 13.4.4) lies in (0, 1]. ``scipy.special.hyperu`` returns
    NaN for s >= 10 and wrong digits for s = 2 and small z, so R is integrated instead: in
    theta = log v the integrand exp(theta - e^theta - s log(1 + e^theta / z)) is log-concave, with
    bends at theta = log z and theta = 0; the three pieces between them are integrated separately.
    """
    s, z = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(z, dtype=float))
    s, z = s.ravel(), z.ravel()
    lz = np.log(z)
    rows = np.arange(s.size)

    def d_log_f(rows, theta):
        return 1.0 - np.exp(theta) - s[rows, None] * expit(theta - lz[rows, None])

    # The derivative falls from 1 to -inf; it is >= 1/2 below min(log 1/4, log(z / 4s)) and < 0 at 0.
    lo = np.minimum(np.log(0.25), lz - np.log(4.0 * s))
    hi = np.zeros_like(lo)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        rising = d_log_f(rows, mid[:, None])[:, 0] > 0
        lo, hi = np.where(rising, mid, lo), np.where(rising, hi, mid)
    mode = 0.5 * (lo + hi)
    knots = np.stack([np.full(s.size, -np.inf), np.minimum(lz, 0.0), np.maximum(lz, 0.0), np.full(s.size, np.inf)])
    pieces = []
    for a, b in zip(knots[:-1], knots[1:]):
        # Each piece peaks where the global mode is clipped into it. Relative to that peak the
        # log-integrand is d - e^peak expm1(d) - s log((1-E) + E e^d), E = expit(peak - log z):
        # no difference of large numbers even where e^peak or s is large.
        peak = np.clip(mode, a, b)
        top = peak - np.exp(peak) - s * np.logaddexp(0.0, peak - lz)
        e, one_minus_e = expit(peak - lz), expit(lz - peak)
        log_int = np.full(s.size, -np.inf)
        live = b > a
        if live.any():
            idx = rows[live]

            def delta(r, d, idx=idx, peak=peak, e=e, one_minus_e=one_minus_e):
                k = idx[r, None]
                return d - np.exp(peak[k]) * np.expm1(d) - s[k] * _log_mix(e[k], one_minus_e[k], d)

            log_int[live] = _log_integral_logconcave(delta, (a - peak)[live], (b - peak)[live])
        pieces.append(top + log_int)
    return _logaddexp(_logaddexp(pieces[0], pieces[1]), pieces[2])


# --------------------------------------------------------------------------- model quantities


def _log_alive_term(r, alpha, s, beta, x, T):
    """log of (alpha+T)^-(r+x) (beta+T)^-s, the likelihood's term for a customer alive at T."""
    return -(r + x) * np.log(alpha + T) - s * np.log(beta + T)


def _log_inverse_p_alive(r, alpha, s, beta, x, tx, T, scaled_tail_tx, scaled_tail_T):
    """log of the likelihood's braces over their alive term, which is -log P(alive) >= 0.

    The braces are B = (alpha+T)^-(r+x) (beta+T)^-s + s [tail(t_x) - tail(T)], tail(u) the integral
    over tau > u of (alpha+tau)^-(r+x) (beta+tau)^-(s+1). With the scaled tails N(u) =
    (alpha+u)^(r+x) (beta+u)^s tail(u) (:func:`_log_scaled_tail`),

        B / alive term = [1 - s N(T)] + s N(t_x) ((alpha+T)/(alpha+t_x))^(r+x) ((beta+T)/(beta+t_x))^s.

    s N(T) <= 1 because (alpha+tau)^-(r+x) <= (alpha+T)^-(r+x) for tau >= T, so both terms are
    non-negative: no cancellation whatever t_x - T, and only moderate numbers are added.
    """
    log_s = np.log(s)
    gap = log_s + scaled_tail_T
    # gap <= 0 in exact arithmetic; rounding may leave it at +1e-16.
    rest = -np.expm1(gap - np.maximum(np.real(gap), 0.0))
    positive = np.real(rest) > 0
    with np.errstate(divide="ignore"):
        log_rest = np.where(positive, np.log(np.where(positive, rest, 1.0)), -np.inf)
    silence = T - tx
    log_growth = (r + x) * np.log1p(silence / (alpha + tx)) + s * np.log1p(silence / (beta + tx))
    return _logaddexp(log_s + scaled_tail_tx + log_growth, log_rest)


def _log_p_alive(params: ParetoNBDParams, x, tx, T) -> np.ndarray:
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    tail_tx = _log_scaled_tail(r + x, s + 1.0, alpha + tx, beta + tx)
    tail_T = _log_scaled_tail(r + x, s + 1.0, alpha + T, beta + T)
    # The ratio is >= 0 in exact arithmetic; rounding must not push P(alive) above 1.
    return np.minimum(-_log_inverse_p_alive(r, alpha, s, beta, x, tx, T, tail_tx, tail_T), 0.0)


def _expected_time_alive(s, b, t):
    """E[min(lifetime, t)] = E[(1 - exp(-mu t)) / mu] for mu ~ Gamma(s, b), in the time unit of b and t.

    The integral over u in (0, t) of the survival (b / (b+u))^s, i.e. b / (s-1) [1 - (b / (b+t))^(s-1)],
    written as -b l exprel((s-1) l) with l = -log1p(t / b): exact at s = 1 (where it is
    b log(1 + t/b)) and for small t.
    """
    ell = -np.log1p(t / b)
    return b * -ell * exprel((s - 1.0) * ell)


def _unique_rows(*columns):
    """Distinct rows of equal-length float columns, and for each input row the index of its distinct row.

    The closed forms here cost a series or a quadrature per row, and customer summaries repeat a
    lot (all one-time buyers of a cohort share x = 0, t_x = 0 and T).
    """
    stacked = np.column_stack(columns)
    uniques, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return [uniques[:, j] for j in range(stacked.shape[1])], inverse.ravel()


def _check_horizon(name: str, t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        first = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(f"{name}: rule 'finite and >= 0': {int(bad.sum())} value(s) break it, first: {first}")
    return t


def _check_params(params) -> ParetoNBDParams:
    if not isinstance(params, ParetoNBDParams):
        raise TypeError(f"params: expected ParetoNBDParams, got {type(params).__name__}")
    return params


# --------------------------------------------------------------------------- likelihood and fit


def pareto_nbd_log_likelihood(params: ParetoNBDParams, frequency, recency, T) -> np.ndarray:
    """Log-likelihood of each customer's (x, t_x, T) under Pareto/NBD.

    The likelihood of [2]_ (Section 3; [1]_ gives the model), written with the integral its
    hypergeometric terms come from:

    .. math::

        L = \\frac{\\Gamma(r+x)\\,\\alpha^r \\beta^s}{\\Gamma(r)} \\left[
            \\frac{1}{(\\alpha+T)^{r+x} (\\beta+T)^s}
            + s \\int_{t_x}^{T} \\frac{d\\tau}{(\\alpha+\\tau)^{r+x} (\\beta+\\tau)^{s+1}} \\right]

    (alive at T, or dropped out at tau in (t_x, T]). [2]_ writes the integral as the difference
    ``A_0`` of two ``2F1(r+s+x, s+1 or r+x; r+s+x+1; .)`` terms, one formula for alpha >= beta and
    one for alpha < beta; here both regions go through :func:`_log_scaled_tail`, in log space, and
    the braces are summed without cancellation (:func:`_log_inverse_p_alive`). Finite for every
    finite positive parameter set and history.

    Parameters
    ----------
    params : ParetoNBDParams
    frequency, recency, T : array_like
        x, t_x and T per customer (n values each), in the time unit of ``params``.

    Returns
    -------
    numpy.ndarray
        Shape (n,), one log-likelihood per customer (<= 0 is not guaranteed: it is a density in t_x).

    Raises
    ------
    ValueError
        If the summary breaks a rule of :func:`features.btyd._mle.validate_rft`.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    (ux, utx, uT), inverse = _unique_rows(x, tx, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    tail_tx = _log_scaled_tail(r + ux, s + 1.0, alpha + utx, beta + utx)
    tail_T = _log_scaled_tail(r + ux, s + 1.0, alpha + uT, beta + uT)
    ll = (
        gammaln(r + ux)
        - gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        + _log_alive_term(r, alpha, s, beta, ux, uT)
        + _log_inverse_p_alive(r, alpha, s, beta, ux, utx, uT, tail_tx, tail_T)
    )
    return ll[inverse]


# Complex step on log-parameters: f'(x) = Im f(x + i h) / h with no subtraction, so h can be tiny.
_COMPLEX_STEP = 1e-20


def fit_pareto_nbd(frequency, recency, T, *, penalizer: float = 0.0, weights=None) -> ParetoNBDParams:
    """Fit Pareto/NBD by maximum likelihood.

    Maximises the weighted mean log-likelihood (:func:`pareto_nbd_log_likelihood`) minus
    ``penalizer * (r² + alpha² + s² + beta²)`` (the penalty of the ``lifetimes`` package), with
    L-BFGS-B on log-parameters. The gradient is exact: the Gamma-function and power terms are
    differentiated by hand, the bracket by complex steps (one complex evaluation per parameter).
    Identical (x, t_x, T) rows are grouped, and the two integrals of a row are computed once per
    distinct (x, t_x) and (x, T), so CDNOW (23,570 customers) fits in a few seconds.

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
    ParetoNBDParams

    Raises
    ------
    ValueError
        On a summary that breaks a rule, a negative penalizer, no customers, or no repeat purchase.
    RuntimeError
        If the optimiser ends on a non-finite value.
    """
    x, tx, T = validate_rft(frequency, recency, T)
    w = validate_weights(weights, x.size)
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError(f"penalizer: rule 'finite and >= 0': got {penalizer}")
    cols, w = group_rows({"x": x, "tx": tx, "T": T}, w)
    if w.sum() <= 0:
        raise ValueError("fit_pareto_nbd: no customers to fit (all weights are zero or no rows)")
    if not (cols["x"] > 0).any():
        raise ValueError("fit_pareto_nbd: rule 'some frequency > 0': no customer has a repeat purchase")
    data = _FitData.from_rows(cols["x"], cols["tx"], cols["T"], w)

    def objective(log_theta):
        value, gradient = _negative_mean_log_likelihood(log_theta, data)
        theta = np.exp(log_theta)
        return value + penalizer * (theta @ theta), gradient + 2.0 * penalizer * theta * theta

    # Start at r = s = 1 with alpha = beta so that the mean purchase rate r / alpha matches the observed
    # repeat rate (a unit-free start) and every integral starts in its cheapest, series branch.
    rate = (w @ data.x) / max(w @ data.T, np.finfo(float).tiny)
    scale = 1.0 / max(rate, 1e-9)
    start = np.log([1.0, scale, 1.0, scale])
    r, alpha, s, beta = minimize_log(objective, start)
    return ParetoNBDParams(r=float(r), alpha=float(alpha), s=float(s), beta=float(beta))


@dataclass(frozen=True)
class _FitData:
    """Grouped customer rows and the distinct (x, t_x), (x, T) and x they share, for the objective."""

    x: np.ndarray
    tx: np.ndarray
    T: np.ndarray
    weights: np.ndarray
    x_values: np.ndarray
    x_index: np.ndarray
    x_weights: np.ndarray
    tx_pairs: tuple[np.ndarray, np.ndarray]
    tx_index: np.ndarray
    T_pairs: tuple[np.ndarray, np.ndarray]
    T_index: np.ndarray

    @classmethod
    def from_rows(cls, x, tx, T, weights) -> "_FitData":
        x_values, x_index = np.unique(x, return_inverse=True)
        tx_pairs, tx_index = _unique_rows(x, tx)
        T_pairs, T_index = _unique_rows(x, T)
        return cls(
            x=x,
            tx=tx,
            T=T,
            weights=weights,
            x_values=x_values,
            x_index=x_index,
            x_weights=np.bincount(x_index, weights=weights, minlength=x_values.size),
            tx_pairs=tuple(tx_pairs),
            tx_index=tx_index,
            T_pairs=tuple(T_pairs),
            T_index=T_index,
        )


def _negative_mean_log_likelihood(log_theta: np.ndarray, data: _FitData) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood and its gradient in log(r, alpha, s, beta).

    The Gamma-function and power terms are differentiated by hand; the bracket by complex steps: row
    j of the 4 x 4 matrix below moves log-parameter j by i h, and every quantity computed from it
    carries that directional derivative in its imaginary part.
    """
    theta = np.exp(log_theta)
    r, alpha, s, beta = theta
    stepped = np.exp(log_theta + 1j * _COMPLEX_STEP * np.eye(4))
    rc, ac, sc, bc = (stepped[:, k, None] for k in range(4))
    (x_tx, u_tx), (x_T, u_T) = data.tx_pairs, data.T_pairs
    tail_tx = _log_scaled_tail(rc + x_tx, sc + 1.0, ac + u_tx, bc + u_tx)[:, data.tx_index]
    tail_T = _log_scaled_tail(rc + x_T, sc + 1.0, ac + u_T, bc + u_T)[:, data.T_index]
    bracket = _log_alive_term(rc, ac, sc, bc, data.x, data.T) + _log_inverse_p_alive(
        rc, ac, sc, bc, data.x, data.tx, data.T, tail_tx, tail_T
    )
    w, w_x, ux = data.weights, data.x_weights, data.x_values
    w_total = w.sum()
    ll = (
        w_x @ (gammaln(r + ux) - gammaln(r))
        + w_total * (r * np.log(alpha) + s * np.log(beta))
        + w @ np.real(bracket[0])
    )
    # d/d log(theta) = theta d/d theta for the hand-differentiated terms.
    grad = np.array(
        [
            r * (w_x @ (digamma(r + ux) - digamma(r)) + w_total * np.log(alpha)),
            w_total * r,
            w_total * s * np.log(beta),
            w_total * s,
        ]
    )
    grad = grad + (np.imag(bracket) @ w) / _COMPLEX_STEP
    return -ll / w_total, -grad / w_total


# --------------------------------------------------------------------------- predictions


def pareto_nbd_probability_alive(params: ParetoNBDParams, frequency, recency, T) -> np.ndarray:
    """Probability that each customer is still alive at T.

    [2]_, Section 5 (P(alive) is the first term of the likelihood's braces over the braces):

    .. math::

        P(\\text{alive} \\mid x, t_x, T) = \\frac{\\Gamma(r+x)\\,\\alpha^r \\beta^s}
            {\\Gamma(r)\\,(\\alpha+T)^{r+x} (\\beta+T)^s \\, L(r, \\alpha, s, \\beta \\mid x, t_x, T)}

    Unlike BG/NBD, a customer without a repeat purchase is not alive for sure.

    Parameters
    ----------
    params : ParetoNBDParams
    frequency, recency, T : array_like
        x, t_x and T per customer (n values each), in the time unit of ``params``.

    Returns
    -------
    numpy.ndarray
        Shape (n,), probabilities in [0, 1]; exactly 1 when t_x = T (bought at the cutoff).

    Raises
    ------
    ValueError
        If the summary breaks a rule of :func:`features.btyd._mle.validate_rft`.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    (ux, utx, uT), inverse = _unique_rows(x, tx, T)
    return np.exp(_log_p_alive(params, ux, utx, uT))[inverse]


def pareto_nbd_expected_purchases(params: ParetoNBDParams, t, frequency, recency, T) -> np.ndarray:
    """Expected number of purchases in (T, T + t] given each customer's history.

    [2]_, Section 6 (conditional expectation):

    .. math::

        E[X(T, T+t) \\mid x, t_x, T] = P(\\text{alive}) \\, \\frac{(r+x)(\\beta+T)}{(\\alpha+T)(s-1)}
            \\left[1 - \\left(\\frac{\\beta+T}{\\beta+T+t}\\right)^{s-1}\\right]

    that is P(alive) E[lambda | alive] E[(1 - e^(-mu t)) / mu | alive], with lambda ~ Gamma(r+x,
    alpha+T) and mu ~ Gamma(s, beta+T) independent given alive (the alive term of the likelihood is a
    product of the two gamma kernels). The bracket over (s - 1) is evaluated with ``exprel``, exact
    at s = 1 where it becomes log(1 + t / (beta+T)).

    Parameters
    ----------
    params : ParetoNBDParams
    t : float or array_like
        Horizon length in the time unit of ``params``; broadcast against the n customers.
    frequency, recency, T : array_like
        x, t_x and T per customer.

    Returns
    -------
    numpy.ndarray
        Shape (n,), expected purchases (purchase days) per customer; 0 for t = 0.

    Raises
    ------
    ValueError
        If the summary breaks a rule, or t is negative or not finite.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    t = np.broadcast_to(_check_horizon("t", t), x.shape)
    return _expected_purchases(params, x, tx, T, t)


def _expected_purchases(params, x, tx, T, t):
    """Expected purchases in (T, T + t]; t broadcasts against x[:, None] for the curve."""
    (ux, utx, uT), inverse = _unique_rows(x, tx, T)
    p_alive = np.exp(_log_p_alive(params, ux, utx, uT))
    rate = (params.r + ux) / (params.alpha + uT) * p_alive
    rate, beta_T = rate[inverse], params.beta + uT[inverse]
    if np.ndim(t) == 2:
        rate, beta_T = rate[:, None], beta_T[:, None]
    return rate * _expected_time_alive(params.s, beta_T, t)


def pareto_nbd_expected_purchases_curve(params: ParetoNBDParams, t, n_windows, frequency, recency, T) -> np.ndarray:
    """Cumulative expected purchases E[X(T, T + k t)] for k = 1 .. ``n_windows``, per customer.

    Column k - 1 is :func:`pareto_nbd_expected_purchases` with horizon k t; the purchases of window k
    alone are the differences of consecutive columns (``numpy.diff`` with a zero column prepended).
    P(alive) and E[lambda | alive] are computed once per customer and only the lifetime factor
    E[(1 - e^(-mu k t)) / mu | alive] changes with k.

    Parameters
    ----------
    params : ParetoNBDParams
    t : float
        Window length (> 0) in the time unit of ``params``.
    n_windows : int
        Number K of consecutive windows (>= 1).
    frequency, recency, T : array_like
        x, t_x and T per customer (n values each).

    Returns
    -------
    numpy.ndarray
        Shape (n, K), non-decreasing along each row.

    Raises
    ------
    ValueError
        If the summary breaks a rule, t is not a finite positive number, or n_windows is not a
        positive integer.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    if np.ndim(t) != 0 or not (np.isfinite(t) and t > 0):
        raise ValueError(f"t: rule 'one finite window length > 0': got {t!r}")
    if isinstance(n_windows, bool) or not isinstance(n_windows, (int, np.integer)) or n_windows < 1:
        raise ValueError(f"n_windows: rule 'integer >= 1': got {n_windows!r}")
    horizons = float(t) * np.arange(1, int(n_windows) + 1)
    return _expected_purchases(params, x, tx, T, horizons[None, :])


def pareto_nbd_expected_purchases_new(params: ParetoNBDParams, t) -> np.ndarray | float:
    """Expected number of repeat purchases of a new customer in (0, t].

    [2]_, Section 4 (mean of the Pareto/NBD):

    .. math::

        E[X(t)] = \\frac{r \\beta}{\\alpha (s-1)} \\left[1 - \\left(\\frac{\\beta}{\\beta+t}\\right)^{s-1}\\right]

    the conditional expectation of a customer with x = t_x = T = 0 (alive for sure).

    Parameters
    ----------
    params : ParetoNBDParams
    t : float or array_like
        Time since the first purchase, in the time unit of ``params``.

    Returns
    -------
    float or numpy.ndarray
        A float for a scalar ``t``, else an array shaped like ``t``.

    Raises
    ------
    ValueError
        If t is negative or not finite.
    """
    params = _check_params(params)
    t_arr = _check_horizon("t", t)
    value = params.r / params.alpha * _expected_time_alive(params.s, params.beta, t_arr)
    return float(value) if np.ndim(value) == 0 else value


def pareto_nbd_probability_no_purchase(params: ParetoNBDParams, t, frequency, recency, T) -> np.ndarray:
    """Probability of no purchase in (T, T + t] given each customer's history: the churn score.

    A dead customer never buys; an alive one with rates (lambda, mu) buys in (T, T + t] with
    probability lambda / (lambda + mu) (1 - e^(-(lambda+mu) t)) (the first event of the two competing
    exponential clocks is a purchase, and it comes before t). Given the history and alive, lambda ~
    Gamma(r+x, alpha+T) and mu ~ Gamma(s, beta+T) independently (the alive term of the likelihood is a
    product of the two gamma kernels; the argument of [2]_ Section 6 for the expectation). Writing
    (1 - e^(-(lambda+mu) t)) / (lambda+mu) as the integral of e^(-(lambda+mu) u) over u in (0, t) and
    taking the gamma expectations inside,

    .. math::

        P(X(T, T+t) = 0 \\mid x, t_x, T) = 1 - P(\\text{alive}) \\, (r+x)(\\alpha+T)^{r+x}(\\beta+T)^s
            \\int_0^t \\frac{du}{(\\alpha+T+u)^{r+x+1} (\\beta+T+u)^{s}}

    The integral is a difference of two tails (:func:`_log_scaled_tail`, with the powers in front
    cancelled by hand, not in floating point), so the probability is accurate in absolute terms even
    for heavy buyers. It equals the ratio L(x, t_x, T+t) / L(x, t_x, T) of two likelihoods, the same
    history seen for t longer without a purchase, which the tests check.

    Parameters
    ----------
    params : ParetoNBDParams
    t : float or array_like
        Horizon length in the time unit of ``params``; broadcast against the n customers.
    frequency, recency, T : array_like
        x, t_x and T per customer.

    Returns
    -------
    numpy.ndarray
        Shape (n,), probabilities in [0, 1]; 1 for t = 0.

    Raises
    ------
    ValueError
        If the summary breaks a rule, or t is negative or not finite.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    t = np.broadcast_to(_check_horizon("t", t), x.shape)
    (ux, utx, uT, ut), inverse = _unique_rows(x, tx, T, t)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    p, a, b = r + ux, alpha + uT, beta + uT
    # p a^p b^s tail(a, b) = p (b/a) N(a, b) with N the scaled tail; at (a+t, b+t) the powers left over
    # are (a/(a+t))^p (b/(b+t))^s, computed through log1p.
    log_now = np.log(p) + np.log(b) - np.log(a) + _log_scaled_tail(p + 1.0, s, a, b)
    log_later = (
        np.log(p)
        + np.log(b + ut)
        - np.log(a + ut)
        - p * np.log1p(ut / a)
        - s * np.log1p(ut / b)
        + _log_scaled_tail(p + 1.0, s, a + ut, b + ut)
    )
    with np.errstate(divide="ignore"):
        log_buy_if_alive = log_now + np.log(-np.expm1(np.minimum(log_later - log_now, 0.0)))
    buys = np.exp(_log_p_alive(params, ux, utx, uT) + np.minimum(log_buy_if_alive, 0.0))
    return np.clip(1.0 - buys, 0.0, 1.0)[inverse]


def pareto_nbd_dert(params: ParetoNBDParams, delta, frequency, recency, T) -> np.ndarray:
    """Discounted expected residual transactions of each customer, at continuous discount rate delta.

    DERT = E[integral over u > T of e^(-delta (u - T)) dX(u) | x, t_x, T]. [3]_ gives, with Tricomi's
    confluent hypergeometric function Psi = U,

    .. math::

        \\mathrm{DERT} = \\frac{\\alpha^r \\beta^s \\delta^{s-1} \\Gamma(r+x+1)\\,
            \\Psi(s, s; \\delta(\\beta+T))}{\\Gamma(r) (\\alpha+T)^{r+x+1} L(r, \\alpha, s, \\beta \\mid x, t_x, T)}
          = P(\\text{alive}) \\, \\frac{r+x}{\\alpha+T} \\, \\frac{R(s, \\delta(\\beta+T))}{\\delta}

    i.e. P(alive) E[lambda | alive] E[1 / (delta + mu) | alive], with R(s, z) = z^s e^z Gamma(1-s, z) =
    z U(1, 2-s, z) in (0, 1] (Kummer's transformation, DLMF 13.2.40). R is evaluated by quadrature
    (:func:`_log_laplace_lomax`): the powers of delta and beta+T in the published form over- or
    underflow, and ``scipy.special.hyperu`` fails for s >= 10.

    Parameters
    ----------
    params : ParetoNBDParams
    delta : float
        Continuous discount rate per time unit of ``params`` (> 0): an annual rate d in weeks is
        ``log(1 + d) / 52.18``.
    frequency, recency, T : array_like
        x, t_x and T per customer (n values each).

    Returns
    -------
    numpy.ndarray
        Shape (n,), discounted expected number of future purchases (purchase days).

    Raises
    ------
    ValueError
        If the summary breaks a rule or delta is not a finite positive number.
    """
    params = _check_params(params)
    x, tx, T = validate_rft(frequency, recency, T)
    if np.ndim(delta) != 0 or not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta: rule 'one finite discount rate > 0': got {delta!r}")
    (ux, utx, uT), inverse = _unique_rows(x, tx, T)
    uz, z_inverse = np.unique(delta * (params.beta + uT), return_inverse=True)
    log_r = _log_laplace_lomax(params.s, uz)[z_inverse.ravel()]
    log_rate = np.log(params.r + ux) - np.log(params.alpha + uT)
    return np.exp(_log_p_alive(params, ux, utx, uT) + log_rate + log_r - np.log(delta))[inverse]
