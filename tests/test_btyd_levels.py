"""The dropout process by level of a customer attribute (features.btyd.covariates, LifetimeParams.by_level)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.btyd import GammaGammaParams, ParetoNBDParams, fit_gamma_gamma, fit_pareto_nbd
from features.btyd.covariates import fit_gamma_gamma_by_level, fit_pareto_nbd_by_level, level_codes
from features.btyd.lifetime import DropoutState, LevelEffects, LifetimeParams, fit_lifetime, level_values, seasonal_history
from features.btyd.seasonal_pareto import seasonal_pareto_nbd_probability_alive
from features.btyd.pareto_nbd import pareto_nbd_probability_alive
from features.btyd.summary import btyd_summary
from features.contract import Tables
from features.dates import day_number
from features.history import prepare_history
from tests.test_pareto_nbd import simulate_pareto_nbd

BASE = ParetoNBDParams(r=0.9, alpha=10.0, s=1.2, beta=40.0)
# Level "fast": buys 1.25 times as often and leaves 2 times as fast as level "slow".
LEVELS = {"slow": (1.0, 1.0), "fast": (1.25, 2.0)}


@pytest.fixture(scope="module")
def two_levels():
    rng = np.random.default_rng(7)
    x, tx, T, codes = [], [], [], []
    for g, (rate, dropout) in enumerate(LEVELS.values()):
        params = ParetoNBDParams(r=BASE.r, alpha=BASE.alpha / rate, s=BASE.s, beta=BASE.beta / dropout)
        t = rng.integers(182, 1092, 2000) / 7.0
        xg, txg, _, _ = simulate_pareto_nbd(params, t, rng)
        x.append(xg), tx.append(txg), T.append(t), codes.append(np.full(t.size, g))
    return np.concatenate(x), np.concatenate(tx), np.concatenate(T), np.concatenate(codes)


def test_level_effects_recover_the_simulated_rate_multipliers(two_levels):
    x, tx, T, codes = two_levels
    base, (slow, fast) = fit_pareto_nbd_by_level(x, tx, T, codes, 2, start=fit_pareto_nbd(x, tx, T))
    assert slow.r == fast.r == base.r and slow.s == fast.s == base.s
    # Rate multipliers of "fast" over "slow": alpha and beta are the rates of the gamma heterogeneity.
    assert slow.alpha / fast.alpha == pytest.approx(1.25, rel=0.1)
    assert slow.beta / fast.beta == pytest.approx(2.0, rel=0.2)
    # Each level on its own gives the same levels of the two rates.
    own = [fit_pareto_nbd(x[codes == g], tx[codes == g], T[codes == g]) for g in (0, 1)]
    for fitted, alone in zip((slow, fast), own, strict=True):
        assert fitted.r / fitted.alpha == pytest.approx(alone.r / alone.alpha, rel=0.05)


def test_without_levels_the_base_is_the_plain_fit(two_levels):
    x, tx, T, _ = two_levels
    plain = fit_pareto_nbd(x, tx, T)
    base, by_level = fit_pareto_nbd_by_level(x, tx, T, np.full(x.size, -1), 0, start=ParetoNBDParams(1.0, 5.0, 1.0, 5.0))
    assert by_level == []
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(base, name) == pytest.approx(getattr(plain, name), rel=1e-4)


def test_the_prior_shrinks_a_level_of_few_customers_towards_the_base(two_levels):
    x, tx, T, codes = two_levels
    # Three heavy buyers of a third level: their effects are shrunk by the prior, more than the
    # effects of the levels of 2,000 customers.
    x3, tx3, T3 = np.r_[x, 30, 40, 50], np.r_[tx, 100, 100, 100], np.r_[T, 101, 101, 101]
    c3 = np.r_[codes, 2, 2, 2]
    start = fit_pareto_nbd(x3, tx3, T3)

    def effects(prior_sd):
        base, by_level = fit_pareto_nbd_by_level(x3, tx3, T3, c3, 3, start=start, prior_sd=prior_sd)
        return np.array([[np.log(b.alpha / base.alpha), np.log(b.beta / base.beta)] for b in by_level])

    tight, loose = effects(0.5), effects(100.0)
    assert np.abs(tight[2]).sum() < 0.6 * np.abs(loose[2]).sum()
    # The big levels' contrast hardly moves.
    assert tight[1, 1] - tight[0, 1] == pytest.approx(loose[1, 1] - loose[0, 1], abs=0.1)


def _map_objective(x, tx, T, codes, n_levels, prior_sd, z):
    """The objective of the module docstring in its own variables: log r, log alpha, log s, log beta, a_g, b_g."""
    from features.btyd.pareto_nbd import pareto_nbd_log_likelihood

    r, alpha, s, beta = np.exp(z[:4])
    a, b = z[4 : 4 + n_levels], z[4 + n_levels :]
    total = (a @ a + b @ b) / (2.0 * prior_sd**2)
    for g in range(-1, n_levels):
        mine = codes == g
        shift_a, shift_b = (a[g], b[g]) if g >= 0 else (0.0, 0.0)
        params = ParetoNBDParams(r=r, alpha=alpha * np.exp(shift_a), s=s, beta=beta * np.exp(shift_b))
        total -= pareto_nbd_log_likelihood(params, x[mine], tx[mine], T[mine]).sum()
    return total / x.size


@pytest.mark.parametrize(
    ("no_level", "n_levels"), [(0, 2), (150, 2), (0, 3)],
    ids=["every customer has a level", "some have none", "a level without customers"],
)
def test_the_fit_is_the_optimum_of_the_objective_with_effects(two_levels, no_level, n_levels):
    # The fit runs on each level's own rates (better conditioned); its result must still be the
    # stationary point of the objective written with a base and effects, the prior about the base.
    x, tx, T, codes = two_levels
    codes = codes.copy()
    codes[:no_level] = -1
    base, by_level = fit_pareto_nbd_by_level(x, tx, T, codes, n_levels, start=fit_pareto_nbd(x, tx, T), prior_sd=0.5)
    z = np.r_[
        np.log([base.r, base.alpha, base.s, base.beta]),
        [np.log(b.alpha / base.alpha) for b in by_level],
        [np.log(b.beta / base.beta) for b in by_level],
    ]
    step = 1e-5
    grad = [
        (_map_objective(x, tx, T, codes, n_levels, 0.5, z + step * e) - _map_objective(x, tx, T, codes, n_levels, 0.5, z - step * e))
        / (2 * step)
        for e in np.eye(z.size)
    ]
    assert np.max(np.abs(grad)) < 1e-5
    if no_level == 0:
        # Without customers of no level the prior puts the base at the levels' mean.
        assert np.log(base.alpha) == pytest.approx(np.mean([np.log(b.alpha) for b in by_level]), abs=1e-9)


def test_a_rate_without_effects_is_the_bases_for_every_level(two_levels):
    x, tx, T, codes = two_levels
    base, by_level = fit_pareto_nbd_by_level(x, tx, T, codes, 2, start=fit_pareto_nbd(x, tx, T), effects=("dropout",))
    assert all(b.alpha == base.alpha for b in by_level)
    # The dropout rate still differs: "fast" leaves about twice as fast.
    assert by_level[0].beta / by_level[1].beta == pytest.approx(2.0, rel=0.25)


def test_gamma_gamma_level_effect_scales_the_mean_value():
    rng = np.random.default_rng(3)
    p, q, v = 2.0, 4.0, 60.0
    x = rng.integers(1, 8, 8000).astype(float)
    codes = np.repeat([0, 1], 4000)
    nu = rng.gamma(q, 1.0 / np.where(codes == 1, v * 1.5, v))  # level 1's values are 1.5 times as large
    m = rng.gamma(p * x, 1.0 / nu) / x
    base, (g0, g1) = fit_gamma_gamma_by_level(x, m, codes, 2, start=fit_gamma_gamma(x, m))
    assert g0.p == g1.p == base.p and g0.q == g1.q == base.q
    assert g1.v / g0.v == pytest.approx(1.5, rel=0.08)


def test_level_codes():
    got = level_codes(pd.array(["a", None, "b", "zz"], dtype="str"), ("a", "b"))
    np.testing.assert_array_equal(got, [0, -1, 1, -1])


def _book(n_per_channel: int = 400, seed: int = 11) -> Tables:
    """Customers of two channels whose purchases stop after a few months (leaky) or go on (loyal)."""
    rng = np.random.default_rng(seed)
    cutoff = pd.Timestamp("2024-06-30")
    rows, customers = [], []
    for channel, mean_life in (("leaky", 60.0), ("loyal", 900.0)):
        for i in range(n_per_channel):
            cid = f"{channel}-{i:04d}"
            first = cutoff - pd.Timedelta(days=int(rng.integers(200, 700)))
            life = rng.exponential(1.0 / rng.gamma(2.0, 0.5 / mean_life))  # dropout rate: gamma, mean 1 / mean_life
            gap, value = 20.0 / rng.gamma(2.0, 0.5), rng.gamma(3.0, 15.0)  # heterogeneous rate and value
            day = 0.0
            while True:
                rows.append((cid, first + pd.Timedelta(days=int(day)), float(rng.gamma(4.0, value / 4.0))))
                day += rng.exponential(gap)
                if day > life or first + pd.Timedelta(days=int(day)) > cutoff:
                    break
            customers.append((cid, first, channel))
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    tx["customer_id"] = tx["customer_id"].astype("str")
    tx["timestamp"] = tx["timestamp"].astype("datetime64[ns]")
    cust = pd.DataFrame(customers, columns=["customer_id", "acquired_at", "channel"])
    cust = cust.astype({"customer_id": "str", "channel": "str", "acquired_at": "datetime64[ns]"})
    return Tables(transactions=tx, customers=cust)


@pytest.fixture(scope="module")
def channel_book():
    return _book()


@pytest.fixture(scope="module")
def by_channel(channel_book):
    """The process fitted by channel on :func:`_book` (one fit shared by the tests that read it)."""
    return fit_lifetime(prepare_history(channel_book, "2024-06-30"), seasonal=False, level_column="channel")


def test_fit_lifetime_by_channel_and_each_customer_takes_its_channel(channel_book, by_channel):
    h = prepare_history(channel_book, "2024-06-30")
    params = by_channel
    effects = params.by_level
    assert isinstance(effects, LevelEffects) and effects.levels == ("leaky", "loyal")
    assert effects.customers_by_level == (400, 400)
    multipliers = effects.rate_multipliers()
    assert multipliers["leaky"]["dropout_rate"] > 2 * multipliers["loyal"]["dropout_rate"]
    state = DropoutState.from_history(h, params)
    channel = np.asarray(level_values(h, "channel"), dtype=object)
    leaky, loyal = channel == "leaky", channel == "loyal"
    pn_leaky, pn_loyal = effects.pareto_by_level
    s = btyd_summary(h, 7.0)
    # Each customer's dropout posterior Gamma(s, beta_g + T) and P(alive) are its channel's.
    np.testing.assert_allclose(state.dropout_rate[leaky], pn_leaky.beta + s.T[leaky])
    np.testing.assert_allclose(state.dropout_rate[loyal], pn_loyal.beta + s.T[loyal])
    np.testing.assert_allclose(state.p_alive[leaky], pareto_nbd_probability_alive(pn_leaky, s.frequency[leaky], s.recency[leaky], s.T[leaky]))
    np.testing.assert_allclose(state.p_alive[loyal], pareto_nbd_probability_alive(pn_loyal, s.frequency[loyal], s.recency[loyal], s.T[loyal]))
    # New customers of the leaky channel have a shorter expected lifetime than the loyal channel's;
    # an unknown channel takes the base, between the two.
    day = day_number(pd.Timestamp("2024-06-30").date())
    new = DropoutState.new_customers(params, [day] * 3, ["leaky", "loyal", "elsewhere"])
    life = new.expected_lifetime_days(3650)
    assert life[0] < life[2] < life[1]
    np.testing.assert_allclose(new.dropout_rate, [pn_leaky.beta, pn_loyal.beta, effects.pareto.beta])


def test_one_process_when_the_column_is_missing_or_has_one_level(channel_book):
    h = prepare_history(channel_book, "2024-06-30")
    assert fit_lifetime(h, seasonal=False, level_column="region").by_level is None
    one = channel_book.customers.assign(channel="same")
    h_one = prepare_history(Tables(transactions=channel_book.transactions, customers=one), "2024-06-30")
    plain = fit_lifetime(h_one, seasonal=False)
    got = fit_lifetime(h_one, seasonal=False, level_column="channel")
    assert got.by_level is None and got == plain
    # Without levels the state is the one of the plain process, whatever the customers' channels.
    a = DropoutState.from_history(h, plain)
    b = DropoutState.from_history(h, LifetimeParams(pareto=plain.pareto, gamma_gamma=plain.gamma_gamma))
    np.testing.assert_array_equal(a.p_alive, b.p_alive)
    np.testing.assert_array_equal(a.dropout_rate, b.dropout_rate)


def test_level_effects_round_trip_through_json(by_channel):
    params = by_channel
    again = LifetimeParams.model_validate_json(params.model_dump_json())
    assert again == params
    assert isinstance(again.by_level.pareto_by_level[0], ParetoNBDParams)
    assert isinstance(again.by_level.gamma_gamma, GammaGammaParams)


def test_the_level_table_lists_each_level_and_the_base(by_channel):
    effects = by_channel.by_level
    table = effects.table()
    assert list(table.index) == ["leaky", "loyal", "(base)"]
    assert table.loc["leaky", "dropout_rate"] == pytest.approx(effects.pareto.beta / effects.pareto_by_level[0].beta)
    assert table.loc["loyal", "customers"] == 400


def test_a_large_book_is_fitted_by_level_on_a_sample(channel_book, by_channel, caplog):
    h = prepare_history(channel_book, "2024-06-30")
    with caplog.at_level("INFO", logger="features.btyd.lifetime"):
        sampled = fit_lifetime(h, seasonal=False, level_column="channel", level_fit_customers=500)
    assert "a sample of 500 of 800 customers" in caplog.text
    whole = by_channel
    # The counts are the book's; the estimates move a little with the sample but keep the contrast.
    assert sampled.by_level.customers_by_level == (400, 400)
    assert sampled.by_level != whole.by_level
    leaky = sampled.by_level.rate_multipliers()["leaky"]["dropout_rate"] / sampled.by_level.rate_multipliers()["loyal"]["dropout_rate"]
    assert leaky > 2


def test_with_a_flat_clock_the_seasonal_fit_by_level_is_pareto_nbd_s(two_levels):
    # The seasonal likelihood with a flat clock is Pareto/NBD's (to its quadrature's 1e-4 per
    # customer), so the two fits by level must agree.
    from features.btyd.covariates import fit_seasonal_pareto_nbd_by_level
    from features.btyd.seasonal import SeasonalClock
    from features.btyd.seasonal_pareto import SeasonalHistory

    x, tx, T, codes = two_levels
    # Whole days (the seasonal history's unit) from the weeks of the fixture.
    cutoff = 5000
    first = cutoff - np.round(T * 7).astype(np.int64)
    last = first + np.round(tx * 7).astype(np.int64)
    h = SeasonalHistory(frequency=x, first_day=first, last_day=last, cutoff_day=np.full(x.size, cutoff))
    days_x, days_tx, days_T = x, (last - first) / 7.0, (cutoff - first) / 7.0
    start = fit_pareto_nbd(days_x, days_tx, days_T)
    calendar, cal_levels = fit_pareto_nbd_by_level(days_x, days_tx, days_T, codes, 2, start=start)
    seasonal, sea_levels = fit_seasonal_pareto_nbd_by_level(h, SeasonalClock(), codes, 2, start=start)
    for a_, b_ in zip((calendar, *cal_levels), (seasonal, *sea_levels), strict=True):
        for name in ("r", "alpha", "s", "beta"):
            assert getattr(b_, name) == pytest.approx(getattr(a_, name), rel=2e-3)


def test_with_the_season_on_samples_each_customer_keeps_its_level(channel_book, monkeypatch):
    # Both samples drawn (the seasonal fit's and the fit by level's within it): the fit by level
    # must get the customers' own seasonal rows and codes, and Gamma-Gamma a sample of the book.
    import features.btyd.lifetime as lifetime

    h = prepare_history(channel_book, "2024-06-30")
    monkeypatch.setattr(lifetime, "SEASONAL_FIT_CUSTOMERS", 500)
    seen = {}
    real_pn, real_gg = lifetime.fit_seasonal_pareto_nbd_by_level, lifetime.fit_gamma_gamma_by_level

    def pn(rows, clock, codes, *a, **k):
        seen["rows"], seen["codes"] = rows, codes
        return real_pn(rows, clock, codes, *a, **k)

    def gg(x, m, codes, *a, **k):
        seen["gg"] = x.size
        return real_gg(x, m, codes, *a, **k)

    monkeypatch.setattr(lifetime, "fit_seasonal_pareto_nbd_by_level", pn)
    monkeypatch.setattr(lifetime, "fit_gamma_gamma_by_level", gg)
    got = fit_lifetime(h, level_column="channel", level_fit_customers=300)
    assert got.by_level is not None and seen["rows"].frequency.size == 300 and seen["gg"] == 300
    whole, codes = seasonal_history(h), level_codes(level_values(h, "channel"), got.by_level.levels)
    # Each row the fit got is a customer's: found by its days (a few customers share them), its
    # code must be that customer's.
    key: dict[tuple[int, int, int], set[int]] = {}
    for f, d, l, c in zip(whole.frequency, whole.first_day, whole.last_day, codes, strict=True):
        key.setdefault((int(f), int(d), int(l)), set()).add(int(c))
    rows = seen["rows"]
    found = [key[int(f), int(d), int(l)] for f, d, l in zip(rows.frequency, rows.first_day, rows.last_day, strict=True)]
    assert all(int(c) in options for c, options in zip(seen["codes"], found, strict=True))
    assert sum(len(options) == 1 for options in found) > 250  # most rows tell their customer apart


def test_mean_order_value_is_the_level_s_gamma_gamma_mean(by_channel):
    params = by_channel
    effects = params.by_level
    got = params.mean_order_value(["loyal", "nowhere", None])
    gg, base = effects.gamma_gamma_by_level[1], effects.gamma_gamma
    np.testing.assert_allclose(got, [gg.p * gg.v / (gg.q - 1), base.p * base.v / (base.q - 1), base.p * base.v / (base.q - 1)])
    one = LifetimeParams(pareto=params.pareto, gamma_gamma=params.gamma_gamma)
    pop = params.gamma_gamma
    np.testing.assert_allclose(one.mean_order_value(["loyal"]), [pop.p * pop.v / (pop.q - 1)])


def test_the_lifetime_setting_reaches_the_fit(channel_book, caplog):
    from training.config import load_config
    from training.lifetime import fit_lifetime_model

    def fitted(**overrides):
        cfg = load_config(lifetime__seasonal=False, **overrides)
        return fit_lifetime_model(
            channel_book, cutoff="2024-06-30", model_horizon_days=182, origins=[], origin_rows=[],
            settings=cfg.lifetime, clv=cfg.clv, time_unit_days=7.0,
        )  # fmt: skip

    with caplog.at_level("INFO"):
        one = fitted()  # the default: one process, and the new customers' process by channel
    assert one.params.by_level is None and one.level_persistence == 0.0
    assert one.new_customer_params.by_level.levels == ("leaky", "loyal")
    # One fit serves both: the process by channel without its levels is the one process.
    h = prepare_history(channel_book, "2024-06-30")
    assert one.params == fit_lifetime(h, time_unit_days=7.0, seasonal=False, value_mean="empirical")
    assert "new customers: valued by the dropout process by customers.channel alone" in caplog.text
    assert fitted(lifetime__new_customers="champion").new_customer_params is None
    # By channel, level_persistence takes its own default, and new customers share the fit.
    by_channel = fitted(lifetime__dropout_covariate="channel", lifetime__level_fit_customers=200)
    assert by_channel.params.by_level.levels == ("leaky", "loyal") and by_channel.level_persistence == 0.5
    assert by_channel.new_customer_params is by_channel.params
    # The training run logs the new customers' process when it is a fit of its own.
    from training.pipeline import _process_tables

    assert list(_process_tables(one)) == ["new_customer_process_by_level"]
    assert list(_process_tables(by_channel)) == ["dropout_by_level"]
    assert set(_process_tables(one)["new_customer_process_by_level"].index) == {"(base)", "leaky", "loyal"}
    # A column the customers do not have: one process, with one process's default, and a warning.
    with caplog.at_level("INFO"):
        no_channel = fitted(lifetime__dropout_covariate="region", lifetime__level_fit_customers=200)
    assert no_channel.params.by_level is None and no_channel.level_persistence == 0.0
    assert "customers.region: no such column" in caplog.text
    assert "dropout process of the scored customers: one for every customer; level_persistence 0.00" in caplog.text
    assert fitted(lifetime__dropout_covariate="channel", lifetime__level_persistence=0.3).level_persistence == 0.3


def test_the_fit_with_the_season_fits_the_levels_with_the_season(channel_book, by_channel):
    from features.btyd.covariates import fit_seasonal_pareto_nbd_by_level, level_codes

    h = prepare_history(channel_book, "2024-06-30")
    got = fit_lifetime(h, level_column="channel")  # 12 complete months: the fit with the season
    assert got.fit_clock == "seasonal" and got.by_level is not None
    effects, calendar = got.by_level, by_channel.by_level
    # The levels are fitted by the seasonal likelihood on the book's clock, from the book's seasonal
    # fit (the stored indices are estimated once more after the fit: close, not equal, to its clock).
    codes = level_codes(level_values(h, "channel"), effects.levels)
    base, by_level = fit_seasonal_pareto_nbd_by_level(seasonal_history(h), got.clock, codes, 2, start=got.pareto)
    for fitted, again in zip((effects.pareto, *effects.pareto_by_level), (base, *by_level), strict=True):
        for name in ("r", "alpha", "s", "beta"):
            assert getattr(fitted, name) == pytest.approx(getattr(again, name), rel=1e-3)
    assert effects.gamma_gamma_by_level == calendar.gamma_gamma_by_level  # values do not depend on the clock
    # This book has little season: the levels' multipliers are close to the calendar fit by level's.
    for level in effects.levels:
        for name in ("purchase_rate", "dropout_rate"):
            assert effects.rate_multipliers()[level][name] == pytest.approx(calendar.rate_multipliers()[level][name], rel=0.1)
    # Each customer's P(alive) is the seasonal model's with its level's parameters.
    state = DropoutState.from_history(h, got)
    channel = np.asarray(level_values(h, "channel"), dtype=object)
    rows = seasonal_history(h)
    for level, pn in zip(effects.levels, effects.pareto_by_level, strict=True):
        at = channel == level
        np.testing.assert_allclose(state.p_alive[at], seasonal_pareto_nbd_probability_alive(pn, rows.select(at), got.clock))
        np.testing.assert_allclose(state.dropout_rate[at], pn.beta + btyd_summary(h, 7.0).T[at])
    # The leaky channel still leaves faster.
    assert state.p_alive[channel == "leaky"].mean() < state.p_alive[channel == "loyal"].mean()
    # Customers of an unseen channel or of none take the base's parameters.
    customers = channel_book.customers.copy()
    customers["channel"] = customers["channel"].astype(object)
    customers.loc[:9, "channel"] = "elsewhere"
    customers.loc[10:19, "channel"] = None
    h_other = prepare_history(Tables(transactions=channel_book.transactions, customers=customers), "2024-06-30")
    other_channel = level_values(h_other, "channel")
    base = np.asarray([v not in effects.levels for v in other_channel])
    assert base.sum() == 20
    np.testing.assert_allclose(DropoutState.from_history(h_other, got).p_alive[base],
                               seasonal_pareto_nbd_probability_alive(effects.pareto, rows.select(base), got.clock))
    # A seasonal fit whose levels do not share its r and s is refused.
    first = effects.pareto_by_level[0]
    other = effects.model_copy(update={"pareto_by_level": (ParetoNBDParams(first.r, first.alpha, 2 * first.s, first.beta),
                                                           *effects.pareto_by_level[1:])})  # fmt: skip
    with pytest.raises(ValueError, match="must share one r and s"):
        LifetimeParams(pareto=got.pareto, gamma_gamma=got.gamma_gamma, seasonality=got.seasonality, by_level=other, fit_clock="seasonal")
