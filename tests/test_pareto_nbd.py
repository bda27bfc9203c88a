"""Pareto/NBD: the integral behind every closed form against independent quadrature, the predictions
against numerical integration over the posterior of (lambda, mu) and against simulation, property
tests on a wide parameter space, recovery of known parameters, and the published CDNOW fit."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from features import btyd
from features.btyd import pareto_nbd
from features.btyd import (
    ParetoNBDParams,
    fit_pareto_nbd,
    pareto_nbd_dert,
    pareto_nbd_expected_purchases,
    pareto_nbd_expected_purchases_curve,
    pareto_nbd_expected_purchases_new,
    pareto_nbd_log_likelihood,
    pareto_nbd_probability_alive,
    pareto_nbd_probability_no_purchase,
    summary_from_transactions,
)
from features.io import load_tables

CDNOW_PARAMS = ParetoNBDParams(r=0.597, alpha=11.59, s=0.522, beta=8.83)  # lifetimes 0.11.3, cutoff 1997-09-30


def predictions(params, t, delta, x, tx, T):
    """The five per-customer quantities of the module, for one history."""
    h = ([x], [tx], [T])
    return {
        "log_likelihood": pareto_nbd_log_likelihood(params, *h)[0],
        "p_alive": pareto_nbd_probability_alive(params, *h)[0],
        "expected": pareto_nbd_expected_purchases(params, t, *h)[0],
        "no_purchase": pareto_nbd_probability_no_purchase(params, t, *h)[0],
        "dert": pareto_nbd_dert(params, delta, *h)[0],
    }


# --------------------------------------------------------------------------- oracles


def tail_by_quadrature(m, n, a, b):
    """log of the integral over tau > 0 of (a + tau)^-m (b + tau)^-n, by tanh-sinh quadrature.

    In theta = log(tau) the integrand tau (a + tau)^-m (b + tau)^-n is smooth and log-concave with
    bends near log h (h = 1 / (m/a + n/b), the initial decay length), log a and log b; it is
    integrated between those knots (knots closer than 1e-3 merged), all in log space.
    """
    h = 1.0 / (m / a + n / b)

    def log_f(theta):
        return theta - m * np.logaddexp(np.log(a), theta) - n * np.logaddexp(np.log(b), theta)

    inner = np.sort(np.log([h, a, b]))
    inner = inner[np.concatenate([[True], np.diff(inner) > 1e-3])]
    knots = np.concatenate([[-np.inf], inner, [np.inf]])
    res = integrate.tanhsinh(log_f, knots[:-1], knots[1:], log=True, rtol=np.log(1e-12), maxlevel=14)
    assert np.all(res.status == 0), res.status
    return float(np.real(special.logsumexp(res.integral)))


def gamma_expectation(f, shape1, rate1, shape2, rate2):
    """E f(lam, mu) for independent lam ~ Gamma(shape1, rate1), mu ~ Gamma(shape2, rate2).

    Nested tanh-sinh over the two quantiles p, q in (0, 1): lam = F^-1(p), mu = F^-1(q), so the
    integrand is f itself, bounded or with integrable singularities at the ends only.
    """

    def inner(q, lam):
        return f(lam, special.gammaincinv(shape2, q) / rate2)

    def outer(p):
        lam = special.gammaincinv(shape1, p) / rate1
        res = integrate.tanhsinh(inner, 0.0, 1.0, args=(lam,), rtol=1e-11)
        return res.integral

    res = integrate.tanhsinh(outer, 0.0, 1.0, rtol=1e-11)
    assert res.status == 0, res.status
    return float(res.integral)


def posterior_oracle(params: ParetoNBDParams, x, tx, T, t, delta):
    """The five quantities by integrating over (lambda, mu), with none of the module's closed forms.

    Individual level ([1] of the module): L(lambda, mu) = lambda^x e^-(lambda+mu)T (alive at T)
    + lambda^x mu / (lambda+mu) [e^-(lambda+mu)t_x - e^-(lambda+mu)T] (dead in (t_x, T]). Times the
    gamma priors, the alive term is a constant times the Gamma(r+x, alpha+T) x Gamma(s, beta+T)
    density and the dead term a constant times Gamma(r+x, alpha+t_x) x Gamma(s+1, beta+t_x) times
    (1 - e^-(lambda+mu)(T-t_x)) / (lambda+mu); both expectations are taken numerically. Given
    alive, a customer with (lambda, mu) buys lambda (1 - e^-mu t) / mu times in t on average, buys at
    all with probability lambda / (lambda+mu) (1 - e^-(lambda+mu) t), and has DERT lambda / (delta+mu).
    """
    r, a, s, b = params.r, params.alpha, params.s, params.beta
    log_prior = special.gammaln(r + x) - special.gammaln(r) + r * np.log(a) + s * np.log(b)
    log_alive = log_prior - (r + x) * np.log(a + T) - s * np.log(b + T)
    log_lik = log_alive
    if T > tx:

        def dead(lam, mu):
            k = (lam + mu) * (T - tx)
            return (T - tx) * np.where(k < 1e-8, 1.0 - k / 2, -np.expm1(-k) / np.where(k < 1e-8, 1.0, k))

        log_dead = log_prior + np.log(s) - (r + x) * np.log(a + tx) - (s + 1) * np.log(b + tx)
        log_dead += np.log(gamma_expectation(dead, r + x, a + tx, s + 1, b + tx))
        log_lik = np.logaddexp(log_alive, log_dead)
    p_alive = np.exp(log_alive - log_lik)

    def spend(lam, mu):
        k = mu * t
        return lam * t * np.where(k < 1e-8, 1.0 - k / 2, -np.expm1(-k) / np.where(k < 1e-8, 1.0, k))

    alive = (r + x, a + T, s, b + T)
    expected = gamma_expectation(spend, *alive)
    buys = gamma_expectation(lambda lam, mu: lam / (lam + mu) * -np.expm1(-(lam + mu) * t), *alive)
    dert = gamma_expectation(lambda lam, mu: lam / (delta + mu), *alive)
    return {
        "log_likelihood": log_lik,
        "p_alive": p_alive,
        "expected": p_alive * expected,
        "no_purchase": 1.0 - p_alive * buys,
        "dert": p_alive * dert,
    }


def simulate_pareto_nbd(params: ParetoNBDParams, T: np.ndarray, rng: np.random.Generator):
    """Draw (x, t_x) over (0, T] from the Pareto/NBD story, with the latent lambda and death time.

    lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta), death ~ Exp(mu); purchases are Poisson(lambda)
    while alive. Given n purchases in (0, A], A = min(death, T), the last one is at A * Beta(n, 1).
    """
    lam = rng.gamma(params.r, 1.0 / params.alpha, T.size)
    mu = rng.gamma(params.s, 1.0 / params.beta, T.size)
    death = rng.exponential(1.0 / mu)
    active = np.minimum(death, T)
    x = rng.poisson(lam * active).astype(float)
    tx = np.where(x > 0, active * rng.beta(np.maximum(x, 1.0), 1.0), 0.0)
    return x, tx, lam, death


# --------------------------------------------------------------------------- the integral behind it all


EXPONENTS = [(m, n) for m in (0.02, 0.7, 1.5, 30.0, 1e4) for n in (0.01, 1.0, 2.5, 1e4) if m + n > 1]


@pytest.mark.parametrize(("m", "n"), EXPONENTS)
def test_tail_integral_matches_quadrature(m, n):
    # The scaled tail times a^-m b^(1-n), for every branch: a = b (series at y = 0), a ~ b, ratios 3
    # and 1/3 (series), 1e-8 and 1e8 (split: series below w, quadrature above, with the peak inside
    # or at either end of the quadrature's interval).
    offsets = [(1.0, 1.0), (1.0, 1.0 + 1e-9), (3.0, 1.0), (1.0, 3.0), (1e4, 1e-4), (1e-4, 1e4), (1e8, 1.0), (1.0, 1e8)]
    for a, b in offsets:
        scaled = pareto_nbd._log_scaled_tail(np.array([m]), np.array([n]), np.array([a]), np.array([b]))[0]
        got = scaled - m * np.log(a) - (n - 1) * np.log(b)
        expected = tail_by_quadrature(m, n, a, b)
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-10), (a, b)


def test_tail_integral_is_exact_where_it_has_a_closed_form():
    # a = b: the integral of (a + tau)^-(m+n) is a^(1-m-n) / (m+n-1), so the scaled tail is 1 / (m+n-1).
    m, n, a = np.array([0.02, 3.0, 1e4]), np.array([1.0, 0.5, 2.0]), np.array([1.0, 7.0, 0.3])
    np.testing.assert_allclose(pareto_nbd._log_scaled_tail(m, n, a, a), -np.log(m + n - 1), rtol=1e-15)


# --------------------------------------------------------------------------- predictions against the posterior


ORACLE_CASES = {
    "cdnow": ((0.597, 11.59, 0.522, 8.83), 2, 30.43, 38.86),
    "cdnow-one-time-buyer": ((0.597, 11.59, 0.522, 8.83), 0, 0.0, 38.86),
    "alpha=beta": ((1.0, 10.0, 1.0, 10.0), 5, 20.0, 52.0),
    "alpha~beta": ((0.8, 10.0, 1.3, 10.0 * (1 + 1e-9)), 3, 30.0, 40.0),
    "alpha>>beta": ((0.5, 1e4, 0.7, 0.1), 3, 50.0, 100.0),
    "alpha<<beta": ((2.0, 0.1, 0.3, 1e4), 20, 80.0, 100.0),
    "r=0.01,s=100": ((0.01, 1.0, 100.0, 1000.0), 1, 5.0, 40.0),
    "r=100,s=0.01": ((100.0, 100.0, 0.01, 1e-3), 120, 100.0, 150.0),
    "r=s=0.01": ((0.01, 0.05, 0.01, 20.0), 2, 10.0, 60.0),
    "r=s=100": ((100.0, 50.0, 100.0, 30.0), 300, 140.0, 150.0),
    "x=1e4,T=1e4": ((1.0, 1.0, 1.0, 1000.0), 10_000, 9990.0, 10_000.0),
    "x=1e4,alpha>>beta": ((50.0, 1e3, 2.0, 1.0), 10_000, 5000.0, 5001.0),
    "T=1e4,x=0": ((0.3, 5.0, 0.5, 50.0), 0, 0.0, 10_000.0),
    "s,beta small,T=1e4": ((0.6, 12.0, 0.01, 0.01), 10, 9000.0, 10_000.0),
}


@pytest.mark.parametrize("case", list(ORACLE_CASES), ids=list(ORACLE_CASES))
def test_predictions_match_integration_over_the_posterior(case):
    theta, x, tx, T = ORACLE_CASES[case]
    params = ParetoNBDParams(*theta)
    got = predictions(params, 26.0, 0.002, x, tx, T)
    expected = posterior_oracle(params, x, tx, T, 26.0, 0.002)
    for name in expected:
        # Probabilities near 1 are 1 - p_alive * P(buy): compared to 1e-12 in absolute terms, every
        # other quantity (down to P(alive) ~ 1e-18) relative to its size.
        assert got[name] == pytest.approx(expected[name], rel=1e-8, abs=1e-12 if name == "no_purchase" else 0), name


# --------------------------------------------------------------------------- properties


positive = st.floats(min_value=-3.0, max_value=3.0).map(lambda e: 10.0**e)
rate = st.floats(min_value=-4.0, max_value=6.0).map(lambda e: 10.0**e)
history = st.tuples(
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0.0, max_value=1.0),
    st.one_of(st.just(0.0), st.floats(min_value=-2.0, max_value=4.0).map(lambda e: 10.0**e)),
)


def as_summary(rows):
    x = np.array([float(k) for k, _, _ in rows])
    T = np.array([T for _, _, T in rows])
    tx = np.where(x > 0, np.array([f for _, f, _ in rows]) * T, 0.0)
    return x, tx, T


@settings(max_examples=60, deadline=None, derandomize=True)
@given(r=positive, alpha=rate, s=positive, beta=rate, rows=st.lists(history, min_size=1, max_size=8))
def test_everything_is_finite_on_a_wide_parameter_space(r, alpha, s, beta, rows):
    params = ParetoNBDParams(r, alpha, s, beta)
    x, tx, T = as_summary(rows)
    ll = pareto_nbd_log_likelihood(params, x, tx, T)
    p_alive = pareto_nbd_probability_alive(params, x, tx, T)
    no_purchase = pareto_nbd_probability_no_purchase(params, 52.0, x, tx, T)
    expected = pareto_nbd_expected_purchases(params, 52.0, x, tx, T)
    dert = pareto_nbd_dert(params, 0.002, x, tx, T)
    assert np.all(np.isfinite(ll))
    assert np.all((p_alive >= 0) & (p_alive <= 1)) and np.all((no_purchase >= 0) & (no_purchase <= 1))
    assert np.all(np.isfinite(expected) & (expected >= 0)) and np.all(np.isfinite(dert) & (dert >= 0))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(r=positive, alpha=rate, s=positive, beta=rate, rows=st.lists(history, min_size=1, max_size=4))
def test_no_purchase_is_the_likelihood_of_a_longer_silence(r, alpha, s, beta, rows):
    # P(no purchase in (T, T+t] | x, t_x, T) = L(x, t_x, T+t) / L(x, t_x, T): the same history seen
    # for t longer without a purchase. An identity between two independent code paths.
    params = ParetoNBDParams(r, alpha, s, beta)
    x, tx, T = as_summary(rows)
    ratio = np.exp(pareto_nbd_log_likelihood(params, x, tx, T + 52.0) - pareto_nbd_log_likelihood(params, x, tx, T))
    got = pareto_nbd_probability_no_purchase(params, 52.0, x, tx, T)
    np.testing.assert_allclose(got, ratio, rtol=1e-8, atol=1e-14)


# --------------------------------------------------------------------------- closed forms, limits, directions


def test_probability_alive_is_one_for_a_purchase_at_the_cutoff():
    for params in (CDNOW_PARAMS, ParetoNBDParams(2.0, 0.1, 0.3, 1e4), ParetoNBDParams(0.5, 1e4, 0.7, 0.1)):
        p_alive = pareto_nbd_probability_alive(params, [1, 40], [30.0, 52.0], [30.0, 52.0])
        np.testing.assert_allclose(p_alive, 1.0, rtol=1e-13)


def test_more_recent_purchase_means_more_alive_and_less_churn():
    x, tx, T = [4, 4, 4], [38.0, 20.0, 2.0], [39.0, 39.0, 39.0]
    p_alive = pareto_nbd_probability_alive(CDNOW_PARAMS, x, tx, T)
    churn = pareto_nbd_probability_no_purchase(CDNOW_PARAMS, 26.0, x, tx, T)
    assert p_alive[0] > p_alive[1] > p_alive[2] > 0
    assert churn[0] < churn[1] < churn[2] < 1
    assert np.all(churn >= 1 - p_alive)


def test_likelihood_is_continuous_across_alpha_equal_beta():
    # [2] has one formula for alpha >= beta and another for alpha < beta.
    x, tx, T = [0, 3, 40], [0.0, 20.0, 35.0], [39.0, 39.0, 39.0]
    at = pareto_nbd_log_likelihood(ParetoNBDParams(0.6, 10.0, 0.8, 10.0), x, tx, T)
    for beta in (10.0 * (1 - 1e-12), 10.0 * (1 + 1e-12)):
        near = pareto_nbd_log_likelihood(ParetoNBDParams(0.6, 10.0, 0.8, beta), x, tx, T)
        np.testing.assert_allclose(near, at, rtol=1e-11)


def test_cdnow_known_values():
    # lifetimes 0.11.3 with the CDNOW parameters: P(alive) 0.879 and 1.493 purchases in 39 weeks.
    assert pareto_nbd_probability_alive(CDNOW_PARAMS, [2], [30.43], [38.86])[0] == pytest.approx(0.879, abs=5e-4)
    assert pareto_nbd_expected_purchases(CDNOW_PARAMS, 39.0, [2], [30.43], [38.86])[0] == pytest.approx(1.493, abs=5e-4)


def test_expected_purchases_new_is_the_conditional_of_a_customer_with_no_history():
    t = np.array([0.0, 1.0, 26.0, 520.0])
    new = pareto_nbd_expected_purchases_new(CDNOW_PARAMS, t)
    no_history = pareto_nbd_expected_purchases(CDNOW_PARAMS, t, [0] * 4, [0] * 4, [0] * 4)
    np.testing.assert_allclose(new, no_history, rtol=1e-13)
    assert new[0] == 0.0 and np.all(np.diff(new) > 0)
    r, alpha, s, beta = 0.597, 11.59, 0.522, 8.83
    assert pareto_nbd_expected_purchases_new(CDNOW_PARAMS, 26.0) == pytest.approx(
        r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + 26.0)) ** (s - 1)), rel=1e-13
    )
    # s = 1 exactly, where the published form is 0/0: the limit r beta / alpha log(1 + t / beta).
    assert pareto_nbd_expected_purchases_new(ParetoNBDParams(r, alpha, 1.0, beta), 26.0) == pytest.approx(
        r * beta / alpha * np.log1p(26.0 / beta), rel=1e-13
    )
    assert isinstance(pareto_nbd_expected_purchases_new(CDNOW_PARAMS, 26.0), float)


def test_expected_purchases_curve_is_the_expectation_at_each_horizon():
    x, tx, T = np.array([0.0, 2.0, 7.0]), np.array([0.0, 30.43, 10.0]), np.array([38.86, 38.86, 20.0])
    curve = pareto_nbd_expected_purchases_curve(CDNOW_PARAMS, 13.0, 8, x, tx, T)
    assert curve.shape == (3, 8)
    for k in range(8):
        one_horizon = pareto_nbd_expected_purchases(CDNOW_PARAMS, 13.0 * (k + 1), x, tx, T)
        np.testing.assert_allclose(curve[:, k], one_horizon, rtol=1e-13)
    assert np.all(np.diff(curve, axis=1) > 0)


def test_dert_without_discounting_is_all_future_purchases():
    # As delta -> 0, DERT -> E[X(T, inf)] = P(alive) (r+x) (beta+T) / ((alpha+T)(s-1)) for s > 1.
    params = ParetoNBDParams(0.6, 12.0, 2.5, 30.0)
    x, tx, T = [0, 3, 12], [0.0, 20.0, 38.0], [39.0, 39.0, 39.0]
    forever = pareto_nbd_expected_purchases(params, 1e15, x, tx, T)
    np.testing.assert_allclose(pareto_nbd_dert(params, 1e-12, x, tx, T), forever, rtol=1e-9)
    # More discounting, less value.
    assert np.all(pareto_nbd_dert(params, 0.01, x, tx, T) < pareto_nbd_dert(params, 0.001, x, tx, T))


def test_no_purchase_over_no_time_is_certain():
    history = ([0, 3], [0.0, 20.0], [39.0, 39.0])
    np.testing.assert_array_equal(pareto_nbd_probability_no_purchase(CDNOW_PARAMS, 0.0, *history), 1.0)
    np.testing.assert_array_equal(pareto_nbd_expected_purchases(CDNOW_PARAMS, 0.0, *history), 0.0)


def test_large_inputs_match_small_ones():
    # alpha << beta puts every row in the quadrature branch; 20,000 distinct rows span two blocks.
    params = ParetoNBDParams(0.8, 1.0, 1.2, 1000.0)
    rng = np.random.default_rng(9)
    x = rng.poisson(3.0, 20_000).astype(float)
    T = rng.uniform(1.0, 150.0, x.size)
    tx = np.where(x > 0, T * rng.uniform(0.0, 1.0, x.size), 0.0)
    whole = pareto_nbd_probability_alive(params, x, tx, T)
    halves = np.concatenate([pareto_nbd_probability_alive(params, x[k::2], tx[k::2], T[k::2]) for k in (0, 1)])
    np.testing.assert_allclose(whole[np.r_[0 : x.size : 2, 1 : x.size : 2]], halves, rtol=1e-15)


# --------------------------------------------------------------------------- against simulation


@pytest.fixture(scope="module")
def simulated():
    true = ParetoNBDParams(r=0.8, alpha=10.0, s=1.2, beta=30.0)
    rng = np.random.default_rng(2024)
    T = rng.integers(182, 1092, 10_000) / 7.0  # first purchases 26 to 156 weeks before the cutoff, in days
    x, tx, lam, death = simulate_pareto_nbd(true, T, rng)
    return true, x, tx, T, lam, death


def test_predictions_match_the_simulated_latent_truth(simulated):
    # Tower property: among customers with the same x, the mean prediction equals the mean of the
    # same quantity given the simulated lambda and death time (no future draws: less noise).
    params, x, tx, T, lam, death = simulated
    t, delta = 26.0, 0.01
    alive = death > T
    time_left = np.clip(np.minimum(death, T + t) - T, 0.0, None)
    truth = {
        "p_alive": alive.astype(float),
        "expected": lam * time_left,
        "no_purchase": np.exp(-lam * time_left),
        "dert": np.where(alive, lam * -np.expm1(-delta * np.clip(death - T, 0.0, None)) / delta, 0.0),
    }
    got = {
        "p_alive": pareto_nbd_probability_alive(params, x, tx, T),
        "expected": pareto_nbd_expected_purchases(params, t, x, tx, T),
        "no_purchase": pareto_nbd_probability_no_purchase(params, t, x, tx, T),
        "dert": pareto_nbd_dert(params, delta, x, tx, T),
    }
    for rows in (x == 0, x == 1, (x >= 2) & (x <= 4), x >= 5):
        for name in truth:
            se = truth[name][rows].std() / np.sqrt(rows.sum())
            assert abs(got[name][rows].mean() - truth[name][rows].mean()) < 4 * se, name


def test_fit_recovers_simulated_parameters(simulated):
    true, x, tx, T, _, _ = simulated
    fit = fit_pareto_nbd(x, tx, T)
    # Tolerance from the data: the asymptotic standard errors of the log-parameters (inverse observed
    # information, by central differences of the exact gradient; 0.035, 0.033, 0.061 and 0.10 for
    # log r, alpha, s, beta here) and |estimate - truth| < 4 of them, which a correct fit breaks with
    # probability ~6e-5 per parameter. The SEs must also stay below 0.12 for the check to mean
    # something: 4 SEs are then at most +-14% on r and alpha, +-25% on s, +-48% on beta (s and beta are
    # identified only through the silences of those who dropped out).
    estimate = np.log([fit.r, fit.alpha, fit.s, fit.beta])
    data = pareto_nbd._FitData.from_rows(x, tx, T, np.ones(x.size))
    step = 1e-5

    def gradient(log_theta):
        return pareto_nbd._negative_mean_log_likelihood(log_theta, data)[1]

    hessian = np.array([(gradient(estimate + h) - gradient(estimate - h)) / (2 * step) for h in np.eye(4) * step])
    se = np.sqrt(np.diag(np.linalg.inv(x.size * (hessian + hessian.T) / 2)))
    z = (estimate - np.log([true.r, true.alpha, true.s, true.beta])) / se
    assert np.all(se < 0.12), se
    assert np.all(np.abs(z) < 4), z


def test_gradient_matches_finite_differences(simulated):
    _, x, tx, T, _, _ = simulated
    data = pareto_nbd._FitData.from_rows(x[:500], tx[:500], T[:500], np.ones(500))
    # Points on both sides of alpha = beta and in the split branch (alpha / beta = 1e3).
    for theta in ([0.5, 10.0, 0.7, 20.0], [1.2, 30.0, 2.0, 5.0], [0.3, 1e3, 0.4, 1.0]):
        log_theta = np.log(theta)
        grad = pareto_nbd._negative_mean_log_likelihood(log_theta, data)[1]
        step = 1e-6

        def value(lt):
            return pareto_nbd._negative_mean_log_likelihood(lt, data)[0]

        numeric = [(value(log_theta + h) - value(log_theta - h)) / (2 * step) for h in np.eye(4) * step]
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_fit_weights_equal_repeated_rows():
    x = np.array([0, 0, 1, 2, 5, 3, 0, 1])
    tx = np.array([0, 0, 4.0, 10.0, 30.0, 12.0, 0, 20.0])
    T = np.array([40.0, 20.0, 40.0, 30.0, 38.0, 39.0, 10.0, 25.0])
    counts = np.array([30, 12, 5, 4, 2, 3, 20, 6])
    weighted = fit_pareto_nbd(x, tx, T, weights=counts, penalizer=0.01)
    expanded = fit_pareto_nbd(np.repeat(x, counts), np.repeat(tx, counts), np.repeat(T, counts), penalizer=0.01)
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(weighted, name) == pytest.approx(getattr(expanded, name), rel=1e-6)


# --------------------------------------------------------------------------- boundaries


def test_params_must_be_finite_and_positive():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ParetoNBDParams.s"):
            ParetoNBDParams(0.5, 10.0, bad, 10.0)


def test_inputs_are_checked_at_the_boundary():
    with pytest.raises(ValueError, match="recency"):
        pareto_nbd_probability_alive(CDNOW_PARAMS, [1, 2], [5.0, 50.0], [10.0, 40.0])
    with pytest.raises(ValueError, match="t: rule"):
        pareto_nbd_expected_purchases(CDNOW_PARAMS, -1.0, [1], [5.0], [10.0])
    with pytest.raises(ValueError, match="delta"):
        pareto_nbd_dert(CDNOW_PARAMS, 0.0, [1], [5.0], [10.0])
    with pytest.raises(ValueError, match="n_windows"):
        pareto_nbd_expected_purchases_curve(CDNOW_PARAMS, 13.0, 0, [1], [5.0], [10.0])
    with pytest.raises(ValueError, match="t: rule"):
        pareto_nbd_expected_purchases_curve(CDNOW_PARAMS, [13.0, 26.0], 2, [1], [5.0], [10.0])
    with pytest.raises(ValueError, match="some frequency > 0"):
        fit_pareto_nbd([0, 0], [0.0, 0.0], [10.0, 20.0])
    with pytest.raises(ValueError, match="penalizer"):
        fit_pareto_nbd([1, 0], [5.0, 0.0], [10.0, 20.0], penalizer=-1.0)
    with pytest.raises(TypeError, match="ParetoNBDParams"):
        pareto_nbd_probability_alive(btyd.BGNBDParams(0.2, 4.0, 0.7, 2.0), [1], [5.0], [10.0])


# --------------------------------------------------------------------------- CDNOW reference


def test_cdnow_reference_fit(cdnow_dir):
    tables = load_tables(cdnow_dir).tables
    summary = summary_from_transactions(tables.transactions, cutoff="1997-09-30", time_unit_days=7)
    assert len(summary) == 23_570
    fit = fit_pareto_nbd(summary["frequency"], summary["recency"], summary["T"])
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(CDNOW_PARAMS, name), rel=0.01), name
