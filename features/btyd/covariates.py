"""Pareto/NBD and Gamma-Gamma with a categorical customer attribute (e.g. the acquisition channel).

Why
---
The dropout process carries lifetime CLV beyond the boosters' horizon. Fitted on the whole base it
has one dropout distribution, so a channel whose customers leave faster than the base is
over-valued far out and one whose customers stay is under-valued, most of all for a customer who
has only a first order (new-customer CLV per channel, the input to the maximum allowable CAC).

Model
-----
Time-invariant covariates in Pareto/NBD as Fader and Hardie [1]_ (and CLVTools' ``pnbd`` with
static covariates [2]_) put them: the gamma *rates* of the two heterogeneity distributions scale
with the customer's level g of the attribute,

    alpha_g = alpha · exp(a_g),   beta_g = beta · exp(b_g),

with the shapes r and s shared, so level g's mean purchase rate is r / alpha_g and its mean
dropout rate s / beta_g: exp(−a_g) and exp(−b_g) are the level's rate multipliers. In Gamma-Gamma
the rate v of the heterogeneity of a purchase day's value scales the same way, v_g = v · exp(c_g)
(mean value p v_g / (q − 1)), p and q shared. Each level's likelihood is the model's own
(:func:`features.btyd.pareto_nbd.pareto_nbd_log_likelihood`, eq. 3.6 of [3]_; Gamma-Gamma eq. 1 of
[4]_) with its rates.

The effects have a normal prior N(0, ``prior_sd``²) (maximum a posteriori): a level with few
customers stays near the base, and a value never seen in training (or missing) is the base itself
(all effects 0). With the prior the base is identified without a reference level.

With the seasonal purchase rate of :mod:`features.btyd.seasonal_pareto` the same effects are
fitted on that model's likelihood (:func:`fit_seasonal_pareto_nbd_by_level`), so that the season
is not read as dropout by level either.

Why hand-written: the likelihoods and their gradients are those of the modules beside this one;
only the levels' variables and the prior are added (:class:`_LevelScales`). scipy's L-BFGS-B does
the optimising.

References
----------
.. [1] Fader, P. S. and Hardie, B. G. S. (2007). Incorporating time-invariant covariates into the
   Pareto/NBD and BG/NBD models. http://brucehardie.com/notes/019/
.. [2] Bachmann, P., Meierer, M. and Näf, J. (2021). The role of time-varying contextual factors in
   latent attrition models for customer base analysis. *Marketing Science* 40(4), 783-809
   (the CLVTools R package).
.. [3] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and related
   expressions. http://brucehardie.com/notes/009/
.. [4] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
   http://www.brucehardie.com/notes/025/
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.btyd._mle import LOG_BOUND, group_rows, minimize_bounded, validate_rft
from features.btyd.gamma_gamma import GammaGammaParams, _gg_loglik_grad, _validate_xm
from features.btyd.pareto_nbd import ParetoNBDParams, _FitData, _negative_mean_log_likelihood
from features.btyd.seasonal import SeasonalClock
from features.btyd.seasonal_pareto import SeasonalHistory, seasonal_objective

__all__ = ["fit_gamma_gamma_by_level", "fit_pareto_nbd_by_level", "fit_seasonal_pareto_nbd_by_level", "level_codes"]

_OPTIONS = {"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8}


def _codes(codes, n: int, n_levels: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.shape != (n,) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes: rule 'one integer per customer': got shape {codes.shape}, dtype {codes.dtype}")
    if n and (codes.min() < -1 or codes.max() >= n_levels):
        raise ValueError(f"codes: rule '-1 (no level) or 0 .. {n_levels - 1}': got {codes.min()} .. {codes.max()}")
    return codes


def _check_prior(prior_sd: float) -> float:
    if not (np.isfinite(prior_sd) and prior_sd > 0):
        raise ValueError(f"prior_sd: rule 'finite and > 0': got {prior_sd}")
    return float(prior_sd)


def _minimize(objective, start: np.ndarray, n_log: int) -> np.ndarray:
    """Log-parameters within LOG_BOUND, then the effects within ±10."""
    bounds = [(-LOG_BOUND, LOG_BOUND)] * n_log + [(-10.0, 10.0)] * (start.size - n_log)
    return minimize_bounded(objective, start, bounds, _OPTIONS)


class _LevelScales:
    """The variables of the fit by level: each level's own log rate, not its effect on a base's.

    With the effects as variables (log alpha_g = log alpha + a_g) the fit is badly conditioned: moving
    the base one way and every effect the other leaves each level's likelihood where it was, and
    only the prior, 1 / (prior_sd² n) per customer, holds that direction. L-BFGS then spends most of
    its steps there (60 evaluations on a 2,675-customer book with six channels). Here the variables
    are each level's log alpha_g and log beta_g, which the level's own customers pin down, and the
    base: a variable of its own when some customers have no level, else the levels' mean (where the
    prior, a sum of squares about the base, is smallest). The optimum is the same; the effects are
    the differences. A rate without level effects is one variable shared by every level. Each
    log rate is bounded by ``LOG_BOUND`` (the effects by ±10 before), which the prior keeps far
    from binding.
    """

    def __init__(self, shares: np.ndarray, *, free: dict[int, bool], prior_sd: float, n_total: float):
        self.n_levels, self.has_base_rows, self.free = shares.size - 1, bool(shares[0] > 0), free
        self.penalty = 1.0 / (prior_sd**2 * n_total)
        self.blocks = {}  # column of theta -> slice of z
        scale = [np.ones(2)]
        at = 2
        # A level's curvature is its share of the customers: each variable is scaled by the square
        # root of that share (at least one customer's), so that all have about one curvature.
        level_scale = np.sqrt(np.maximum(shares, 1.0 / n_total))
        for k in (1, 3):
            own = np.r_[level_scale[1:], level_scale[:1]] if self._free(k) else np.ones(1)
            if self._free(k) and not self.has_base_rows:
                own = own[:-1]
            self.blocks[k] = slice(at, at + own.size)
            scale.append(own)
            at += own.size
        self.scale = np.concatenate(scale)
        self.size = at

    def _free(self, k: int) -> bool:
        return self.free[k] and self.n_levels > 0

    def start(self, log_theta: np.ndarray) -> np.ndarray:
        z = np.empty(self.size)
        z[0], z[1] = log_theta[0], log_theta[2]
        for k, block in self.blocks.items():
            z[block] = log_theta[k]
        return z * self.scale

    def bounds(self) -> list[tuple[float, float]]:
        return [(-LOG_BOUND * c, LOG_BOUND * c) for c in self.scale]

    def unpack(self, scaled: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Rows: the base, then each level; columns log r, log alpha, log s, log beta. Then the prior's value and gradient."""
        z = scaled / self.scale
        log_theta = np.empty((self.n_levels + 1, 4))
        log_theta[:, 0], log_theta[:, 2] = z[0], z[1]
        value, grad = 0.0, np.zeros(self.size)
        for k, block in self.blocks.items():
            own = z[block]
            if not self._free(k):
                log_theta[:, k] = own[0]
                continue
            levels = own[: self.n_levels]
            base = own[self.n_levels] if self.has_base_rows else levels.mean()
            log_theta[0, k], log_theta[1:, k] = base, levels
            gap = levels - base
            value += 0.5 * self.penalty * (gap @ gap)
            g = np.zeros(own.size)
            # Without base rows the base is the levels' mean, and the gap sums to 0: no term through it.
            g[: self.n_levels] = self.penalty * gap
            if self.has_base_rows:
                g[self.n_levels] = -self.penalty * gap.sum()
            grad[block] = g
        return log_theta, value, grad / self.scale

    def pack_gradient(self, grad: np.ndarray) -> np.ndarray:
        """The data's gradient by (base, level) row and theta column, in the variables ``z``."""
        out = np.zeros(self.size)
        out[0], out[1] = grad[:, 0].sum(), grad[:, 2].sum()
        for k, block in self.blocks.items():
            if not self._free(k):
                out[block] = grad[:, k].sum()
            elif self.has_base_rows:
                out[block] = np.r_[grad[1:, k], grad[0, k]]
            else:
                out[block] = grad[1:, k]
        return out / self.scale


def fit_pareto_nbd_by_level(
    frequency, recency, T, codes, n_levels: int, *, start: ParetoNBDParams, prior_sd: float = 1.0,
    effects: tuple[str, ...] = ("purchase", "dropout"),
) -> tuple[ParetoNBDParams, list[ParetoNBDParams]]:
    """Fit Pareto/NBD with level effects on the purchase-rate and dropout-rate scales (module docstring).

    Maximises Σ_i log L(x_i, t_x,i, T_i | r, alpha e^(a_g(i)), s, beta e^(b_g(i))) −
    Σ_g (a_g² + b_g²) / (2 prior_sd²) over log r, log alpha, log s, log beta and the effects; a
    customer with code −1 has no level (effects 0).

    Parameters
    ----------
    frequency, recency, T : array_like, shape (n,)
        x, t_x and T per customer in one time unit (:mod:`features.btyd.summary`).
    codes : array_like of int, shape (n,)
        Each customer's level, 0 .. ``n_levels`` − 1, or −1.
    n_levels : int
    start : ParetoNBDParams
        Starting point of the base (e.g. the fit without levels).
    prior_sd : float, default 1
        Standard deviation of the effects' normal prior (log scale: 1 lets a level's rate be
        e ≈ 2.7 times the base's at one standard deviation).
    effects : tuple of str, default ("purchase", "dropout")
        Which rates have level effects; the others are the base's for every level.

    Returns
    -------
    base : ParetoNBDParams
        r, alpha, s, beta of a customer without a level.
    by_level : list of ParetoNBDParams, length ``n_levels``
        Each level's parameters (r and s those of ``base``).

    Raises
    ------
    ValueError
        On a summary that breaks a rule, bad codes or prior, or no repeat purchase.
    RuntimeError
        If the optimiser ends on a non-finite value.
    """
    x, tx, T = validate_rft(frequency, recency, T)
    codes = _codes(codes, x.size, n_levels)
    prior_sd = _check_prior(prior_sd)
    if not (x > 0).any():
        raise ValueError("fit_pareto_nbd_by_level: rule 'some frequency > 0': no customer has a repeat purchase")

    def objective(mine):
        cols, w = group_rows({"x": x[mine], "tx": tx[mine], "T": T[mine]}, np.ones(int(mine.sum())))
        data = _FitData.from_rows(cols["x"], cols["tx"], cols["T"], w)
        return lambda log_theta: _negative_mean_log_likelihood(log_theta, data)

    return _fit_groups(_groups(codes, n_levels, objective), start, prior_sd, effects)


def fit_seasonal_pareto_nbd_by_level(
    h: SeasonalHistory, clock: SeasonalClock, codes, n_levels: int, *, start: ParetoNBDParams, prior_sd: float = 1.0,
    time_unit_days: float = 7.0, effects: tuple[str, ...] = ("purchase", "dropout"),
) -> tuple[ParetoNBDParams, list[ParetoNBDParams]]:
    """:func:`fit_pareto_nbd_by_level` with the likelihood of the seasonal purchase rate (:mod:`features.btyd.seasonal_pareto`).

    The levels' effects are fitted with the season in the likelihood, as the process of one level
    is (:func:`features.btyd.seasonal_pareto.fit_seasonal_pareto_nbd`), so the season is not read
    as dropout by level either.

    Parameters
    ----------
    h : SeasonalHistory
        n customers' purchase days.
    clock : SeasonalClock
        The monthly indices of the purchase rate.
    codes : array_like of int, shape (n,)
        Each customer's level, 0 .. ``n_levels`` − 1, or −1.
    n_levels : int
    start : ParetoNBDParams
        Starting point of the base (e.g. the seasonal fit without levels).
    prior_sd, effects
        As :func:`fit_pareto_nbd_by_level`.
    time_unit_days : float
        Days per time unit of the parameters.

    Returns
    -------
    base, by_level
        As :func:`fit_pareto_nbd_by_level`.

    Raises
    ------
    ValueError
        On bad codes or prior, or no repeat purchase.
    RuntimeError
        If the optimiser ends on a non-finite value.
    """
    codes = _codes(codes, h.frequency.size, n_levels)
    prior_sd = _check_prior(prior_sd)
    if not (np.asarray(h.frequency) > 0).any():
        raise ValueError("fit_seasonal_pareto_nbd_by_level: rule 'some frequency > 0': no customer has a repeat purchase")

    def objective(mine):
        return seasonal_objective(h.select(mine), clock, time_unit_days=time_unit_days, require_repeat=False)[0]

    return _fit_groups(_groups(codes, n_levels, objective), start, prior_sd, effects)


def _groups(codes: np.ndarray, n_levels: int, objective) -> list:
    """(customers, ``objective(mask)``) of the base's rows (code −1, effects fixed at 0) and of each level; None for an empty one."""
    groups = []
    for g in range(-1, n_levels):
        mine = codes == g
        groups.append((int(mine.sum()), objective(mine)) if mine.any() else None)
    return groups


def _fit_groups(groups, start: ParetoNBDParams, prior_sd: float, effects) -> tuple[ParetoNBDParams, list[ParetoNBDParams]]:
    """The fit by level given each group's (customers, objective): the base's rows (code −1) first, then each level.

    An objective maps log(r, alpha, s, beta) to the group's mean negative log-likelihood and its
    gradient; the fit minimises their customer-weighted sum and the prior (:class:`_LevelScales`).
    """
    n_levels = len(groups) - 1
    n_total = float(sum(0 if group is None else group[0] for group in groups))
    free = {1: "purchase" in effects, 3: "dropout" in effects}
    shares = np.array([0.0 if group is None else group[0] / n_total for group in groups])
    scales = _LevelScales(shares, free=free, prior_sd=prior_sd, n_total=n_total)

    def objective(z):
        log_theta, value, grad_prior = scales.unpack(z)
        grad = np.zeros((n_levels + 1, 4))
        for g, group in enumerate(groups):
            if group is None:
                continue
            nll, d = group[1](log_theta[g])
            value += shares[g] * nll
            grad[g] = shares[g] * d
        return value, scales.pack_gradient(grad) + grad_prior

    z = minimize_bounded(objective, scales.start(np.log([start.r, start.alpha, start.s, start.beta])), scales.bounds(), _OPTIONS)
    log_theta = scales.unpack(z)[0]
    r, alpha, s, beta = np.exp(log_theta[0])
    base = ParetoNBDParams(r=float(r), alpha=float(alpha), s=float(s), beta=float(beta))
    by_level = [
        ParetoNBDParams(r=base.r, alpha=float(np.exp(log_theta[g + 1, 1])), s=base.s, beta=float(np.exp(log_theta[g + 1, 3])))
        for g in range(n_levels)
    ]
    return base, by_level


def fit_gamma_gamma_by_level(
    frequency, monetary_value, codes, n_levels: int, *, start: GammaGammaParams, prior_sd: float = 1.0
) -> tuple[GammaGammaParams, list[GammaGammaParams]]:
    """Fit Gamma-Gamma with a level effect on the rate v of the value heterogeneity (module docstring).

    Only customers with ``frequency > 0`` and ``monetary_value > 0`` enter (as in
    :func:`features.btyd.gamma_gamma.fit_gamma_gamma`). Maximises Σ_i log f(m_i | p, q, v e^(c_g(i)), x_i)
    − Σ_g c_g² / (2 prior_sd²).

    Parameters
    ----------
    frequency, monetary_value : array_like, shape (n,)
        x and the mean repeat purchase-day value m (currency units).
    codes : array_like of int, shape (n,)
        Each customer's level, 0 .. ``n_levels`` − 1, or −1 (none).
    n_levels : int
    start : GammaGammaParams
        Starting point of the base.
    prior_sd : float, default 1

    Returns
    -------
    base : GammaGammaParams
    by_level : list of GammaGammaParams, length ``n_levels`` (p and q those of ``base``)

    Raises
    ------
    ValueError
        On bad inputs or no usable row.
    RuntimeError
        If the optimiser ends on a non-finite value.
    """
    x, m = _validate_xm(frequency, monetary_value)
    codes = _codes(codes, x.size, n_levels)
    prior_sd = _check_prior(prior_sd)
    keep = (x > 0) & (m > 0)
    if not keep.any():
        raise ValueError("fit_gamma_gamma_by_level: no row with frequency > 0 and monetary_value > 0")
    groups = []
    for g in range(-1, n_levels):
        mine = keep & (codes == g)
        if not mine.any():
            groups.append(None)
            continue
        cols, w = group_rows({"x": x[mine], "m": m[mine]}, np.ones(int(mine.sum())))
        ux, ix = np.unique(cols["x"], return_inverse=True)
        groups.append((ux, ix, cols["m"], np.log(cols["m"] * ux[ix]), w))
    n_total = float(keep.sum())
    variance = prior_sd**2

    def objective(z):
        log_theta, c = z[:3], z[3:]
        value = (c @ c) / (2.0 * variance * n_total)
        grad = np.zeros_like(z)
        grad[3:] = c / (variance * n_total)
        for g, group in enumerate(groups, start=-1):
            if group is None:
                continue
            ux, ix, mg, log_mx, w = group
            shift = np.array([0.0, 0.0, c[g] if g >= 0 else 0.0])
            theta = np.exp(log_theta + shift)
            ll, d = _gg_loglik_grad(theta, ux, ix, mg, log_mx, need_grad=True)
            value -= (w @ ll) / n_total
            d_log = -(d @ w) * theta / n_total  # d/d log theta
            grad[:3] += d_log
            if g >= 0:
                grad[3 + g] += d_log[2]
        return value, grad

    z0 = np.r_[np.log([start.p, start.q, start.v]), np.zeros(n_levels)]
    z = _minimize(objective, z0, 3)
    p, q, v = np.exp(z[:3])
    base = GammaGammaParams(p=float(p), q=float(q), v=float(v))
    return base, [GammaGammaParams(p=base.p, q=base.q, v=float(v * np.exp(z[3 + g]))) for g in range(n_levels)]


def level_codes(values, levels: Sequence[str]) -> np.ndarray:
    """Position of each value in ``levels``, −1 for a missing value or one not in ``levels``, shape (n,)."""
    return np.asarray(pd.Index(list(levels), dtype="str").get_indexer(pd.array(values, dtype="str")), dtype=np.int64)
