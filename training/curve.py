"""The spend curve of each customer: expected spend in every horizon k = 1..K, lifetime CLV and intervals.

The learned models know the next horizon best; the dropout process knows how a customer's value
decays over years. The curve joins them (design, "Models and the CLV arithmetic").

Notation
--------
Per customer, from the dropout process at the scoring date (:class:`features.btyd.lifetime.DropoutState`,
everything *given alive*): G(a, b) expected purchase days in a window, q(a, b) the probability of
at least one, v the expected value of a purchase day, π = P(alive). From the boosters, at their
label horizon H_m: p_m = P(no purchase in H_m) and s_m = E[spend in H_m | a purchase].

- The boosters' view of the customer, read in the dropout process: alive with probability
  π' = (1 − p_m) / q(0, H_m) (the probability of a purchase is P(alive) times q), and a spend level
  c = s_m / (v G(0, H_m) / q(0, H_m)) relative to the process's spend given a purchase. Their
  product ℓ = π' c = (1 − p_m) s_m / (v G(0, H_m)) turns the process's expected purchases given
  alive into the boosters' expected spend.
- The boosters have no calendar: their forecast is that of a window of the average season of
  their training windows (index ī, :func:`training.lifetime.training_season_index`), so G(0, H_m)
  and q(0, H_m) above are taken for a window of that seasonal length (the next window's times
  ī / its own index), and F below spreads the result over the real calendar.
- Cumulative expected spend from the scoring date to day t:
  F(t) = ℓ v G(0, t) for t ≤ H_m (the boosters' forecast, spread in time as the process spreads it);
  beyond H_m the tail carries π_tail c_tail v G(H_m, t) with π_tail = π'^w_alive π^(1 − w_alive) and
  c_tail = c^w_level η^(1 − w_level). ``alive_persistence`` w_alive and ``level_persistence``
  w_level say how much of the boosters' view lasts (1: all of it, 0: the dropout process alone);
  chosen on pseudo-holdouts (BENCHMARKS.md). η is the share of the value bought that the book
  keeps after refunds (:attr:`DropoutState.net_value_share`): v is the value of a purchase day,
  refunds excluded, while the boosters' s_m and the realised spend are net.
- Horizon k of H days: E_k = F(kH) − F((k − 1)H); the probability of a purchase in it
  P_k = min(1, π_k q(window k)) with π_k = π' for windows that start within H_m, π_tail after.
  churn_probability = 1 − P_1, spend_if_active = E_1 / P_1 (never below one order, v), and
  expected_spend = (1 − churn_probability) · spend_if_active = E_1 (so the curve sums to the
  horizon forecast: F is one cumulative function, whatever the window length).
- Lifetime CLV (design): Σ_{k=1..K} (m E_k − c_s P_k) / (1 + δ)^k, δ = (1 + d)^(H/365) − 1.
- Expected remaining lifetime: min(1, π_tail) E[min(lifetime left, K H) | alive], calendar days.

Intervals
---------
The 80 % intervals are quantiles of a predictive distribution with the curve's means: a mass
P(Y = 0) at zero (no purchase in the horizon; for CLV none in the whole cap) and a gamma
distribution for the rest whose mean and variance are those of the dropout process given a
purchase. The second moments come from the same posterior: given alive, N_k is Poisson with rate
λ e_k, e_k the seasonal time alive inside window k, λ ~ Gamma(r+x, α+Λ_T); so
E[N_k(N_k−1)] = E[λ²] E[e_k²] with E[e_k²] ≈ s̄_k² 2 ∫_window (u − a_k) S(u) du (s̄_k the window's
mean index), and E[N_j N_k] = E[λ²] Λ_j ∫_window k s(u) S(u) du for j < k (alive in window k
means alive through window j; Λ_j the seasonal length of window j). A purchase day is worth Gamma(p, ν) with
ν ~ Gamma(q + p x, v + x m) (Gamma-Gamma), so E[V²] = p (p+1) E[1/ν²] and for two different days
E[V V'] = p² E[1/ν²]. Each window is scaled to the curve's mean, and the CLV's moments are those
of the discounted sum. The interval is the central ``level`` of that distribution; the level is
calibrated on a time-held-out window (:func:`calibrate_level`), so that the intervals cover the
stated share of customers (marginal coverage, as split conformal prediction guarantees it): a
customer almost sure not to buy has the interval [0, 0], which covers more than 80 % of such
customers, and the level of the others absorbs it. The same level serves the lifetime CLV, whose
realised value cannot be known for years when the models are trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from features.btyd.lifetime import DropoutState

__all__ = [
    "INTERVAL_COVERAGE",
    "SpendCurve",
    "calibrate_level",
    "clv_bounds",
    "discount_per_horizon",
    "interval_bounds",
    "spend_curve",
]

#: Share of customers an interval is meant to cover.
INTERVAL_COVERAGE = 0.80
# Customers computed at once: the window quadratures hold (block, K, nodes) arrays.
_BLOCK = 20_000
_MOMENT_NODES = 16


def discount_per_horizon(horizon_days: float, annual_discount_rate: float) -> float:
    """Discount rate per horizon, δ = (1 + d)^(H/365) − 1.

    Parameters
    ----------
    horizon_days : float
        H, in days.
    annual_discount_rate : float
        d, per year; must be > −1.

    Returns
    -------
    float
        δ; e.g. d = 0.10, H = 365 gives 0.10, H = 182 gives 0.0487.

    Raises
    ------
    ValueError
        If d ≤ −1.
    """
    if annual_discount_rate <= -1:
        raise ValueError(f"annual_discount_rate must be > -1, got {annual_discount_rate}")
    return (1.0 + annual_discount_rate) ** (horizon_days / 365.0) - 1.0


@dataclass(frozen=True)
class SpendCurve:
    """Each customer's expected spend per horizon and what follows from it (n customers, K horizons).

    Attributes
    ----------
    horizon_days : int
        H, days of each horizon; horizon k is days (k−1)H+1 .. kH after the scoring date.
    expected_spend : ndarray, shape (n, K)
        E_k, currency units.
    active_probability : ndarray, shape (n, K)
        P_k, probability of at least one purchase in horizon k.
    expected_margin : ndarray, shape (n, K)
        m E_k − c_s P_k, undiscounted, currency units.
    clv : ndarray, shape (n,)
        Σ_k expected_margin_k / (1 + δ)^k, currency units.
    churn_probability, spend_if_active : ndarray, shape (n,)
        1 − P_1 and E_1 / P_1 (at least one order).
    p_alive : ndarray, shape (n,)
        min(1, π_tail): the probability that the customer is still a customer, as the lifetime uses it.
    expected_lifetime_days : ndarray, shape (n,)
        Expected remaining lifetime up to the cap K H, days.
    spend_moments, clv_moments : tuple of ndarray
        (P(0), mean, second moment) of the first horizon's spend and of the CLV's margin part
        m Σ_k E_k / (1 + δ)^k: the predictive distributions behind the intervals
        (:func:`interval_bounds`).
    clv_cost : ndarray, shape (n,)
        Expected discounted cost to serve, c_s Σ_k P_k / (1 + δ)^k (0 without a cost to serve).
    """

    horizon_days: int
    expected_spend: np.ndarray
    active_probability: np.ndarray
    expected_margin: np.ndarray
    clv: np.ndarray
    churn_probability: np.ndarray
    spend_if_active: np.ndarray
    p_alive: np.ndarray
    expected_lifetime_days: np.ndarray
    spend_moments: tuple[np.ndarray, np.ndarray, np.ndarray]
    clv_moments: tuple[np.ndarray, np.ndarray, np.ndarray]
    clv_cost: np.ndarray

    @property
    def n_horizons(self) -> int:
        return self.expected_spend.shape[1]

    def clv_interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the central ``level`` interval of the CLV (:func:`interval_bounds`).

        A cost to serve is taken at its expected value given a purchase in the cap: it shifts the
        positive part of the distribution (an approximation; the default cost is 0).
        """
        return clv_bounds(self.clv_moments, self.clv_cost, level)

    def spend_interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the central ``level`` interval of the first horizon's spend (:func:`interval_bounds`)."""
        return interval_bounds(self.spend_moments, level)


def spend_curve(
    state: DropoutState,
    *,
    churn_probability,
    spend_if_active,
    model_horizon_days: int,
    horizon_days: int,
    n_horizons: int,
    margin: float,
    cost_to_serve: float,
    annual_discount_rate: float,
    alive_persistence: float = 1.0,
    level_persistence: float = 1.0,
    model_season_index: float | None = None,
) -> SpendCurve:
    """The spend curve, lifetime CLV and interval moments of each customer (formulas in the module docstring).

    Parameters
    ----------
    state : DropoutState
        The dropout process at the scoring date, n customers.
    churn_probability, spend_if_active : array-like, shape (n,)
        p_m in [0, 1] and s_m (currency units) of the boosters over their label horizon.
    model_horizon_days : int
        H_m, the boosters' label horizon, days.
    horizon_days : int
        H, days of each horizon of the curve (any length, also longer than H_m).
    n_horizons : int
        K, the lifetime cap in horizons.
    margin, cost_to_serve : float
        m (share of spend) and c_s (currency units per active customer per horizon).
    annual_discount_rate : float
        d.
    alive_persistence, level_persistence : float
        w_alive and w_level in [0, 1].

    Returns
    -------
    SpendCurve

    Raises
    ------
    ValueError
        On lengths that differ from the state's, horizons < 1 day, K < 1 or persistences outside [0, 1].
    """
    n = len(state)
    p_m = np.asarray(churn_probability, dtype=float)
    s_m = np.asarray(spend_if_active, dtype=float)
    if p_m.shape != (n,) or s_m.shape != (n,):
        raise ValueError(f"churn_probability and spend_if_active: rule 'one per customer ({n})': got {p_m.shape}, {s_m.shape}")
    if horizon_days < 1 or model_horizon_days < 1 or n_horizons < 1:
        raise ValueError(f"horizons: rule 'horizon_days, model_horizon_days, n_horizons >= 1': got {horizon_days}, {model_horizon_days}, {n_horizons}")
    for name, w in (("alive_persistence", alive_persistence), ("level_persistence", level_persistence)):
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"{name}: rule 'in [0, 1]': got {w}")
    delta = discount_per_horizon(horizon_days, annual_discount_rate)
    parts = [
        _curve_block(
            state.select(slice(i, i + _BLOCK)), p_m[i : i + _BLOCK], s_m[i : i + _BLOCK],
            model_horizon_days=int(model_horizon_days), horizon_days=int(horizon_days), K=int(n_horizons),
            margin=margin, cost_to_serve=cost_to_serve, delta=delta,
            w_alive=alive_persistence, w_level=level_persistence, season_index=model_season_index,
        )  # fmt: skip
        for i in range(0, max(n, 1), _BLOCK)
    ]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return SpendCurve(
        horizon_days=int(horizon_days),
        expected_spend=joined["expected_spend"],
        active_probability=joined["active_probability"],
        expected_margin=joined["expected_margin"],
        clv=joined["clv"],
        churn_probability=joined["churn_probability"],
        spend_if_active=joined["spend_if_active"],
        p_alive=joined["p_alive"],
        expected_lifetime_days=joined["expected_lifetime_days"],
        spend_moments=(joined["spend_p0"], joined["spend_mean"], joined["spend_m2"]),
        clv_moments=(joined["clv_p0"], joined["clv_mean"], joined["clv_m2"]),
        clv_cost=joined["clv_cost"],
    )



def _curve_block(
    state: DropoutState, p_m, s_m, *, model_horizon_days, horizon_days, K, margin, cost_to_serve, delta, w_alive, w_level,
    season_index,
) -> dict[str, np.ndarray]:
    H, Hm = horizon_days, model_horizon_days
    bounds = np.arange(K + 1) * H  # days after the scoring date
    start, end = bounds[:-1], bounds[1:]
    v = state.order_value
    G = state.expected_purchases(start, end)  # (n, K), given alive
    q = state.purchase_probability(start, end)
    # The boosters forecast a window of the average season of their training windows: read their
    # numbers for a window of that seasonal length, not the next one's.
    next_index = state.seasonal_width([0], [Hm])[:, 0] * state.time_unit_days / Hm
    scale = np.ones(len(state)) if season_index is None else season_index / next_index
    G_m = state.expected_purchases([0], [Hm])[:, 0] * scale
    q_m = state.purchase_probability([0], [Hm], exposure_scale=scale)[:, 0]

    # The boosters' view: alive with π', spend level c; their product ℓ. q_m > 0 and G_m > 0 for
    # any window of a day or more (the rate posterior has a positive shape).
    alive_near = (1.0 - p_m) / q_m
    level = (1.0 - p_m) * s_m / (v * G_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_level = np.where(alive_near > 0, level / alive_near, s_m * q_m / (v * G_m))
    pi = state.p_alive
    alive_tail = alive_near**w_alive * pi ** (1.0 - w_alive)
    # The level the tail returns to is Gamma-Gamma's net of refunds (v is a purchase day's value).
    level_tail = c_level**w_level * state.net_value_share ** (1.0 - w_level)

    # Cumulative expected spend at the horizon bounds: the boosters' part up to H_m, the tail after.
    G_near = state.expected_purchases(np.zeros_like(bounds), np.minimum(bounds, Hm))
    G_tail = state.expected_purchases(np.full_like(bounds, Hm), np.maximum(bounds, Hm))
    F = (level * v)[:, None] * G_near + (alive_tail * level_tail * v)[:, None] * G_tail
    E = np.diff(F, axis=1)
    pi_k = np.where((start < Hm)[None, :], alive_near[:, None], alive_tail[:, None])
    P = np.minimum(pi_k * q, 1.0)

    churn = 1.0 - P[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        s1 = np.where(P[:, 0] > 0, E[:, 0] / P[:, 0], c_level * v * G[:, 0] / q[:, 0])
    s1 = np.maximum(s1, v)  # one order as bought: its refund, if any, is a later event
    E[:, 0] = P[:, 0] * s1  # the same number unless the one-order floor applied
    expected_margin = margin * E - cost_to_serve * P
    discount = (1.0 + delta) ** -np.arange(1, K + 1, dtype=float)
    clv = _discounted(expected_margin, discount)

    p_alive = np.minimum(alive_tail, 1.0)
    lifetime = p_alive * state.expected_lifetime_days(K * H)

    # Predictive distributions (module docstring): the dropout process with alive probability
    # min(π', 1) and a spend level that gives each window the curve's mean.
    spend_m2, clv_m2 = _second_moments(state, start, end, G, alive=np.minimum(alive_near, 1.0), mean=E, margin=margin, discount=discount)
    any_purchase = state.purchase_probability([0], [K * H])[:, 0]
    return {
        "expected_spend": E,
        "active_probability": P,
        "expected_margin": expected_margin,
        "clv": clv,
        "churn_probability": churn,
        "spend_if_active": s1,
        "p_alive": p_alive,
        "expected_lifetime_days": lifetime,
        "spend_p0": churn,
        "spend_mean": E[:, 0],
        "spend_m2": spend_m2,
        # No purchase in the whole cap: not alive, or alive and none in it.
        "clv_p0": 1.0 - np.minimum(alive_near, 1.0) * any_purchase,
        "clv_mean": _discounted(margin * E, discount),
        "clv_m2": clv_m2,
        "clv_cost": _discounted(cost_to_serve * P, discount),
    }


def _discounted(per_horizon: np.ndarray, discount: np.ndarray) -> np.ndarray:
    """Σ_k x_k · discount_k of each row: numpy's sum of each row, whose rounding does not depend on the
    other rows (a matrix-vector product's does, through BLAS's kernels for few rows)."""
    return (per_horizon * discount).sum(axis=1)


def _second_moments(state: DropoutState, start, end, G, *, alive, mean, margin, discount):
    """E[Y_1²] and E[(m Σ_k Y_k / (1+δ)^k)²] of the predictive distribution (module docstring, "Intervals").

    Given alive, N_k is Poisson with rate λ e_k, e_k = ∫_window s(u) 1(alive at u) du the seasonal
    time alive in window k. For j < k, E[e_j e_k] = Λ_j ∫_window k s(u) S(u) du (Λ_j the seasonal
    length of window j); E[e_k²] = 2 ∫_window s(u') S(u') (Λ(u') − Λ(a_k)) du', taken with the
    window's mean index s̄_k as s̄_k² 2 ∫ (u − a_k) S(u) du.
    """
    R, A = state.purchase_shape, state.purchase_rate
    lam2 = R * (R + 1.0) / A**2  # E[λ²] given alive
    # E[1/ν²] for ν ~ Gamma(Q, rate Vr) is Vr² / ((Q−1)(Q−2)); Q = q + p x > 2 whenever q > 2.
    Q = np.maximum(state.value_rate_shape, 2.0 + 1e-6)
    inv_nu2 = state.value_rate_rate**2 / ((Q - 1.0) * (Q - 2.0))
    p = state.value_shape
    pair_value = p * p * inv_nu2  # E[V V'] of two purchase days of one customer
    own_value = p * (p + 1.0) * inv_nu2  # E[V²]
    unit = state.time_unit_days
    seasonal = state.seasonal_width(start, end)  # Λ_k, (n, K)
    calendar = (np.asarray(end) - np.asarray(start)) / unit
    index = seasonal / calendar[None, :]
    J = _window_moment(state.dropout_shape, state.dropout_rate, (np.asarray(start) + 1) / unit, (np.asarray(end) + 1) / unit)
    survival_integral = G / (R / A)[:, None]  # ∫_window s(u) S(u) du
    base = state.order_value[:, None] * G  # mean of window k given alive, at level 1
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(base > 0, mean / (alive[:, None] * base), 0.0)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    diag = G * own_value[:, None] + lam2[:, None] * 2.0 * index**2 * J * pair_value[:, None]
    spend_m2 = alive * scale[:, 0] ** 2 * diag[:, 0]
    w = margin * discount[None, :] * scale  # weight of window k's level-1 spend in the CLV
    # Σ_j Σ_k w_j w_k E[Y_j Y_k] = diagonal + 2 Σ_{j<k} w_j w_k E[λ²] Λ_j ∫_k s S E[V V'].
    before = np.cumsum(w * seasonal, axis=1) - w * seasonal  # Σ_{j<k} w_j Λ_j
    cross = 2.0 * lam2 * pair_value * (w * survival_integral * before).sum(axis=1)
    clv_m2 = alive * ((w**2 * diag).sum(axis=1) + cross)
    return spend_m2, clv_m2


def _window_moment(s: float, B: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∫_a^b (u − a) (B/(B+u))^s du per customer (B, shape (n,)) and window (a, b, shape (K,)), by Gauss-Legendre."""
    nodes, weights = np.polynomial.legendre.leggauss(_MOMENT_NODES)
    half = (b - a) / 2.0  # (K,)
    u = a[:, None] + half[:, None] * (nodes + 1.0)  # (K, nodes)
    integrand = (u - a[:, None])[None] * np.exp(-s * np.log1p(u[None] / B[:, None, None]))
    return (integrand * weights).sum(axis=-1) * half[None, :]


def clv_bounds(moments: tuple[np.ndarray, np.ndarray, np.ndarray], cost: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the central ``level`` interval of a CLV of these moments (:func:`interval_bounds`) net of ``cost``.

    ``moments`` are those of the margin before the cost to serve, ``cost`` its expected value (shape
    (n,), currency units): the cost is taken at its expected value given a purchase in the cap and
    shifts the positive part of the distribution (an approximation; the default cost is 0).
    """
    lo, hi = interval_bounds(moments, level)
    p0 = moments[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(p0 < 1.0, cost / (1.0 - p0), 0.0)
    return np.where(lo > 0, lo - shift, lo), np.where(hi > 0, hi - shift, hi)


def interval_bounds(moments: tuple[np.ndarray, np.ndarray, np.ndarray], level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of a zero-inflated gamma with the given moments.

    The distribution is 0 with probability P0 and, otherwise, gamma with mean μ+ = mean / (1 − P0)
    and variance m2 / (1 − P0) − μ+². Its quantile at α is 0 when α ≤ P0, else the gamma quantile
    at (α − P0) / (1 − P0).

    Parameters
    ----------
    moments : (P0, mean, m2), each ndarray of shape (n,)
        Probability of 0, mean and second moment (currency units and their square).
    level : float
        Central probability in (0, 1): the bounds are the quantiles (1 − level)/2 and (1 + level)/2.

    Returns
    -------
    lower, upper : ndarray, shape (n,)
        Finite bounds with lower <= mean's distribution median <= upper; [0, 0] for a customer with
        nothing to expect.

    Raises
    ------
    ValueError
        If ``level`` is not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: rule 'in (0, 1)': got {level}")
    p0, mean, m2 = (np.asarray(v, dtype=float) for v in moments)
    positive = (1.0 - p0) > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(positive, mean / (1.0 - p0), 0.0)
        var = np.where(positive, m2 / (1.0 - p0) - mu**2, 0.0)
    ok = positive & (mu > 0) & (var > 1e-12 * np.maximum(mu, 1e-300) ** 2)
    shape = np.where(ok, mu**2 / np.where(ok, var, 1.0), 1.0)
    scale = np.where(ok, var / np.where(mu > 0, mu, 1.0), 1.0)

    def quantile(alpha: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            inner = np.clip((alpha - p0) / np.where(positive, 1.0 - p0, 1.0), 0.0, 1.0)
        q = stats.gamma.ppf(inner, shape, scale=scale)
        q = np.where(ok, q, mu)  # a degenerate positive part: its mean
        q = np.where(alpha <= p0, 0.0, q)
        return np.where(np.isfinite(q), q, mu)

    return quantile((1.0 - level) / 2.0), quantile((1.0 + level) / 2.0)


def calibrate_level(moments, actual, *, coverage: float = INTERVAL_COVERAGE) -> float:
    """The central level whose intervals cover ``coverage`` of the customers of a held-out window.

    Split conformal calibration of the one parameter of :func:`interval_bounds`: coverage grows
    with the level, so the level is the smallest on a fine grid whose intervals hold at least
    ⌈(n + 1) · coverage⌉ / n of the realised values (Vovk et al. 2005; Lei et al. 2018, for the
    finite-sample correction).

    Parameters
    ----------
    moments : (P0, mean, m2)
        Predictive distributions of the held-out window (as :attr:`SpendCurve.spend_moments`).
    actual : array-like, shape (n,)
        Realised spend in that window, currency units.
    coverage : float
        Target share in (0, 1).

    Returns
    -------
    float
        The level, in [0.02, 0.998].

    Raises
    ------
    ValueError
        If there is no customer or ``coverage`` is not in (0, 1).
    """
    y = np.asarray(actual, dtype=float)
    if y.size == 0:
        raise ValueError("calibrate_level: no customer in the calibration window")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage: rule 'in (0, 1)': got {coverage}")
    target = min(np.ceil((y.size + 1) * coverage) / y.size, 1.0)
    grid = np.round(np.arange(0.02, 0.9981, 0.002), 4)

    def covered(level: float) -> float:
        lo, hi = interval_bounds(moments, level)
        return float(np.mean((y >= lo - 1e-9) & (y <= hi + 1e-9)))

    # Bisection over the grid: coverage is non-decreasing in the level.
    lo_i, hi_i = 0, len(grid) - 1
    if covered(grid[hi_i]) < target:
        return float(grid[hi_i])
    while lo_i < hi_i:
        mid = (lo_i + hi_i) // 2
        if covered(grid[mid]) >= target:
            hi_i = mid
        else:
            lo_i = mid + 1
    return float(grid[lo_i])
