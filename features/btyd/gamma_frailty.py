"""A discrete-time cancel hazard by tenure with covariates and gamma frailty (contractual retention).

Each subscriber pays a billing period, then either cancels within it or renews. Within period
``k`` of a subscription (``k = 0`` the first) a subscriber with frailty theta cancels at the rate

    theta * h_k(x),   h_k(x) = exp(b_band(k) + sum_c beta_c[x_c]),

per period (it survives the period with probability ``exp(-theta h_k(x))``), where ``band(k)`` is
the tenure band of ``k`` (piecewise-constant baseline, constant after the last band edge) and
``x_c`` the level of covariate ``c`` in that period (plan, channel: a covariate may change between
periods). theta is Gamma(shape r, rate r) across subscribers (mean 1): the proportional-hazards
model with gamma frailty [1]_ [2]_ in discrete time. With ``A`` the cumulative hazard of the
periods survived, the gamma Laplace transform gives the survival

    S(A) = E[exp(-theta A)] = (1 + A / r) ** (-r),

and, given survival to ``A``, theta is Gamma(r, rate r + A) [2]_: the population hazard keeps
falling through selection after each subscriber's own hazard is flat, but the tail is that of a
mixture of geometric lifetimes with finite mean (for r > 1), not the sBG's beta tail. The sBG is
the special case of one band, no covariates and a beta instead of a gamma mixing distribution.

Fitted by maximum likelihood on person-period rows (one per paid period; a subscription's last row
is the cancel when it ended, and a running subscription contributes only the periods it finished).
The log-likelihood of a subscription with ``A`` the hazard of its survived periods and ``D`` that of
its cancel period is ``log S(A)`` if it is censored and ``log(S(A) - S(A + D))`` if it ended.
A small ridge penalty on the covariate effects and on the differences of adjacent band levels
keeps levels with few rows finite.

References
----------
.. [1] Vaupel, J. W., Manton, K. G. and Stallard, E. (1979). The impact of heterogeneity in
   individual frailty on the dynamics of mortality. *Demography* 16(3), 439-454.
.. [2] Hougaard, P. (2000). *Analysis of Multivariate Survival Data*, ch. 7 (the gamma frailty
   model). Springer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import gammaln, roots_genlaguerre

__all__ = [
    "FrailtyHazardParams",
    "fit_frailty_hazard",
    "fit_gamma_poisson_shape",
    "frailty_nodes",
    "frailty_survival",
]

_LOG_SHAPE_BOUNDS = (np.log(0.05), np.log(1e4))


@dataclass(frozen=True)
class FrailtyHazardParams:
    """A fitted gamma-frailty hazard (see the module docstring).

    Attributes
    ----------
    band_edges : tuple of int
        First tenure period of each band, strictly increasing from 0; the last band is open.
    band_log_hazard : tuple of float
        b, the log hazard per period of each band for frailty 1 at the covariates' reference levels.
    effects : mapping of str to mapping of str to float
        beta, per covariate the log multiplier of each level seen in the fit (0 for the reference
        level, the most frequent one). An unseen level gets 0.
    shape : float
        r, the gamma frailty's shape (and rate): its variance is 1 / r.
    """

    band_edges: tuple[int, ...]
    band_log_hazard: tuple[float, ...]
    effects: Mapping[str, Mapping[str, float]] = field(hash=False)
    shape: float

    def band(self, tenure) -> np.ndarray:
        """Band index of each tenure (periods, >= 0), an int array of the same shape."""
        return np.searchsorted(np.asarray(self.band_edges), np.asarray(tenure), side="right") - 1

    def log_hazard(self, tenure, covariates: Mapping[str, np.ndarray]) -> np.ndarray:
        """log h_k(x) for each row: ``tenure`` periods and the covariates' levels (same shapes)."""
        out = np.asarray(self.band_log_hazard, dtype=float)[self.band(tenure)]
        for name, levels in covariates.items():
            out = out + self.effect(name, levels)
        return out

    def effect(self, name: str, levels) -> np.ndarray:
        """beta_name of each level (0 for a level unseen in the fit or a covariate not fitted)."""
        table = self.effects.get(name, {})
        levels = np.asarray(levels, dtype=object)
        return np.array([table.get(str(v), 0.0) for v in levels.ravel()], dtype=float).reshape(levels.shape)

    def to_dict(self) -> dict:
        """JSON-able values (:meth:`from_dict` reads them)."""
        return {"band_edges": [int(e) for e in self.band_edges],
                "band_log_hazard": [float(b) for b in self.band_log_hazard],
                "effects": {c: {str(k): float(v) for k, v in t.items()} for c, t in self.effects.items()},
                "shape": float(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping) -> FrailtyHazardParams:
        """The parameters of :meth:`to_dict`."""
        return cls(band_edges=tuple(int(e) for e in data["band_edges"]),
                   band_log_hazard=tuple(float(b) for b in data["band_log_hazard"]),
                   effects={c: dict(t) for c, t in data["effects"].items()}, shape=float(data["shape"]))


def frailty_survival(cumulative_hazard, shape: float) -> np.ndarray:
    """S(A) = (1 + A / r) ** (-r): P(surviving a cumulative hazard A), gamma frailty of shape r."""
    return np.exp(-shape * np.log1p(np.asarray(cumulative_hazard, dtype=float) / shape))


def frailty_nodes(shape: float, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Laguerre nodes u and weights w with sum w f(u) ~ E[f(U)], U ~ Gamma(shape, 1).

    A subscriber whose posterior frailty is Gamma(r, rate r + A) has theta = U / (r + A).
    Exact for polynomials of degree < 2 ``n_nodes`` in U (generalised Gauss-Laguerre quadrature).
    Beyond a shape of 100 (a frailty variance below 1 %, where the Laguerre weights overflow) U is
    taken as normal with the same mean and variance (Gauss-Hermite), its coefficient of variation
    then below 0.1.
    """
    if shape > 100:
        x, w = np.polynomial.hermite.hermgauss(int(n_nodes))
        return np.maximum(shape + np.sqrt(2 * shape) * x, 0.0), w / np.sqrt(np.pi)
    u, w = roots_genlaguerre(int(n_nodes), float(shape) - 1.0)
    return u, w / np.exp(gammaln(shape))


def _codes(levels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes with the most frequent level first (the reference, effect 0)."""
    names, inverse, counts = np.unique(levels.astype(str), return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse], [str(n) for n in names[order]]


def fit_frailty_hazard(
    spell,
    tenure,
    cancelled,
    covariates: Mapping[str, Sequence] | None = None,
    *,
    band_edges: Sequence[int] = (0, 1, 2, 3, 6, 12, 24),
    ridge: float = 1.0,
) -> FrailtyHazardParams:
    """Maximum-likelihood fit of the gamma-frailty hazard on person-period rows.

    Parameters
    ----------
    spell : array-like of int, shape (n,)
        Subscription of each row (any integer labels).
    tenure : array-like of int, shape (n,)
        Period index of the row within its subscription (0 = first), >= 0.
    cancelled : array-like of bool, shape (n,)
        The subscription cancelled within this period (its last row); other rows were survived.
        A running subscription's current period must not be among the rows (it is not over).
    covariates : mapping of str to array-like, shape (n,) each, optional
        Level of each covariate in each row (categorical; str-converted).
    band_edges : sequence of int
        First tenure of each baseline band, strictly increasing from 0.
    ridge : float
        Penalty ``ridge / 2`` times the sum of squared covariate effects and squared differences
        of adjacent band levels (>= 0), in log-likelihood units.

    Returns
    -------
    FrailtyHazardParams

    Raises
    ------
    ValueError
        If the arrays differ in length, a tenure is negative, the band edges break their rule, or
        no row is a cancel (the hazard is then not identified).
    """
    spell = np.asarray(spell)
    tenure = np.asarray(tenure, dtype=np.int64)
    event = np.asarray(cancelled, dtype=bool)
    covariates = {name: np.asarray(v, dtype=object) for name, v in (covariates or {}).items()}
    edges = np.asarray(band_edges, dtype=np.int64)
    n = len(spell)
    if len(tenure) != n or len(event) != n or any(len(v) != n for v in covariates.values()):
        raise ValueError("spell, tenure, cancelled and covariates: rule 'one length': they differ")
    if (tenure < 0).any():
        raise ValueError(f"tenure: rule '>= 0': {int((tenure < 0).sum())} row(s) break it")
    if len(edges) < 1 or edges[0] != 0 or (np.diff(edges) <= 0).any():
        raise ValueError(f"band_edges: rule 'strictly increasing from 0': got {list(band_edges)!r}")
    if not event.any():
        raise ValueError("cancelled: rule 'at least one cancel': none, the hazard is not identified")
    if not ridge >= 0:
        raise ValueError(f"ridge: rule '>= 0': got {ridge!r}")

    _, spell_code = np.unique(spell, return_inverse=True)
    n_spells = int(spell_code.max()) + 1
    band = np.searchsorted(edges, tenure, side="right") - 1
    n_bands = len(edges)
    coded = {name: _codes(v) for name, v in covariates.items()}
    sizes = [len(names) - 1 for _, names in coded.values()]
    offsets = np.cumsum([n_bands, *sizes])
    n_par = int(offsets[-1]) + 1
    has_event = np.bincount(spell_code, weights=event, minlength=n_spells) > 0
    scale = 1.0 / n_spells

    def objective(x):
        eta = x[band].copy()
        for (codes, names), start in zip(coded.values(), offsets[:-1]):
            eta += np.r_[0.0, x[start:start + len(names) - 1]][codes]
        r = np.exp(x[-1])
        h = np.exp(eta)
        a = np.bincount(spell_code, weights=np.where(event, 0.0, h), minlength=n_spells)
        d = np.bincount(spell_code, weights=np.where(event, h, 0.0), minlength=n_spells)
        log_s1 = -r * np.log1p(a / r)
        log_s2 = -r * np.log1p((a + d) / r)
        rho = np.exp(log_s2 - log_s1)
        one_minus = np.where(has_event, -np.expm1(log_s2 - log_s1), 1.0)
        ll = log_s1 + np.where(has_event, np.log(np.maximum(one_minus, 1e-300)), 0.0)
        # Derivatives of each subscription's log-likelihood in A, D and r.
        ds1_da = -r / (r + a)
        ds2_da = -r / (r + a + d)
        ds1_dr = -np.log1p(a / r) + a / (r + a)
        ds2_dr = -np.log1p((a + d) / r) + (a + d) / (r + a + d)
        dl_da = np.where(has_event, (ds1_da - rho * ds2_da) / one_minus, ds1_da)
        dl_dd = np.where(has_event, -rho * ds2_da / one_minus, 0.0)
        dl_dr = np.where(has_event, (ds1_dr - rho * ds2_dr) / one_minus, ds1_dr)
        row = h * np.where(event, dl_dd[spell_code], dl_da[spell_code])
        grad = np.zeros(n_par)
        grad[:n_bands] = np.bincount(band, weights=row, minlength=n_bands)
        for (codes, names), start in zip(coded.values(), offsets[:-1]):
            grad[start:start + len(names) - 1] = np.bincount(codes, weights=row, minlength=len(names))[1:]
        grad[-1] = r * dl_dr.sum()
        # The ridge: covariate effects and band differences.
        diffs = np.diff(x[:n_bands])
        effects = x[n_bands:-1]
        penalty = 0.5 * ridge * (np.sum(diffs**2) + np.sum(effects**2))
        grad_pen = np.zeros(n_par)
        grad_pen[:n_bands] = ridge * (np.r_[0.0, diffs] - np.r_[diffs, 0.0])
        grad_pen[n_bands:-1] = ridge * effects
        return -(ll.sum() - penalty) * scale, -(grad - grad_pen) * scale

    rate = event.sum() / max(n, 1)
    x0 = np.r_[np.full(n_bands, np.log(max(rate, 1e-6))), np.zeros(n_par - n_bands - 1), np.log(2.0)]
    bounds = [(-30.0, 5.0)] * n_bands + [(-10.0, 10.0)] * (n_par - n_bands - 1) + [_LOG_SHAPE_BOUNDS]
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-9})
    x = result.x
    effects = {}
    for (name, (codes, names)), start in zip(coded.items(), offsets[:-1]):
        values = np.r_[0.0, x[start:start + len(names) - 1]]
        effects[name] = {level: float(v) for level, v in zip(names, values)}
    return FrailtyHazardParams(band_edges=tuple(int(e) for e in edges), band_log_hazard=tuple(float(b) for b in x[:n_bands]),
                               effects=effects, shape=float(np.exp(x[-1])))


def fit_gamma_poisson_shape(counts, exposure) -> float:
    """Shape a of a Gamma(a, a) multiplier of expected counts, by maximum likelihood.

    Each unit i has ``counts`` x_i ~ Poisson(lambda_i E_i) with ``exposure`` E_i (the count expected
    at multiplier 1) and lambda_i ~ Gamma(a, rate a), so x_i is negative binomial [2]_ and the
    posterior mean of lambda_i is ``(a + x_i) / (a + E_i)``. Used for each customer's propensity
    to change plan relative to the pooled plan-change matrix.

    Parameters
    ----------
    counts : array-like of int, shape (n,)
        Events per unit, >= 0.
    exposure : array-like of float, shape (n,)
        Expected events per unit at multiplier 1, >= 0.

    Returns
    -------
    float
        a in [0.01, 1e4] (1e4: no heterogeneity found).

    Raises
    ------
    ValueError
        If the lengths differ or a value is negative.
    """
    x = np.asarray(counts, dtype=float)
    e = np.asarray(exposure, dtype=float)
    if x.shape != e.shape:
        raise ValueError(f"counts and exposure: rule 'one length': got {x.size} and {e.size}")
    if (x < 0).any() or (e < 0).any():
        raise ValueError("counts and exposure: rule '>= 0': a negative value")
    keep = e > 0
    x, e = x[keep], e[keep]

    def negative_log_likelihood(log_a: float) -> float:
        a = np.exp(log_a)
        return -float(np.sum(gammaln(a + x) - gammaln(a) + a * np.log(a / (a + e)) + x * np.log(e / (a + e))))

    result = minimize_scalar(negative_log_likelihood, bounds=(np.log(0.01), np.log(1e4)), method="bounded")
    return float(np.exp(result.x))
