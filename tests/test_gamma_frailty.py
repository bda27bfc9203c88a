"""The gamma-frailty cancel hazard (features.btyd.gamma_frailty) and the contractual CLV it drives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.btyd.gamma_frailty import (
    FrailtyHazardParams,
    fit_frailty_hazard,
    fit_gamma_poisson_shape,
    frailty_nodes,
    frailty_survival,
)
from features.contract import Tables
from features.subscription import add_months, subscription_state
from serving.contractual import ContractualSettings, fit_contractual, score_contractual

CUTOFF = "2023-12-31"


def _person_periods(hazard_of, n: int, horizon: int, seed: int, plans=None):
    """Person-period rows of lifetimes drawn period by period: P(cancel in period k) = 1 - exp(-h)."""
    rng = np.random.default_rng(seed)
    spell, tenure, cancelled, plan = [], [], [], []
    theta = hazard_of["frailty"](rng, n)
    levels = rng.choice(plans, n) if plans is not None else np.full(n, "one")
    observed = rng.integers(1, horizon + 1, n)  # periods each subscription can be seen (censoring)
    for i in range(n):
        for k in range(observed[i]):
            h = theta[i] * hazard_of["base"](k) * hazard_of["plan"].get(levels[i], 1.0)
            gone = rng.random() < -np.expm1(-h)
            spell.append(i), tenure.append(k), cancelled.append(gone), plan.append(levels[i])
            if gone:
                break
    return np.array(spell), np.array(tenure), np.array(cancelled), np.array(plan, dtype=object)


def test_a_flat_hazard_book_gets_the_geometric_survival():
    # Every subscriber cancels with probability 0.05 a month, whatever its tenure: geometric lifetimes.
    h = -np.log(0.95)
    spell, tenure, cancelled, _ = _person_periods(
        {"frailty": lambda rng, n: np.ones(n), "base": lambda k: h, "plan": {}}, n=6_000, horizon=48, seed=1
    )
    params = fit_frailty_hazard(spell, tenure, cancelled, band_edges=(0, 1, 2, 3, 6, 12, 18))
    k = np.arange(1, 61)
    cumulative = np.cumsum(np.exp(np.asarray(params.band_log_hazard)[params.band(k - 1)]))
    np.testing.assert_allclose(frailty_survival(cumulative, params.shape), 0.95**k, rtol=0.08)
    assert params.shape > 5  # hardly any heterogeneity found where there is none


def test_the_frailty_and_a_plan_effect_are_recovered():
    # theta ~ Gamma(2, 2); a flat hazard of 0.1 a month that the "dear" plan halves.
    spell, tenure, cancelled, plan = _person_periods(
        {"frailty": lambda rng, n: rng.gamma(2.0, 0.5, n), "base": lambda k: 0.1, "plan": {"dear": 0.5}},
        n=8_000, horizon=40, seed=2, plans=np.array(["cheap", "dear"]),
    )
    params = fit_frailty_hazard(spell, tenure, cancelled, {"plan": plan}, band_edges=(0,))
    assert params.shape == pytest.approx(2.0, rel=0.3)
    effect = params.effects["plan"]["dear"] - params.effects["plan"]["cheap"]
    assert effect == pytest.approx(np.log(0.5), abs=0.1)
    assert np.exp(params.band_log_hazard[0] + params.effects["plan"]["cheap"]) == pytest.approx(0.1, rel=0.15)


def test_a_falling_hazard_is_carried_flat_after_the_last_band():
    # Each subscriber's hazard falls for a year and is flat after: the last band holds that level.
    spell, tenure, cancelled, _ = _person_periods(
        {"frailty": lambda rng, n: np.ones(n), "base": lambda k: 0.12 * (1 + min(k, 12)) ** -0.4, "plan": {}},
        n=8_000, horizon=40, seed=3,
    )
    params = fit_frailty_hazard(spell, tenure, cancelled, band_edges=(0, 1, 2, 3, 4, 6, 8, 10, 12))
    late = params.log_hazard(np.array([12, 40, 400]), {})
    np.testing.assert_allclose(late, late[0])
    # Little heterogeneity found where there is none: the population hazard stays near that level.
    cumulative = 12 * 0.12 * 13**-0.4 * np.arange(1, 4)
    np.testing.assert_allclose(np.diff(-np.log(frailty_survival(cumulative, params.shape))) / 12,
                               0.12 * 13**-0.4, rtol=0.2)


def test_quadrature_nodes_give_the_gamma_expectations():
    u, w = frailty_nodes(2.5, 24)
    assert w.sum() == pytest.approx(1.0)
    assert (w * u).sum() == pytest.approx(2.5)
    assert (w * np.exp(-0.3 * u)).sum() == pytest.approx((1 + 0.3) ** -2.5, rel=1e-10)
    # A large shape (no heterogeneity to speak of) stays finite: U / r is about 1.
    for shape in (150.0, 1e4):
        u, w = frailty_nodes(shape, 48)
        assert np.isfinite(w).all() and (w * u).sum() / shape == pytest.approx(1.0)
        assert (w * np.exp(-u / shape)).sum() == pytest.approx((1 + 1 / shape) ** -shape, rel=1e-3)


def test_parameters_round_trip_and_unseen_levels_get_no_effect():
    params = FrailtyHazardParams(band_edges=(0, 3), band_log_hazard=(-2.0, -3.0),
                                 effects={"plan": {"a": 0.0, "b": 0.5}}, shape=2.0)
    again = FrailtyHazardParams.from_dict(params.to_dict())
    assert again == params
    np.testing.assert_allclose(params.log_hazard(np.array([0, 2, 3, 50]), {"plan": np.array(["b", "a", "new", "b"])}),
                               [-1.5, -2.0, -3.0, -2.5])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="band_edges"):
        fit_frailty_hazard([0, 0], [0, 1], [False, True], band_edges=(1, 2))
    with pytest.raises(ValueError, match="at least one cancel"):
        fit_frailty_hazard([0, 0], [0, 1], [False, False])


def _one_plan_book(n: int, seed: int, price: float = 50.0) -> Tables:
    """Monthly invoices of one plan until a cancel; monthly hazard 0.08 / (1 + k) ** 0.3 times a Gamma(3, 3)."""
    rng = np.random.default_rng(seed)
    signup = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.uniform(0, 3 * 365, n), unit="D").round("s")
    theta = rng.gamma(3.0, 1 / 3, n)
    lifetime = np.ones(n, dtype=np.int64)
    for i in range(n):
        k = 0
        while k < 60 and rng.random() > -np.expm1(-theta[i] * 0.08 * (1 + min(k, 12)) ** -0.3):
            k += 1
        lifetime[i] = k + 1
    owner = np.repeat(np.arange(n), lifetime)
    k = np.concatenate([np.arange(t) for t in lifetime])
    ids = np.array([f"S{i:05d}" for i in range(n)], dtype=object)
    tx = pd.DataFrame({"customer_id": pd.array(ids[owner], dtype="str"),
                       "timestamp": add_months(signup.to_numpy()[owner], k), "amount": price})
    start_last = add_months(signup.to_numpy(), lifetime - 1)
    ev = pd.DataFrame({"customer_id": pd.array(ids, dtype="str"), "timestamp": start_last + np.timedelta64(1, "D"),
                       "event_type": pd.array(["cancel"] * n, dtype="str")})
    return Tables(transactions=tx, events=ev)


@pytest.fixture(scope="module")
def one_plan():
    book = _one_plan_book(4_000, seed=4)
    model = fit_contractual(book, cutoff=CUTOFF, settings=ContractualSettings(segment_by=(), horizon_days=182))
    return book, model


def test_clv_is_the_discounted_margin_over_the_frailty_survival(one_plan):
    # One plan and no plan change: every future invoice is 50, kept on its plan; the CLV is the
    # series over S(k) = (1 + dL_k / (r + A)) ** -r summed far beyond any explicit horizon.
    book, model = one_plan
    scores = score_contractual(model, book)
    state = subscription_state(book, cutoff=CUTOFF)
    hz = model.hazard
    r = hz.shape
    g = model.settings.discount_factor
    far = np.arange(0, 20_000)
    h = np.exp(np.asarray(hz.band_log_hazard)[hz.band(far)])
    running = scores.index[scores["state"] == "active"]
    for tenure in (0, 5, 30):
        cid = scores.loc[running].index[scores.loc[running, "tenure_periods"] == tenure][0]
        f = state.loc[cid, "period_elapsed"]
        a = h[:tenure].sum() + f * h[tenure]
        step = np.r_[(1 - f) * h[tenure], h[tenure + 1:tenure + 19_000]]
        survival = (1 + np.cumsum(step) / (r + a)) ** -r
        k = np.arange(1, len(survival) + 1)
        expected = np.sum(g ** (k - f) * 0.8 * 50.0 * survival)
        assert scores.loc[cid, "clv"] == pytest.approx(expected, rel=1e-4)
        assert scores.loc[cid, "discounted_residual_periods"] == pytest.approx(np.sum(g**k * survival), rel=1e-4)


def test_clv_does_not_depend_on_the_explicit_periods(one_plan):
    from dataclasses import replace

    book, model = one_plan
    short = score_contractual(replace(model, settings=replace(model.settings, explicit_periods=30)), book)
    long = score_contractual(replace(model, settings=replace(model.settings, explicit_periods=300)), book)
    np.testing.assert_allclose(short["clv"], long["clv"], rtol=1e-9)
    np.testing.assert_allclose(short["churn_probability"], long["churn_probability"], rtol=1e-12)


def test_the_gamma_poisson_shape_is_recovered():
    rng = np.random.default_rng(6)
    exposure = rng.uniform(0.1, 1.5, 20_000)
    counts = rng.poisson(rng.gamma(0.8, 1 / 0.8, exposure.size) * exposure)
    assert fit_gamma_poisson_shape(counts, exposure) == pytest.approx(0.8, rel=0.2)
    # No heterogeneity: the shape runs to its upper bound.
    assert fit_gamma_poisson_shape(rng.poisson(exposure), exposure) > 20


def test_a_last_band_without_enough_cancels_is_merged(one_plan):
    book, _ = one_plan
    settings = ContractualSettings(segment_by=(), hazard_bands=(0, 1, 2, 3, 6, 12, 18, 40))
    model = fit_contractual(book, cutoff=CUTOFF, settings=settings)
    # Three years of signups: hardly anyone is seen cancelling after 40 months.
    assert model.hazard.band_edges == (0, 1, 2, 3, 6, 12, 18)
