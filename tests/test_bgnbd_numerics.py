"""BG/NBD quantities over the whole parameter space, against an oracle integrated from the model.

The oracle is written from the model's definition (Fader, Hardie & Lee 2005, section 2), not from
the closed forms: a customer buys at Poisson rate lambda ~ Gamma(r, alpha) and drops out right after
a repeat purchase with probability p ~ Beta(a, b). Given (lambda, p) the likelihood of (x, t_x, T) is

    (1-p)^x lambda^x e^(-lambda T) + [x > 0] p (1-p)^(x-1) lambda^x e^(-lambda t_x),

the first term being "still alive at T", and an alive customer makes (1 - exp(-lambda p t)) / p
purchases in the next t on average. lambda is integrated out with the Gamma integral
int lambda^(r+x-1) e^(-lambda s) dlambda = Gamma(r+x) / s^(r+x) (checked against a 2-d quadrature in
``test_oracle_lambda_step_matches_double_integral``); p is integrated numerically with scipy's quad in
y = logit(p), relative to the mode of the Beta prior, with break points around the prior's and the
posterior's bulk. Tolerances are stated where used.
"""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import gammaln

from features.btyd import (
    BGNBDParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    bgnbd_probability_no_purchase,
    fit_bgnbd,
    summary_from_transactions,
)
from features.btyd import bgnbd
from features.io import load_tables


# --------------------------------------------------------------------------- oracle


def _log1pexp(y: float) -> float:
    return float(np.logaddexp(0.0, y))


def _posterior_integrals(a: float, b: float, x: float, log_integrands) -> tuple[float, list[float]]:
    """log of int p^(a-1) (1-p)^(b-1) (1-p)^x F(p) dp / B(a, b) for each log F, by quad in logit(p).

    Returns (log_scale, values) with log of the integral = log_scale + log(value). In y = logit(p)
    the prior density is p^a (1-p)^b / B(a, b). Its log is taken relative to the prior mode y0 =
    log(a/b), near which log(p/p0) is written as log1p of a small difference so that a, b ~ 1e8
    keep their digits; B(a, b) is replaced by the integral of the same density (no betaln). The
    factor (1-p)^x and each F are added in logs relative to the posterior mode, then exponentiated.
    """
    y0 = np.log(a) - np.log(b)
    e0 = b / a  # e^(-y0)
    log_p0, log_q0 = -_log1pexp(-y0), -_log1pexp(y0)

    def log_prior(y):
        d = y - y0
        if abs(d) < 1.0:
            return a * np.log1p(e0 * -np.expm1(-d) / (1.0 + e0 * np.exp(-d))) + b * np.log1p(
                -np.expm1(d) / (e0 + np.exp(d))
            )
        return a * (-_log1pexp(-y) - log_p0) + b * (-_log1pexp(y) - log_q0)

    y_post = np.log(a) - np.log(b + x)
    points = set()
    for centre, scale in ((y0, np.sqrt(1 / a + 1 / b)), (y_post, np.sqrt(1 / a + 1 / (b + x)))):
        for j in (0, 2, 6, 15, 40):
            points.update({centre - j * scale, centre + j * scale})
    # The tails e^(a y) (left) and e^(-b y) (right) are long when a or b is small.
    for j in (1, 5, 20, 45):
        points.update({y0 - j / a, y0 + j / b, y_post + j / (b + x)})
    grid = sorted(points)

    def integral(log_f, power, shift):
        def g(y):
            return np.exp(log_prior(y) - power * _log1pexp(y) + log_f(y) - shift)

        return sum(
            integrate.quad(g, left, right, epsabs=0, epsrel=1e-12, limit=200)[0]
            for left, right in zip(grid[:-1], grid[1:])
        )

    mass = integral(lambda y: 0.0, 0.0, 0.0)
    shift = log_prior(y_post) - x * _log1pexp(y_post)
    return shift, [integral(log_f, x, shift) / mass for log_f in log_integrands]


def oracle(params: BGNBDParams, t: float, x: float, tx: float, T: float) -> dict[str, float]:
    """P(alive), P(no purchase in t), E[purchases in t] and the log-likelihood by integration."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    k = r + x
    u = t / (alpha + T)

    def log_purchases(y):
        # E over lambda ~ Gamma(r+x, alpha+T) of (1 - e^(-lambda p t)) / p, which is k u at p -> 0.
        p = np.exp(-_log1pexp(-y))
        if p * u < 1e-300:
            return np.log(k * u)
        return np.log(-np.expm1(-k * np.log1p(p * u))) - np.log(p)

    integrands = [lambda y: 0.0, lambda y: y]  # alive: 1; dropped out after the last purchase: p / (1-p)
    if t > 0:
        integrands.append(log_purchases)
    shift, (alive, drop, *future) = _posterior_integrals(a, b, x, integrands)
    # Likelihood over Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x)): alive + [x>0] rho drop.
    log_rho = k * np.log1p((T - tx) / (alpha + tx))
    log_mixture = np.logaddexp(np.log(alive), np.log(drop) + log_rho) if x else np.log(alive)
    p_alive = np.exp(np.log(alive) - log_mixture)
    log_lik = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - k * np.log(alpha + T) + log_mixture + shift
    # Given alive, lambda ~ Gamma(r+x, alpha+T), so P(no purchase in t) = E[e^(-lambda t)], the
    # Gamma Laplace transform (rate / (rate + t))^(r+x).
    no_buy = np.exp(-k * np.log1p(t / (alpha + T)))
    return {
        "p_alive": float(p_alive),
        "p_no_purchase": float(1.0 - p_alive * (1.0 - no_buy)),
        "expected": float(p_alive * future[0] / alive) if t > 0 else 0.0,
        "log_lik": float(log_lik),
    }


# --------------------------------------------------------------------------- oracle grid

ORDINARY = [BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426), BGNBDParams(r=1.5, alpha=10.0, a=1.6, b=4.0)]
ORDINARY_CUSTOMERS = [(0, 0.0, 39.0), (1, 10.0, 39.0), (5, 3.0, 39.0), (80, 77.0, 78.0), (300, 100.0, 104.0)]
WIDE_CUSTOMERS = [(0, 0.0, 0.0), (0, 0.0, 1e4), (3, 1.0, 5.0), (1e4, 9.9e3, 1e4), (1e4, 1e4, 1e4)]
REGIONS = {
    "ordinary": (ORDINARY, ORDINARY_CUSTOMERS),
    "large a, b": (
        [
            BGNBDParams(r=0.17, alpha=3.0, a=1e7, b=1.17e7),
            BGNBDParams(r=0.3, alpha=5.0, a=1e8, b=1e8),
            BGNBDParams(r=2.0, alpha=0.3, a=8e4, b=6e7),
            BGNBDParams(r=1.0, alpha=1.0, a=1e8, b=1e-3),
            BGNBDParams(r=1.0, alpha=1.0, a=1e-3, b=1e8),
        ],
        WIDE_CUSTOMERS,
    ),
    "a + b = 1": (
        [
            BGNBDParams(r=0.5, alpha=2.0, a=0.3, b=0.7),
            BGNBDParams(r=0.5, alpha=2.0, a=1e-3, b=1 - 1e-3),
            BGNBDParams(r=0.5, alpha=2.0, a=0.4, b=0.6 + 1e-15),
            BGNBDParams(r=2.0, alpha=5.0, a=0.999, b=1e-3 - 1e-12),
        ],
        WIDE_CUSTOMERS,
    ),
    "a = 1": (
        [
            BGNBDParams(r=0.5, alpha=6.0, a=1.0, b=2.0),
            BGNBDParams(r=0.5, alpha=6.0, a=1.0 + 1e-9, b=2.0),
            BGNBDParams(r=0.5, alpha=6.0, a=1.0 - 1e-12, b=1e8),
        ],
        WIDE_CUSTOMERS,
    ),
    "small parameters": (
        [BGNBDParams(r=1e-3, alpha=1e-3, a=1e-3, b=1e-3), BGNBDParams(r=1e-3, alpha=1.0, a=0.5, b=1e-3)],
        WIDE_CUSTOMERS,
    ),
    "large r, alpha": (
        [BGNBDParams(r=1e8, alpha=1e8, a=0.7, b=2.4), BGNBDParams(r=1e3, alpha=1e-3, a=3.0, b=1e3)],
        WIDE_CUSTOMERS,
    ),
}
HORIZONS = (1e-3, 26.0, 1e4)
# Relative tolerance of the expectations and probabilities against the oracle. The implementation
# agrees with 40-digit references to ~1e-12 (see the module's numerics notes); the oracle's quad
# runs at epsrel 1e-12 but on integrands whose log weights carry rounding of ~1e-16 times
# (a + b) |log p| away from the prior mode, so 1e-9 leaves room for the oracle, not for the code.
RTOL = 1e-9
# Probabilities near 0 or 1 are compared absolutely: both sides form 1 - (number near 1).
ATOL_P = 1e-13


def _grid(region):
    params_list, customers = REGIONS[region]
    for i, params in enumerate(params_list):
        for j, (x, tx, T) in enumerate(customers):
            yield params, HORIZONS[(i + j) % len(HORIZONS)], float(x), tx, T


def _relative_errors(region):
    errors = {"expected": 0.0, "p_alive": 0.0, "p_no_purchase": 0.0, "log_lik": 0.0, "new": 0.0}
    for params, t, x, tx, T in _grid(region):
        want = oracle(params, t, x, tx, T)
        got = {
            "expected": bgnbd_expected_purchases(params, t, [x], [tx], [T])[0],
            "p_alive": bgnbd_probability_alive(params, [x], [tx], [T])[0],
            "p_no_purchase": bgnbd_probability_no_purchase(params, t, [x], [tx], [T])[0],
            "log_lik": bgnbd_log_likelihood(params, [x], [tx], [T])[0],
        }
        for name in ("expected", "p_alive", "p_no_purchase"):
            scale = max(abs(want[name]), ATOL_P / RTOL) if name != "expected" else abs(want[name])
            if want[name] == 0.0:
                assert got[name] < 1e-300, (region, params, t, x, tx, T, name)
                continue
            errors[name] = max(errors[name], abs(got[name] - want[name]) / scale)
        # The oracle's log-likelihood sums terms as large as r log(alpha) in double precision.
        size = abs(params.r * np.log(params.alpha)) + (params.r + x) * abs(np.log(params.alpha + T)) + 1.0
        errors["log_lik"] = max(errors["log_lik"], abs(got["log_lik"] - want["log_lik"]) / size)
        if x == 0 and T == 0:
            new = oracle(params, t, 0.0, 0.0, 0.0)["expected"]
            errors["new"] = max(errors["new"], abs(bgnbd_expected_purchases_new(params, t) / new - 1))
    return errors


@pytest.mark.parametrize("region", list(REGIONS))
def test_quantities_match_integration_oracle(region):
    errors = _relative_errors(region)
    assert errors["expected"] <= RTOL, errors
    assert errors["new"] <= RTOL, errors
    assert errors["p_alive"] <= RTOL, errors
    assert errors["p_no_purchase"] <= RTOL, errors
    assert errors["log_lik"] <= 1e-13, errors


def test_oracle_lambda_step_matches_double_integral():
    # The oracle integrates lambda out in closed form; check that step once against a 2-d
    # quadrature over (p, lambda) of the model's definition, for a small ordinary case.
    params, t, x, tx, T = BGNBDParams(r=1.5, alpha=4.0, a=1.6, b=4.0), 10.0, 2.0, 6.0, 9.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b

    def prior(lam, p):
        return np.exp(
            r * np.log(alpha) + (r - 1) * np.log(lam) - alpha * lam - gammaln(r)
            + (a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - (gammaln(a) + gammaln(b) - gammaln(a + b))
        )

    def alive_lik(lam, p):
        return (1 - p) ** x * lam**x * np.exp(-lam * T)

    def lik(lam, p):
        return alive_lik(lam, p) + p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * tx)

    def future(lam, p):
        return alive_lik(lam, p) * -np.expm1(-lam * p * t) / p

    opts = {"epsabs": 0, "epsrel": 1e-10}
    num = integrate.dblquad(lambda lam, p: future(lam, p) * prior(lam, p), 0, 1, 0, 60, **opts)[0]
    den = integrate.dblquad(lambda lam, p: lik(lam, p) * prior(lam, p), 0, 1, 0, 60, **opts)[0]
    assert oracle(params, t, x, tx, T)["expected"] == pytest.approx(num / den, rel=1e-8)


# --------------------------------------------------------------------------- properties

@st.composite
def cases(draw, low=-3.0, high=8.0):
    r, alpha, a, b = (10.0 ** draw(st.floats(min_value=low, max_value=high)) for _ in range(4))
    if draw(st.booleans()):
        a = draw(st.sampled_from([1.0, 1.0 + 1e-12, 1.0 - 1e-9, a]))
    if a < 1 and draw(st.booleans()):
        b = 1.0 - a  # a + b = 1 up to rounding
    n = draw(st.integers(min_value=1, max_value=4))
    x = np.array([float(draw(st.integers(min_value=0, max_value=10_000))) for _ in range(n)])
    T = np.array([draw(st.floats(min_value=0.0, max_value=1e4)) for _ in range(n)])
    tx = np.array([draw(st.floats(min_value=0.0, max_value=1.0)) for _ in range(n)]) * T
    tx[x == 0] = 0.0
    t = draw(st.floats(min_value=0.0, max_value=1e4))
    return BGNBDParams(r=r, alpha=alpha, a=a, b=b), t, x, tx, T


def _check_outputs(params, t, x, tx, T):
    expected = bgnbd_expected_purchases(params, t, x, tx, T)
    longer = bgnbd_expected_purchases(params, 2.0 * t + 1.0, x, tx, T)
    alive = bgnbd_probability_alive(params, x, tx, T)
    none = bgnbd_probability_no_purchase(params, t, x, tx, T)
    ll = bgnbd_log_likelihood(params, x, tx, T)
    new = bgnbd_expected_purchases_new(params, t)
    for values in (expected, longer, alive, none, ll, new):
        assert np.all(np.isfinite(values))
    assert np.all((alive >= 0) & (alive <= 1)) and np.all((none >= 0) & (none <= 1))
    assert np.all(expected >= 0) and new >= 0
    # Increasing in t (up to the 1e-12 accuracy), and below the no-drop-out mean (r+x) t / (alpha+T).
    assert np.all(longer >= expected * (1 - 1e-12))
    assert np.all(expected <= (params.r + x) * t / (params.alpha + T) * (1 + 1e-12))
    # Not buying is at least as likely as having dropped out.
    assert np.all(none >= (1 - alive) * (1 - 1e-12))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(cases())
def test_outputs_finite_and_in_range(case):
    _check_outputs(*case)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(cases(low=-9.0, high=9.0))
def test_outputs_finite_beyond_the_documented_range(case):
    # The fit's bounds are 1e-9 .. 1e9 (features.btyd._mle.LOG_BOUND): whatever it returns must work.
    _check_outputs(*case)


def test_failure_is_an_error_naming_the_rows(monkeypatch):
    params = ORDINARY[0]
    real = bgnbd._alive_purchases
    monkeypatch.setattr(bgnbd, "_alive_purchases", lambda a, bp, k, u: np.where(bp > 10, np.nan, real(a, bp, k, u)))
    with pytest.raises(ValueError, match=r"expected purchases.*2 row\(s\), first rows: \[1, 3\]"):
        bgnbd_expected_purchases(params, 26.0, [0, 20, 1, 20], [0.0, 30.0, 5.0, 30.0], [39.0, 39.0, 39.0, 39.0])


# --------------------------------------------------------------------------- bug-report case


@pytest.fixture(scope="module")
def tiny_case_summary(cases_dir):
    tables = load_tables(cases_dir / "bgnbd_nan_tiny").tables
    return summary_from_transactions(tables.transactions, cutoff="2014-12-31", time_unit_days=7)


def test_bgnbd_nan_tiny_case(tiny_case_summary):
    s = tiny_case_summary
    x, tx, T = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
    params = fit_bgnbd(x, tx, T)
    # The fit runs off to a, b of millions: only a / (a + b) is identified by three customers.
    assert params.a > 1e5 and params.b > 1e5
    got = bgnbd_expected_purchases(params, 26.0, x, tx, T)
    assert np.all(np.isfinite(got))
    want = [oracle(params, 26.0, *row)["expected"] for row in zip(x, tx, T)]
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # The case's README values come from the same integration at a ~ 6e6; where the fit stops
    # along the ridge moves them by about 1%.
    np.testing.assert_allclose(got, [0.085, 0.106, 0.061], rtol=0.03)
    assert np.all(np.isfinite(bgnbd_probability_alive(params, x, tx, T)))
    assert np.all(np.isfinite(bgnbd_log_likelihood(params, x, tx, T)))


def test_fit_on_near_daily_buyers_gives_usable_parameters():
    # Customers who buy on almost every day: the fit goes to large a, b (no drop-out seen).
    rng = np.random.default_rng(3)
    T = rng.uniform(20.0, 60.0, 40)
    x = np.floor(T * 7 * rng.uniform(0.85, 1.0, T.size))
    tx = T - rng.uniform(0.0, 0.3, T.size)
    params = fit_bgnbd(x, tx, T)
    for t in (1.0, 26.0, 1e4):
        got = bgnbd_expected_purchases(params, t, x, tx, T)
        assert np.all(np.isfinite(got)) and np.all(got > 0)
    # This fit stops near the optimiser's bound a = 1e-9, below the oracle's range (a >= 1e-3): its
    # left tail then spans ~1/a in logit(p) and quad reaches only ~1e-8 there.
    want = oracle(params, 26.0, x[0], tx[0], T[0])["expected"]
    assert bgnbd_expected_purchases(params, 26.0, x[:1], tx[:1], T[:1])[0] == pytest.approx(want, rel=1e-7)
