"""The shifted-beta-geometric (sBG) model of contractual retention [1]_, and its discounted lifetime [2]_.

Each customer renews at the end of every billing period until it cancels, with a churn probability
theta that stays the same for that customer; theta varies across customers as a Beta(alpha, beta).
With T the number of periods a customer pays (T >= 1), [1]_ gives

    P(T = t | alpha, beta) = B(alpha + 1, beta + t - 1) / B(alpha, beta),   t = 1, 2, ...
    S(t | alpha, beta)     = P(T > t) = B(alpha, beta + t) / B(alpha, beta), t = 0, 1, ...
    r_t = S(t) / S(t - 1)  = (beta + t - 1) / (alpha + beta + t - 1)        (retention rate)

so the retention rate rises with tenure because the customers with a high theta leave first (the
heterogeneity, not a hazard that falls for each customer). ``S`` is evaluated at real ``t`` with the
same expression (the Beta function of a real argument), a smooth interpolation between period ends
used for horizons that are not whole periods.

Given that a customer has renewed ``n`` times (``T > n``), its theta is Beta(alpha, beta + n), so
P(T > n + k | T > n) = (b)_k / (alpha + b)_k with ``b = beta + n`` (rising factorials), and the
discounted expected number of further periods paid, with discount factor ``g`` per period, is the
hypergeometric series of [2]_ (their DERL, counted from the next period):

    sum_{k >= 1} g^k P(T > n + k | T > n) = 2F1(1, b; alpha + b; g) - 1.

Undiscounted (``g = 1``) the sum is ``b / (alpha - 1)`` when alpha > 1 and infinite otherwise: with
alpha <= 1 the sBG's lifetime tail is too heavy for a finite mean, and only discounted values exist.

References
----------
.. [1] Fader, P. S. and Hardie, B. G. S. (2007). How to project customer retention. *Journal of
   Interactive Marketing* 21(1), 76-90.
.. [2] Fader, P. S. and Hardie, B. G. S. (2010). Customer-base valuation in a contractual setting:
   the perils of ignoring heterogeneity. *Marketing Science* 29(1), 85-93.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, digamma, hyp2f1

from features.btyd._mle import as_float_array, group_rows, minimize_log, validate_weights

__all__ = [
    "SBGParams",
    "fit_sbg",
    "sbg_churn_probability",
    "sbg_discounted_residual_periods",
    "sbg_expected_residual_periods",
    "sbg_log_likelihood",
    "sbg_survival",
]


@dataclass(frozen=True)
class SBGParams:
    """sBG parameters [1]_: the Beta(alpha, beta) distribution of the per-period churn probability.

    Attributes
    ----------
    alpha, beta : float
        Positive shapes; the mean churn probability of new customers is alpha / (alpha + beta).
    """

    alpha: float
    beta: float


def _validate_periods(periods, churned) -> tuple[np.ndarray, np.ndarray]:
    t = as_float_array("periods", periods)
    c = np.asarray(churned, dtype=bool).ravel()
    if c.shape != t.shape:
        raise ValueError(f"periods and churned must have one length, got {t.size} and {c.size}")
    for rule, bad in (("periods >= 0", t < 0), ("periods >= 1 for a churned row", c & (t < 1))):
        if bad.any():
            first = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"periods: rule '{rule}': {int(bad.sum())} row(s) break it, first rows: {first}")
    return t, c


def _loglik_grad(theta: np.ndarray, t: np.ndarray, churned: np.ndarray, need_grad: bool):
    a, b = theta
    # Churned rows: log P(T = t); censored rows: log S(t) (both minus log B(alpha, beta)).
    ll = np.where(churned, betaln(a + 1, b + t - 1), betaln(a, b + t)) - betaln(a, b)
    if not need_grad:
        return ll, None
    psi_ab, psi_abt = digamma(a + b), digamma(a + b + t)
    d_a = np.where(churned, digamma(a + 1) - digamma(a), 0.0) + psi_ab - psi_abt
    d_b = np.where(churned, digamma(b + t - 1), digamma(b + t)) - digamma(b) + psi_ab - psi_abt
    return ll, np.vstack([d_a, d_b])


def sbg_log_likelihood(params: SBGParams, periods, churned) -> np.ndarray:
    """Log-likelihood of each customer under the sBG [1]_.

    Parameters
    ----------
    params : SBGParams
    periods : array_like, shape (n,)
        For a churned customer, T: the periods it paid (>= 1). For one still subscribed, the
        renewals it has made so far (T > periods; 0 = only its first period is known).
    churned : array_like of bool, shape (n,)

    Returns
    -------
    numpy.ndarray, shape (n,)
        log P(T = periods) for churned rows, log S(periods) for the others.

    Raises
    ------
    ValueError
        If a period count is negative, or a churned row has fewer than one period.
    """
    t, c = _validate_periods(periods, churned)
    return _loglik_grad(np.array([params.alpha, params.beta]), t, c, need_grad=False)[0]


def fit_sbg(periods, churned, *, weights=None) -> SBGParams:
    """Fit the sBG by maximum likelihood [1]_ on individual (possibly right-censored) lifetimes.

    Maximises the weighted sum of :func:`sbg_log_likelihood` with L-BFGS-B on log-parameters and the
    analytic gradient (d log B(x, y) / dx = psi(x) - psi(x + y)). Cohort tables such as the paper's
    (customers surviving each year) are the special case of one row per period with the number
    lost as weight, plus the survivors censored at the last period.

    Parameters
    ----------
    periods, churned : array_like, shape (n,)
        As in :func:`sbg_log_likelihood`.
    weights : array_like, shape (n,), optional
        Customers each row stands for.

    Returns
    -------
    SBGParams

    Raises
    ------
    ValueError
        If an input breaks its rule, or no row churned (the churn probability is then not identified).
    RuntimeError
        If the optimiser does not converge.
    """
    t, c = _validate_periods(periods, churned)
    w = validate_weights(weights, t.size)
    cols, w = group_rows({"t": t, "c": c}, w)
    if not (w[cols["c"]] > 0).any():
        raise ValueError("fit_sbg: rule 'some churned rows': no customer churned, the churn rate is not identified")
    w_total = w.sum()

    def objective(log_theta):
        theta = np.exp(log_theta)
        ll, grad = _loglik_grad(theta, cols["t"], cols["c"], need_grad=True)
        return -(w @ ll) / w_total, -(grad @ w) / w_total * theta

    # Start at alpha = 1 with the mean churn per period equal to the observed churns per period at risk.
    rate = min(max((w @ cols["c"]) / max(w @ cols["t"], 1e-12), 1e-6), 0.99)
    alpha, beta = minimize_log(objective, np.log([1.0, (1 - rate) / rate]))
    return SBGParams(alpha=float(alpha), beta=float(beta))


def sbg_survival(params: SBGParams, t) -> np.ndarray:
    """S(t) = P(T > t) = B(alpha, beta + t) / B(alpha, beta) [1]_, at real ``t >= 0``.

    Parameters
    ----------
    params : SBGParams
    t : array_like
        Periods since the start (real values interpolate between period ends).

    Returns
    -------
    numpy.ndarray, shape of ``t``
    """
    t = np.asarray(t, dtype=float)
    return np.exp(betaln(params.alpha, params.beta + t) - betaln(params.alpha, params.beta))


def sbg_churn_probability(params: SBGParams, tenure, horizon) -> np.ndarray:
    """P(T <= tenure + horizon | T > tenure): the probability of leaving within the horizon.

    Parameters
    ----------
    params : SBGParams
    tenure : array_like
        Periods already survived (real values allowed: a customer part-way through a period).
    horizon : float or array_like
        Length of the window, in periods (real values allowed).

    Returns
    -------
    numpy.ndarray
        1 - S(tenure + horizon) / S(tenure), in [0, 1].
    """
    tenure = np.asarray(tenure, dtype=float)
    b = params.beta + tenure
    return -np.expm1(betaln(params.alpha, b + np.asarray(horizon, dtype=float)) - betaln(params.alpha, b))


def sbg_discounted_residual_periods(params: SBGParams, renewals, discount_factor: float) -> np.ndarray:
    """sum_{k >= 1} g^k P(T > n + k | T > n) = 2F1(1, b; alpha + b; g) - 1, b = beta + n [2]_.

    Parameters
    ----------
    params : SBGParams
    renewals : array_like
        n, renewals made (real values allowed).
    discount_factor : float
        g per period, in (0, 1).

    Returns
    -------
    numpy.ndarray
        Discounted expected number of further periods paid after the current one.

    Raises
    ------
    ValueError
        If ``discount_factor`` is outside (0, 1).
    """
    if not 0 < discount_factor < 1:
        raise ValueError(f"discount_factor: rule 'in (0, 1)': got {discount_factor!r}")
    b = params.beta + np.asarray(renewals, dtype=float)
    return hyp2f1(1.0, b, params.alpha + b, discount_factor) - 1.0


def sbg_expected_residual_periods(params: SBGParams, renewals) -> np.ndarray:
    """E[T - n - 1 | T > n] = (beta + n) / (alpha - 1): further periods paid after the current one.

    Parameters
    ----------
    params : SBGParams
    renewals : array_like
        n, renewals made.

    Returns
    -------
    numpy.ndarray
        The expectation; ``inf`` when alpha <= 1 (the sBG's tail has no finite mean).
    """
    b = params.beta + np.asarray(renewals, dtype=float)
    if params.alpha <= 1:
        return np.full(b.shape, np.inf)
    return b / (params.alpha - 1)
