"""Gamma-Gamma: the model of a customer's mean purchase value [2]_, [3]_.

References
----------
.. [2] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. *Journal of Marketing Research* 42(4), 415-430.
.. [3] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
   http://www.brucehardie.com/notes/025/
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from features.btyd._mle import as_float_array, group_rows, minimize_log, validate_weights

__all__ = ["GammaGammaParams", "fit_gamma_gamma", "gamma_gamma_log_likelihood", "gamma_gamma_expected_value"]


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


def _validate_xm(frequency, monetary_value) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array("frequency", frequency)
    m = as_float_array("monetary_value", monetary_value)
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
    w = validate_weights(weights, x.size)
    if penalizer < 0:
        raise ValueError(f"penalizer: rule 'penalizer >= 0': got {penalizer}")
    keep = (x > 0) & (m > 0)
    cols, w = group_rows({"x": x[keep], "m": m[keep]}, w[keep])
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
    p, q, v = minimize_log(objective, start)
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
