"""The lifetime machinery: the dropout process (seasonal Pareto/NBD), the spend curve, lifetime CLV, intervals.

Known values are worked out by hand or from closed forms; the Monte Carlo checks simulate the
model's own story with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.btyd import GammaGammaParams, ParetoNBDParams, pareto_nbd_expected_purchases
from features.btyd.lifetime import DropoutState, LifetimeParams, fit_lifetime, net_value_share, time_alive
from features.btyd.seasonal import SeasonalClock
from features.contract import Tables
from features.dates import day_number
from features.history import prepare_history
from training.config import ClvConfig, TrainingConfig
from training.curve import calibrate_level, discount_per_horizon, interval_bounds, spend_curve

CDNOW_PARETO = ParetoNBDParams(r=0.597, alpha=11.59, s=0.522, beta=8.83)
PARETO = ParetoNBDParams(r=0.9, alpha=2.2, s=1.5, beta=68.0)  # weeks, about the synthetic book's
GG = GammaGammaParams(p=1.8, q=2.8, v=63.0)
AS_OF = pd.Timestamp("2024-06-30")


def _tables(rows: list[tuple[str, str, float]]) -> Tables:
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    tx["customer_id"] = tx["customer_id"].astype("str")
    tx["timestamp"] = pd.to_datetime(tx["timestamp"]).astype("datetime64[ns]")
    return Tables(transactions=tx)


def _book_history():
    """Three customers as of AS_OF: a regular buyer, a lapsed one, a one-time buyer."""
    rows = [("A", str(AS_OF - pd.Timedelta(days=d)), 50.0) for d in range(0, 400, 20)]
    rows += [("B", str(AS_OF - pd.Timedelta(days=d)), 30.0) for d in range(300, 500, 25)]
    rows += [("C", str(AS_OF - pd.Timedelta(days=40)), 80.0)]
    return prepare_history(_tables(rows), AS_OF)


def _state(params: ParetoNBDParams = PARETO, seasonality=(1.0,) * 12) -> DropoutState:
    return DropoutState.from_history(_book_history(), LifetimeParams(pareto=params, gamma_gamma=GG, seasonality=seasonality))


# --------------------------------------------------------------------------- seasonal clock


def test_seasonal_clock_known_values():
    clock = SeasonalClock([2.0] + [1.0] * 11)  # rescaled to mean 1: January 24/13, the others 12/13
    jan1 = day_number(pd.Timestamp("2023-01-01").date())
    assert clock.elapsed(jan1, jan1 + 31) == pytest.approx(31 * 24 / 13)
    assert clock.elapsed(jan1, jan1 + 365) == pytest.approx(31 * 24 / 13 + 334 * 12 / 13)
    np.testing.assert_allclose(clock.elapsed([jan1, jan1 + 31], [jan1 + 1, jan1 + 32]), [24 / 13, 12 / 13])
    assert SeasonalClock().elapsed(jan1, jan1 + 10) == 10.0
    with pytest.raises(ValueError, match="12 positive finite"):
        SeasonalClock([1.0] * 11)


# --------------------------------------------------------------------------- dropout process


def test_time_alive_closed_form():
    # ∫_0^u (B/(B+v))^s dv; s = 2: B u / (B + u); s = 1: B log(1 + u/B).
    assert time_alive(2.0, 10.0, 5.0) == pytest.approx(10 * 5 / 15)
    assert time_alive(1.0, 10.0, 5.0) == pytest.approx(10 * math.log(1.5))
    assert time_alive(0.5, 10.0, 0.0) == 0.0


def test_expected_purchases_given_alive_are_pareto_nbds():
    # Without seasonality, p_alive times the expectation over (T + a, T + b] is the Pareto/NBD
    # module's E[X(T, T+b)] - E[X(T, T+a)] (Fader and Hardie 2005, Section 6).
    h = _book_history()
    state = _state()
    days = np.array([0, 91, 182])
    got = state.p_alive[:, None] * state.expected_purchases(days[:-1], days[1:])
    from features.btyd import btyd_summary

    s = btyd_summary(h, 7.0)
    cum = np.stack([pareto_nbd_expected_purchases(PARETO, (d + 1) / 7, s.frequency, s.recency, s.T) for d in days], axis=1)
    np.testing.assert_allclose(got, np.diff(cum, axis=1), rtol=1e-12)


def test_purchase_probability_matches_a_simulation_of_the_posterior():
    state = _state()
    start, end = np.array([0, 182]), np.array([182, 364])
    got = state.purchase_probability(start, end)
    rng = np.random.default_rng(1)
    n = 400_000
    for i in range(len(state)):
        lam = rng.gamma(state.purchase_shape[i], 1 / state.purchase_rate[i], n)
        mu = rng.gamma(state.dropout_shape, 1 / state.dropout_rate[i], n)
        death = rng.exponential(1.0, n) / mu
        for k in range(2):
            a, b = (start[k] + 1) / 7, (end[k] + 1) / 7
            exposure = np.clip(np.minimum(death, b) - a, 0.0, None)
            simulated = np.mean(rng.random(n) < -np.expm1(-lam * exposure))
            assert got[i, k] == pytest.approx(simulated, abs=4e-3), (i, k)


def test_seasonal_purchase_rate_moves_purchases_not_survival():
    flat = _state()
    peak = _state(seasonality=(1.0,) * 10 + (2.0, 2.0))
    np.testing.assert_allclose(peak.survival([0, 500]), flat.survival([0, 500]))
    # November and December hold more of the year's purchases, the year as a whole about the same.
    nov = day_number(pd.Timestamp("2024-11-01").date()) - day_number(AS_OF.date()) - 1
    jan = day_number(pd.Timestamp("2025-01-01").date()) - day_number(AS_OF.date()) - 1
    assert (peak.expected_purchases([nov], [jan]) > 1.5 * flat.expected_purchases([nov], [jan])).all()


def test_seasonality_is_estimated_with_the_dropout_process():
    from features.synthetic import generate

    book = generate(8000, seed=21, start="2020-01-01", end="2022-06-30")
    params = fit_lifetime(prepare_history(book.tables, "2022-06-30"))
    truth = np.asarray(book.truth.attrs["seasonality"])
    truth = truth / truth.mean()
    assert np.abs(np.asarray(params.seasonality) - truth).max() < 0.08
    assert np.mean(params.seasonality) == pytest.approx(1.0)
    # Twelve complete months are needed: with ten the indices stay flat.
    short = fit_lifetime(prepare_history(book.tables, "2020-11-30"))
    assert short.seasonality == (1.0,) * 12


@pytest.fixture(scope="module")
def peaked_book():
    """A book of the dropout process itself (no channel or age effects), three times the rate in November and December."""
    import dataclasses

    from features.synthetic import generate
    from features.synthetic.retail import DEFAULT_CHANNELS, SyntheticConfig

    channels = tuple(dataclasses.replace(c, rate_effect=1.0, dropout_effect=1.0, spend_effect=1.0) for c in DEFAULT_CHANNELS)
    config = SyntheticConfig(seasonality=(0.8,) * 10 + (2.4, 2.4), channels=channels, age_dropout_effect=0.0)
    return generate(8_000, seed=33, start="2020-01-01", end="2022-12-31", config=config)


def _remaining_over_truth(book, params, cutoff) -> float:
    """Mean E[time alive in the next 1,820 days | history] over the truth's, customers known at ``cutoff``."""
    h = prepare_history(book.tables, cutoff)
    state = DropoutState.from_history(h, params)
    predicted = state.p_alive * time_alive(state.dropout_shape, state.dropout_rate, 1820 / 7.0) * 7.0
    truth = book.truth.reindex(h.ids)
    left = ((truth["dropout_at"] - (pd.Timestamp(cutoff) + pd.Timedelta(days=1))) / pd.Timedelta(days=1)).clip(0, 1820)
    return float(predicted.mean() / left.mean())


def test_the_fit_with_the_season_does_not_read_it_as_dropout(peaked_book):
    # Right after the peak the calendar fit reads the recent purchases as long lifetimes, and after
    # the quiet spring it reads the quiet months as customers lost. With the season in the
    # likelihood the two cutoffs agree, near the truth. Measured on this book: calendar 1.402 and
    # 0.849 of the truth, with the season 1.082 and 0.979 (BENCHMARKS.md, "The fit with the season").
    ratios = {}
    for cutoff in ("2021-12-31", "2022-06-30"):
        h = prepare_history(peaked_book.tables, cutoff)
        calendar, seasonal = fit_lifetime(h, seasonal_fit=False), fit_lifetime(h)
        assert (calendar.fit_clock, seasonal.fit_clock) == ("calendar", "seasonal")
        ratios[cutoff] = (_remaining_over_truth(peaked_book, calendar, cutoff), _remaining_over_truth(peaked_book, seasonal, cutoff))
    (cal_dec, sea_dec), (cal_jun, sea_jun) = ratios["2021-12-31"], ratios["2022-06-30"]
    assert cal_dec > 1.25 and cal_jun < 0.95, ratios
    assert abs(sea_dec - 1) < 0.15 and abs(sea_jun - 1) < 0.15, ratios
    assert abs(sea_dec - 1) < abs(cal_dec - 1) / 2, ratios
    assert abs(sea_dec - sea_jun) < abs(cal_dec - cal_jun) / 2, ratios


def test_the_fit_with_the_season_is_the_calendar_fit_without_one(peaked_book):
    # Ten complete months: no indices, so nothing to fit again.
    h = prepare_history(peaked_book.tables, "2020-11-30")
    assert fit_lifetime(h, seasonal_fit=True) == fit_lifetime(h, seasonal_fit=False)
    # With a level column too (the levels fitted with the season: test_btyd_levels).
    by_channel = fit_lifetime(prepare_history(peaked_book.tables, "2021-02-28"), level_column="channel", level_fit_customers=500)
    assert by_channel.fit_clock == "seasonal" and by_channel.by_level is not None


def test_params_saved_before_the_fit_with_the_season_load_as_calendar_fits():
    saved = {"pareto": {"r": 0.9, "alpha": 2.2, "s": 1.5, "beta": 68.0}, "gamma_gamma": {"p": 1.8, "q": 2.8, "v": 63.0},
             "seasonality": [1.0] * 10 + [2.0, 2.0], "time_unit_days": 7.0, "by_level": None}  # fmt: skip
    params = LifetimeParams.model_validate(saved)
    assert params.fit_clock == "calendar"
    assert (params.count, params.orders_per_first_day) == ("purchase_days", 1.0)
    np.testing.assert_array_equal(DropoutState.from_history(_book_history(), params).p_alive, _state(seasonality=(1.0,) * 10 + (2.0, 2.0)).p_alive)


def test_p_alive_is_the_seasonal_models_and_survival_runs_in_calendar_time():
    from features.btyd import btyd_summary
    from features.btyd.lifetime import seasonal_history
    from features.btyd.seasonal_pareto import seasonal_pareto_nbd_probability_alive

    h = _book_history()
    season = (1.0,) * 10 + (2.0, 2.0)
    params = LifetimeParams(pareto=PARETO, gamma_gamma=GG, seasonality=season, fit_clock="seasonal")
    state = DropoutState.from_history(h, params)
    np.testing.assert_allclose(state.p_alive, seasonal_pareto_nbd_probability_alive(PARETO, seasonal_history(h), SeasonalClock(season)))
    np.testing.assert_allclose(state.dropout_rate, PARETO.beta + btyd_summary(h, 7.0).T)
    assert not np.allclose(state.p_alive, _state(seasonality=season).p_alive)


def test_counting_orders_reads_every_order_of_a_day_as_a_purchase():
    # A buys twice on each of its days, B once a day: only A's state changes with what is counted.
    rows = [(c, str(AS_OF - pd.Timedelta(days=d, hours=h)), 40.0) for c, days, hours in
            (("A", range(7, 300, 30), (1, 5)), ("B", range(10, 300, 45), (1,))) for d in days for h in hours]  # fmt: skip
    h = prepare_history(_tables(rows), AS_OF)
    season = (1.0,) * 10 + (2.0, 2.0)
    for fit_clock in ("calendar", "seasonal"):
        days = DropoutState.from_history(h, LifetimeParams(pareto=PARETO, gamma_gamma=GG, seasonality=season, fit_clock=fit_clock))
        orders = DropoutState.from_history(
            h, LifetimeParams(pareto=PARETO, gamma_gamma=GG, seasonality=season, fit_clock=fit_clock, count="orders")
        )
        # r + x: A has 10 purchase days, 20 orders; B 7 days of one order.
        np.testing.assert_allclose(days.purchase_shape, PARETO.r + np.array([9.0, 6.0]))
        np.testing.assert_allclose(orders.purchase_shape, PARETO.r + np.array([19.0, 6.0]))
        assert orders.p_alive[1] == pytest.approx(days.p_alive[1], rel=1e-12)
        assert orders.p_alive[0] != pytest.approx(days.p_alive[0], rel=1e-3)
        # Gamma-Gamma's posterior reads A's orders at 40 each, not its days at 80.
        assert orders.value_rate_rate[0] == pytest.approx(GG.v + 19 * 40.0)
        assert days.value_rate_rate[0] == pytest.approx(GG.v + 9 * 80.0)
    # Fitted on orders, the process says so, and so reads the history it scores.
    fitted = fit_lifetime(h, seasonal=False, count="orders")
    assert fitted.count == "orders"
    assert LifetimeParams.model_validate(fitted.model_dump()) == fitted
    # A first purchase day: A's had two orders, B's one; a new customer's is worth 1.5 orders.
    assert fitted.orders_per_first_day == pytest.approx(1.5)
    gg = fitted.gamma_gamma
    assert fitted.mean_order_value([None])[0] == pytest.approx(1.5 * gg.p * gg.v / (gg.q - 1))
    assert fit_lifetime(h, seasonal=False).orders_per_first_day == 1.0
    with pytest.raises(ValueError, match="1 when count is purchase_days"):
        LifetimeParams(pareto=PARETO, gamma_gamma=GG, orders_per_first_day=2.0)
    # The setting reaches the fit that training runs, for both processes.
    from training.config import LifetimeConfig, load_config
    from training.lifetime import fit_lifetime_model

    assert load_config(lifetime__count="orders").lifetime.count == "orders"
    with pytest.raises(ValueError, match="count"):
        load_config(lifetime__count="transactions")
    common = dict(cutoff=AS_OF.date(), model_horizon_days=91, origins=[], origin_rows=[], clv=ClvConfig(), time_unit_days=7.0)
    settings = LifetimeConfig(seasonal=False, count="orders", new_customer_covariate=None, value_mean="gamma_gamma")
    model = fit_lifetime_model(_tables(rows), settings=settings, **common)
    assert model.params == fitted
    assert model.new_customer_params.count == "orders"
    # And value_mean, whose default scales Gamma-Gamma's mean.
    default = fit_lifetime_model(_tables(rows), settings=settings.model_copy(update={"value_mean": LifetimeConfig().value_mean}), **common)
    assert LifetimeConfig().value_mean == "empirical"
    assert default.params == fit_lifetime(h, seasonal=False, count="orders", value_mean="empirical")


@pytest.fixture(scope="module")
def doubled_december():
    """A small synthetic book to mid-2021 whose December orders are each bought twice (the same minute)."""
    from features.synthetic import generate

    tx = generate(3_000, seed=12, start="2020-01-01", end="2021-06-30").tables.transactions
    tx = tx[tx["amount"] >= 0]
    december = tx[tx["timestamp"].dt.month == 12]
    return pd.concat([tx, december], ignore_index=True)


def test_the_indices_count_each_order_when_the_process_does(doubled_december):
    from features.btyd.lifetime import _seasonality

    h = prepare_history(Tables(transactions=doubled_december), "2021-06-30")
    # Repeat orders and repeat purchase days per calendar month, counted here from the rows: every
    # order but each customer's first, in the complete months after the book's first purchase.
    tx = doubled_december.sort_values("timestamp", kind="stable")
    day = tx["timestamp"].dt.floor("D")
    in_months = (day >= "2020-02-01") & (day < "2021-07-01")
    repeat_order = tx.duplicated("customer_id")  # the first row of a customer is its first order
    first_day = day.groupby(tx["customer_id"]).transform("min")
    orders = tx[repeat_order & in_months].groupby(day.dt.month).size()
    days = tx[in_months & (day > first_day)].assign(d=day).drop_duplicates(["customer_id", "d"]).groupby(day.dt.month).size()
    by_orders = _seasonality(h, PARETO, 7.0, count="orders")
    by_days = _seasonality(h, PARETO, 7.0)
    # Same process, so the same expectation: the two indices differ by the observed counts alone.
    ratio = (by_orders / by_days) / (orders / days).reindex(range(1, 13)).to_numpy()
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, rtol=1e-9)
    assert by_orders[11] / by_days[11] > 1.5 * by_orders[5] / by_days[5]  # December's orders doubled
    with pytest.raises(ValueError, match="purchase_days or orders"):
        _seasonality(h, PARETO, 7.0, count="rows")


def test_the_fit_on_orders_reads_the_orders(doubled_december):
    from features.btyd.lifetime import _seasonality, seasonal_history
    from features.btyd.seasonal_pareto import fit_seasonal_pareto_nbd

    h = prepare_history(Tables(transactions=doubled_december), "2021-06-30")
    days, orders = fit_lifetime(h), fit_lifetime(h, count="orders")
    assert days.fit_clock == orders.fit_clock == "seasonal"
    rows = seasonal_history(h, count="orders")
    assert rows.frequency.sum() == len(doubled_december) - h.n  # every order but each customer's first
    # Both steps of the fit with the season read the orders: the flat fit on them gives the
    # indices of the orders, and the fit on that clock is the process (3,000 customers: no sample).
    flat = fit_seasonal_pareto_nbd(rows, SeasonalClock(), time_unit_days=7.0)
    expected = fit_seasonal_pareto_nbd(rows, SeasonalClock(_seasonality(h, flat, 7.0, count="orders")), time_unit_days=7.0, start=flat)
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(orders.pareto, name) == pytest.approx(getattr(expected, name), rel=1e-9)
        assert getattr(days.pareto, name) != pytest.approx(getattr(expected, name), rel=1e-2)
    assert orders.seasonality[11] > days.seasonality[11]  # December's orders doubled


def test_the_empirical_value_mean_scales_gamma_gamma_to_the_repeat_buyers_mean(peaked_book):
    from features.btyd import btyd_summary
    from features.btyd.lifetime import VALUE_SCALE_WINSOR

    h = prepare_history(peaked_book.tables, "2021-06-30")
    own = fit_lifetime(h, level_column="channel", level_fit_customers=2_000)
    scaled = fit_lifetime(h, level_column="channel", level_fit_customers=2_000, value_mean="empirical")
    s = btyd_summary(h, 7.0)
    m = s.monetary_value[(s.frequency > 0) & (s.monetary_value > 0)]
    empirical = np.minimum(m, np.quantile(m, VALUE_SCALE_WINSOR)).mean()

    def mean(gg):
        return gg.p * gg.v / (gg.q - 1.0)

    c = scaled.value_scale
    assert mean(scaled.gamma_gamma) == pytest.approx(empirical, rel=1e-12)
    assert c == pytest.approx(empirical / mean(own.gamma_gamma), rel=1e-12)
    assert own.value_scale == 1.0 and c < 0.97  # this book's customers' means are gamma: Gamma-Gamma's is high
    # Only the means move, each by c: the shapes, the process, every level and a new customer's value.
    assert (scaled.gamma_gamma.p, scaled.gamma_gamma.q, scaled.pareto) == (own.gamma_gamma.p, own.gamma_gamma.q, own.pareto)
    assert mean(scaled.by_level.gamma_gamma) == pytest.approx(c * mean(own.by_level.gamma_gamma), rel=1e-12)
    for a, b in zip(own.by_level.gamma_gamma_by_level, scaled.by_level.gamma_gamma_by_level, strict=True):
        assert mean(b) == pytest.approx(c * mean(a), rel=1e-12)
    levels = [None, *scaled.by_level.levels]
    np.testing.assert_allclose(scaled.mean_order_value(levels), c * own.mean_order_value(levels), rtol=1e-12)
    with pytest.raises(ValueError, match="gamma_gamma or empirical"):
        fit_lifetime(h, seasonal=False, value_mean="median")


def test_the_empirical_value_mean_is_guarded(peaked_book, caplog):
    from features.btyd import btyd_summary
    from features.btyd.lifetime import VALUE_SCALE_MIN_BUYERS, _empirical_value_scale

    h = prepare_history(peaked_book.tables, "2021-06-30")
    s = btyd_summary(h, 7.0)
    gg = fit_lifetime(h, seasonal=False).gamma_gamma
    base = _empirical_value_scale(s, gg)
    repeat = np.flatnonzero(s.frequency > 0)

    def with_values(rows, values):
        m = s.monetary_value.copy()
        m[rows] = values
        return dataclasses.replace(s, monetary_value=m)

    # One repeat buyer worth a thousand times the rest does not move it (winsorised), nor do
    # repeat buyers whose purchases were worth nothing (Gamma-Gamma is not fitted on them either).
    assert _empirical_value_scale(with_values(repeat[:1], 1_000 * s.monetary_value.max()), gg) == pytest.approx(base, rel=0.02)
    assert _empirical_value_scale(with_values(repeat[:200], 0.0), gg) == pytest.approx(base, rel=0.05)
    # Too few repeat buyers, a scale far from 1, or no finite mean: Gamma-Gamma's own, with a warning.
    few = dataclasses.replace(s, frequency=np.where(np.arange(s.frequency.size) < VALUE_SCALE_MIN_BUYERS - 1, s.frequency, 0.0))
    with caplog.at_level("WARNING"):
        assert _empirical_value_scale(few, gg) == 1.0
        assert _empirical_value_scale(with_values(repeat, 5 * s.monetary_value[repeat]), gg) == 1.0
        assert _empirical_value_scale(s, dataclasses.replace(gg, q=0.9)) == 1.0
    assert "fewer than" in caplog.text and "outside [0.5, 2]" in caplog.text and "no finite mean" in caplog.text


def test_a_new_customers_first_orders_average_to_its_first_days_value():
    from serving.lifetime import _first_order_nodes

    params = LifetimeParams(pareto=PARETO, gamma_gamma=GG, count="orders", orders_per_first_day=1.4)
    nodes = _first_order_nodes(params, [None])[0]
    assert nodes.mean() == pytest.approx(params.mean_order_value([None])[0], rel=1e-9)
    assert params.mean_order_value([None])[0] == pytest.approx(1.4 * GG.p * GG.v / (GG.q - 1.0))


# --------------------------------------------------------------------------- the spend curve


def _curve(state, *, horizon_days=182, K=10, p=None, s=None, model_horizon_days=182, cost=0.0, **kw):
    n = len(state)
    return spend_curve(
        state,
        churn_probability=np.linspace(0.2, 0.9, n) if p is None else p,
        spend_if_active=np.linspace(80.0, 200.0, n) if s is None else s,
        model_horizon_days=model_horizon_days, horizon_days=horizon_days, n_horizons=K,
        margin=0.3, cost_to_serve=cost, annual_discount_rate=0.1, **kw,
    )  # fmt: skip


def test_curve_sums_to_the_horizon_forecast():
    state = _state(seasonality=(0.9,) * 10 + (1.3, 1.5))
    p, s = np.array([0.3, 0.8, 0.6]), np.array([120.0, 90.0, 150.0])
    half = _curve(state, horizon_days=91, K=20, p=p, s=s, alive_persistence=1.0, level_persistence=0.0)
    whole = _curve(state, horizon_days=182, K=10, p=p, s=s, alive_persistence=1.0, level_persistence=0.0)
    # The first horizon is the boosters' forecast, (1 - p) s.
    np.testing.assert_allclose(whole.expected_spend[:, 0], (1 - p) * s, rtol=1e-12)
    np.testing.assert_allclose(whole.churn_probability, p, rtol=1e-12)
    np.testing.assert_allclose(whole.spend_if_active, s, rtol=1e-12)
    # One cumulative curve: two 91-day horizons hold what one 182-day horizon holds.
    np.testing.assert_allclose(half.expected_spend.reshape(3, 10, 2).sum(axis=2), whole.expected_spend, rtol=1e-10)
    assert (whole.expected_spend >= 0).all() and np.isfinite(whole.clv).all()


def test_lifetime_is_finite_and_monotone_in_the_cap():
    # s < 1: the mean lifetime is infinite, the capped one is not.
    state = _state(CDNOW_PARETO)
    values = [_curve(state, K=K) for K in (1, 2, 5, 10, 40)]
    clv = np.array([v.clv for v in values])
    life = np.array([v.expected_lifetime_days for v in values])
    assert np.isfinite(clv).all() and np.isfinite(life).all()
    assert (np.diff(clv, axis=0) > 0).all() and (np.diff(life, axis=0) > 0).all()
    caps = 182 * np.array([1, 2, 5, 10, 40])
    assert (life <= caps[:, None]).all()
    # Lifetime CLV is the discounted margin of the curve.
    v = values[3]
    discount = (1 + discount_per_horizon(182, 0.1)) ** -np.arange(1, 11)
    np.testing.assert_allclose(v.clv, (0.3 * v.expected_spend) @ discount, rtol=1e-12)


def test_cost_to_serve_is_paid_in_every_horizon_with_a_purchase():
    state = _state()
    free, paid = _curve(state, cost=0.0), _curve(state, cost=5.0)
    np.testing.assert_allclose(free.expected_margin - paid.expected_margin, 5.0 * paid.active_probability, rtol=1e-12)
    np.testing.assert_allclose(paid.active_probability[:, 0], 1 - paid.churn_probability)
    assert ((paid.active_probability >= 0) & (paid.active_probability <= 1)).all()


def test_persistence_moves_only_the_horizons_after_the_boosters():
    state = _state()
    kept = _curve(state, alive_persistence=1.0, level_persistence=1.0)
    process = _curve(state, alive_persistence=0.0, level_persistence=0.0)
    np.testing.assert_allclose(kept.expected_spend[:, 0], process.expected_spend[:, 0])
    # Beyond the boosters' horizon the dropout process alone: its own expected spend.
    b = np.arange(11) * 182
    own = state.p_alive[:, None] * state.order_value[:, None] * state.expected_purchases(b[:-1], b[1:])
    np.testing.assert_allclose(process.expected_spend[:, 1:], own[:, 1:], rtol=1e-10)
    np.testing.assert_allclose(process.p_alive, state.p_alive)


def test_the_tail_is_worth_gamma_gammas_value_net_of_refunds():
    # Purchases of 400 in all; two partial refunds, 40 and 10, on days without a purchase.
    rows = [("A", "2024-01-05", 100.0), ("A", "2024-02-05", 100.0), ("A", "2024-03-01", -40.0),
            ("B", "2024-01-10", 200.0), ("B", "2024-01-14", -10.0)]  # fmt: skip
    h = prepare_history(_tables(rows), AS_OF)
    assert net_value_share(h) == pytest.approx(1 - 50 / 400)
    assert net_value_share(prepare_history(_tables([r for r in rows if r[2] > 0]), AS_OF)) == 1.0
    assert net_value_share(prepare_history(_tables([*rows, ("B", "2024-01-20", -900.0)]), AS_OF)) == 0.0
    gross = _state()
    net = DropoutState.from_history(_book_history(), LifetimeParams(pareto=PARETO, gamma_gamma=GG, net_value_share=0.8))
    for w_level in (0.0, 0.5, 1.0):
        a, b = _curve(gross, level_persistence=w_level), _curve(net, level_persistence=w_level)
        # The boosters' horizon is theirs (net already); after it the level returns to η v, weighted as c.
        np.testing.assert_allclose(b.expected_spend[:, 0], a.expected_spend[:, 0], rtol=1e-12)
        np.testing.assert_allclose(b.expected_spend[:, 1:], a.expected_spend[:, 1:] * 0.8 ** (1 - w_level), rtol=1e-12)
    # The floor of spend given a purchase stays one order as bought (the lapsed buyer: ≥ 40).
    floor = _curve(net, p=np.full(3, 0.5), s=np.full(3, 1.0))
    np.testing.assert_allclose(floor.spend_if_active, net.order_value)
    # A champion saved before the share was estimated keeps the gross value.
    saved = LifetimeParams(pareto=PARETO, gamma_gamma=GG).model_dump()
    del saved["net_value_share"]
    assert LifetimeParams.model_validate(saved).net_value_share == 1.0


def test_fit_lifetime_estimates_the_net_value_share():
    rows = [(c, str(AS_OF - pd.Timedelta(days=d)), 50.0 + i) for i, c in enumerate("ABCDEFGH") for d in range(5, 300, 30 + 7 * i)]
    rows += [("A", str(AS_OF - pd.Timedelta(days=3)), -50.0)]
    h = prepare_history(_tables(rows), AS_OF)
    params = fit_lifetime(h, seasonal=False)
    bought = sum(r[2] for r in rows if r[2] > 0)
    assert params.net_value_share == pytest.approx(1 - 50.0 / bought)


def test_spend_if_active_is_at_least_one_order():
    state = _state()
    # A booster far below one order: a window with a purchase still holds one.
    got = _curve(state, p=np.full(3, 0.5), s=np.full(3, 1.0))
    np.testing.assert_allclose(got.spend_if_active, state.order_value)
    np.testing.assert_allclose(got.expected_spend[:, 0], 0.5 * state.order_value)


def test_a_customer_sure_to_churn_is_worth_nothing_and_stays_finite():
    state = _state()
    got = _curve(state, p=np.array([1.0, 1.0, 1.0]), s=np.array([100.0, 0.0, 50.0]))
    assert (got.expected_spend == 0).all() and (got.clv == 0).all() and (got.p_alive == 0).all()
    lo, hi = got.clv_interval(0.8)
    assert np.isfinite(got.spend_if_active).all() and (lo == 0).all() and (hi == 0).all()


def test_new_customers_have_the_population_priors():
    params = LifetimeParams(pareto=PARETO, gamma_gamma=GG)
    new = DropoutState.new_customers(params, [day_number(AS_OF.date())] * 2)
    assert (new.p_alive == 1.0).all()
    np.testing.assert_allclose(new.purchase_shape, PARETO.r)
    np.testing.assert_allclose(new.dropout_rate, PARETO.beta)
    np.testing.assert_allclose(new.order_value, GG.p * GG.v / (GG.q - 1))


# --------------------------------------------------------------------------- intervals


def test_interval_bounds_known_values():
    # P(0) = 0.5, positive part gamma(shape 2, scale 10): mean 20, second moment 600.
    p0, mean, m2 = np.array([0.5]), np.array([0.5 * 20.0]), np.array([0.5 * 600.0])
    lo, hi = interval_bounds((p0, mean, m2), 0.8)
    assert lo[0] == 0.0  # the 10 % quantile is in the atom
    assert hi[0] == pytest.approx(stats.gamma.ppf(0.8, 2, scale=10.0))  # (0.9 - 0.5) / 0.5
    # No atom: the central 80 % of the gamma.
    lo, hi = interval_bounds((np.array([0.0]), np.array([20.0]), np.array([600.0])), 0.8)
    np.testing.assert_allclose([lo[0], hi[0]], stats.gamma.ppf([0.1, 0.9], 2, scale=10.0))
    # Sure to be 0: [0, 0].
    assert interval_bounds((np.array([1.0]), np.array([0.0]), np.array([0.0])), 0.8) == (0.0, 0.0)


def test_calibrated_level_covers_the_target_share_and_no_more():
    rng = np.random.default_rng(3)
    n = 20_000
    p0 = rng.uniform(0.0, 0.99, n)
    k, theta = rng.uniform(1, 4, n), rng.uniform(10, 50, n)
    y = np.where(rng.random(n) < p0, 0.0, rng.gamma(k, theta))
    moments = (p0, (1 - p0) * k * theta, (1 - p0) * k * (k + 1) * theta**2)
    level = calibrate_level(moments, y, coverage=0.8)

    def covered(lv):
        lo, hi = interval_bounds(moments, lv)
        return np.mean((y >= lo) & (y <= hi))

    assert covered(level) >= 0.8 > covered(level - 0.002)
    # Customers with an atom above 0.8 are covered by [0, 0] more often than 80 %: the level of
    # the others is lower than 0.8 to make up for it.
    assert level < 0.8


def test_spend_scale_calibrates_the_total_of_the_held_out_window():
    from training.config import LifetimeConfig
    from training.lifetime import fit_lifetime_model

    rows = [("A", str(AS_OF - pd.Timedelta(days=d)), 50.0) for d in range(0, 700, 20)]
    rows += [("B", str(AS_OF - pd.Timedelta(days=d)), 30.0) for d in range(300, 700, 25)]
    rows += [(c, str(AS_OF - pd.Timedelta(days=d)), 40.0) for c, d in (("C", 600), ("C", 40), ("D", 500), ("D", 300))]
    tables = _tables(rows)
    origin = (AS_OF - pd.Timedelta(days=91)).date()
    ids = prepare_history(tables, origin).ids
    # s above every order value (50 at most): the floor of one order does not bind.
    p, s = np.full(len(ids), 0.5), np.full(len(ids), 60.0)
    actual = np.array([100.0, 0.0, 40.0, 0.0])
    common = dict(cutoff=AS_OF.date(), model_horizon_days=91, origins=[origin], origin_rows=[len(ids)], clv=ClvConfig(),
                  time_unit_days=7.0, validation=(origin, 91, ids, p, s, actual))  # fmt: skip
    flat = fit_lifetime_model(tables, settings=LifetimeConfig(seasonal=False), **common)
    scaled = fit_lifetime_model(tables, settings=LifetimeConfig(seasonal=False, calibrate_spend_level=True), **common)
    assert flat.spend_scale == 1.0
    # On the window: predicted (1 - p) s = 30 per customer, 120 in all, against 140 spent.
    assert list(ids) == ["A", "B", "C", "D"]
    assert scaled.spend_scale == pytest.approx(140.0 / 120.0)
    h = prepare_history(tables, origin)
    a = flat.curve(h, churn_probability=p, spend_if_active=s, horizon_days=91, clv=ClvConfig())
    b = scaled.curve(h, churn_probability=p, spend_if_active=s, horizon_days=91, clv=ClvConfig())
    np.testing.assert_allclose(a.expected_spend[:, 0], 30.0)
    np.testing.assert_allclose(b.expected_spend[:, 0], 35.0)
    # A refit keeps what the evaluation calibrated.
    kept = fit_lifetime_model(tables, settings=LifetimeConfig(seasonal=False), interval_level=0.7, spend_scale=1.5,
                              **{**common, "validation": None})  # fmt: skip
    assert (kept.interval_level, kept.spend_scale) == (0.7, 1.5)


# --------------------------------------------------------------------------- the boosters' horizon


def test_a_horizon_longer_than_the_history_allows_trains_on_a_shorter_window(cdnow_dir):
    from features.io import load_tables
    from training.training_set import plan_origins

    tables = load_tables(cdnow_dir).tables
    # CDNOW's 39-week protocol: no 273-day window ends before 1997-09-30 after a first purchase.
    plan = plan_origins(tables, cutoff="1997-09-30", training=TrainingConfig(horizon_days=273))
    assert plan.horizon_days == 273 and plan.model_horizon_days == 91
    assert len(plan.origins) == 13 and max(plan.origins) + pd.Timedelta(days=91) == pd.Timestamp("1997-09-30")
    # An explicit label horizon is kept, and refused when it leaves too few origins.
    from training.training_set import TrainingInputError

    with pytest.raises(TrainingInputError, match="label windows of 273 days leave 0 training origin"):
        plan_origins(tables, cutoff="1997-09-30", training=TrainingConfig(horizon_days=273, label_horizon_days=273))


def test_pareto_baseline_reproduces_the_published_cdnow_fit(cdnow_dir):
    from features.io import load_tables
    from training.baselines import pareto_forecast

    tables = load_tables(cdnow_dir).tables
    ids = pd.Index(tables.transactions["customer_id"].unique())
    got = pareto_forecast(tables.transactions, cutoff="1997-09-30", horizon_days=273, customers=ids)
    fitted = ParetoNBDParams(**got.params["pareto_nbd"])
    for name, value in (("r", 0.597), ("alpha", 11.59), ("s", 0.522), ("beta", 8.83)):
        assert getattr(fitted, name) == pytest.approx(value, rel=0.01), name
    # lifetimes 0.11.3: x = 2, t_x = 30.43, T = 38.86 weeks buys 1.493 times in 39 weeks.
    assert pareto_nbd_expected_purchases(fitted, 39.0, [2], [30.43], [38.86])[0] == pytest.approx(1.493, abs=0.01)
    assert np.isfinite(got.expected_spend).all() and len(got.expected_spend) == len(ids)


# --------------------------------------------------------------------------- through a trained champion


@pytest.fixture(scope="module")
def champion(champion_store):
    """The service tests' champion: a 91-day model trained on a small synthetic book."""
    from test_service import environ

    from training.registry import load_champion

    with environ(MLFLOW_TRACKING_URI=champion_store.tracking_uri):
        return load_champion()


@pytest.mark.slow
def test_a_lapsed_frequent_buyer_keeps_the_spend_of_an_active_one(champion):
    from serving.scoring import score_columns

    as_of = pd.Timestamp("2024-06-30")
    weekly = [("W", str(as_of - pd.Timedelta(weeks=30 + 26) + pd.Timedelta(weeks=w)), 40.0) for w in range(30)]
    daily = [("D", str(as_of - pd.Timedelta(days=380) + pd.Timedelta(days=d)), 25.0) for d in range(200)]
    out = score_columns(_tables(weekly + daily), as_of=as_of, champion=champion, top_drivers=0, attributes=False)
    got = dict(zip(out["customer_id"], out["spend_if_active"]))
    # Weekly orders of 40 for 30 weeks, then six months of silence: if such a customer buys in the
    # next horizon, it spends at least one order (it got 0.06 when the booster started from
    # E[spend] / max(1 - P(no purchase), 1e-3)); the same for a daily buyer of 25 who stopped.
    assert got["W"] >= 40.0
    assert got["D"] >= 25.0
    p = dict(zip(out["customer_id"], out["churn_probability"]))
    assert p["W"] > 0.9 and p["D"] > 0.9  # both are very likely gone


@pytest.mark.slow
def test_a_91_day_champion_scores_91_day_horizons(champion, champion_store, tmp_path):
    from features.io import load_tables
    from serving.scores import CURVE_COLUMNS, read_scores, write_scores
    from serving.scoring import score_tables
    from test_service import AS_OF as BOOK_AS_OF

    assert champion.horizon_days == 91
    clv = champion.serving.config.clv
    tables = load_tables(champion_store.book_dir).tables
    scores = score_tables(tables, as_of=BOOK_AS_OF, champion=champion, top_drivers=0)
    frame = scores.frame
    K = clv.lifetime_horizons
    curve = np.vstack(frame["expected_spend_curve"].to_numpy())
    margin = np.vstack(frame["expected_margin_curve"].to_numpy())
    assert curve.shape == (len(frame), K)
    # Lifetime CLV discounts K horizons of 91 days, and the remaining lifetime is capped at K * 91 days.
    discount = (1 + discount_per_horizon(91, clv.annual_discount_rate)) ** -np.arange(1, K + 1)
    np.testing.assert_allclose(frame["clv"], margin @ discount, rtol=1e-10)
    np.testing.assert_allclose(frame["expected_spend"], curve[:, 0], rtol=1e-12)
    assert (frame["expected_lifetime_days"] <= K * 91 + 1e-9).all()
    assert (frame["horizon_days"] == 91).all() and (frame["as_of"] == pd.Timestamp(BOOK_AS_OF).date()).all()
    assert scores.run.horizon_days == 91 and 0 < scores.run.interval_coverage < 1
    numeric = frame.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy()).all() and np.isfinite(curve).all() and np.isfinite(margin).all()
    assert frame["p_alive"].between(0, 1).all()
    assert (frame["expected_spend_lower"] <= frame["expected_spend_upper"]).all()
    assert (frame["clv_lower"] <= frame["clv_upper"]).all()
    # The curve columns survive both file formats.
    for name in ("scores.parquet", "scores.csv"):
        back = read_scores(write_scores(scores, tmp_path / name)).frame
        for column in CURVE_COLUMNS:
            np.testing.assert_allclose(np.vstack(back[column].to_numpy()), np.vstack(frame[column].to_numpy()))


@pytest.mark.slow
def test_new_customers_scored_by_the_champion(champion):
    from functools import partial

    from serving import lifetime
    from serving.scoring import score_columns

    new_customer_curves = partial(lifetime.new_customer_curves, method="champion")
    got = new_customer_curves(champion, ["paid_search", "referral", "nowhere"], acquired_at="2024-06-30")
    assert list(got.index) == ["paid_search", "referral", "nowhere"]
    numeric = got.drop(columns=["expected_spend_curve", "expected_margin_curve", "basis"])
    assert set(got["basis"]) == {"champion"}
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    np.testing.assert_allclose(got["clv_from_acquisition"], got["first_order_margin"] + got["clv"])
    # The first order is worth the mean purchase-day value of the channel's process when the
    # dropout process is fitted by channel (lifetime.dropout_covariate), else the population's.
    params = champion.lifetime.params
    by_channel = params.by_level is not None and params.by_level.column == "channel"
    expected = params.mean_order_value(list(got.index) if by_channel else [None] * len(got))
    np.testing.assert_allclose(got["first_order_value"], expected, rtol=1e-12)
    # A given first order: the same numbers as scoring that customer, one order on the acquisition
    # day and its channel.
    clv = champion.serving.config.clv
    value = 55.0
    point = new_customer_curves(champion, ["referral"], acquired_at="2024-06-30", first_order_value=value)
    tables = Tables(
        transactions=pd.DataFrame({"customer_id": pd.array(["x"], dtype="str"),
                                   "timestamp": pd.to_datetime(["2024-06-30"]).astype("datetime64[ns]"), "amount": [value]}),
        customers=pd.DataFrame({"customer_id": pd.array(["x"], dtype="str"),
                                "acquired_at": pd.to_datetime(["2024-06-30"]).astype("datetime64[ns]"),
                                "channel": pd.array(["referral"], dtype="str")}),
    )  # fmt: skip
    one = score_columns(tables, as_of="2024-06-30", champion=champion, clv=clv, top_drivers=0, attributes=False)
    for name in ("clv", "clv_lower", "clv_upper", "churn_probability", "p_alive", "expected_spend", "expected_lifetime_days"):
        assert point.loc["referral", name] == pytest.approx(one[name][0], rel=1e-12)
    assert point.loc["referral", "first_order_margin"] == pytest.approx(clv.gross_margin * value - clv.cost_to_serve)
    # By default, the mean over equally likely first orders: the quantile midpoints of Gamma-Gamma's
    # value of a purchase day (the boosters' forecast for one made-up order is not smooth in its value).
    from serving.lifetime import FIRST_ORDER_NODES, _first_order_nodes

    nodes = _first_order_nodes(params, ["referral"] if by_channel else [None])[0]
    assert nodes.size == FIRST_ORDER_NODES and (np.diff(nodes) > 0).all()
    each = pd.concat([new_customer_curves(champion, ["referral"], acquired_at="2024-06-30", first_order_value=float(v))
                      for v in nodes])  # fmt: skip
    for name in ("clv", "churn_probability", "p_alive", "expected_spend", "expected_lifetime_days"):
        assert got.loc["referral", name] == pytest.approx(each[name].mean(), rel=1e-10)
    np.testing.assert_allclose(got.loc["referral", "expected_spend_curve"], np.vstack(each["expected_spend_curve"]).mean(axis=0))
    assert 0 <= got.loc["referral", "clv_lower"] <= got.loc["referral", "clv_upper"]
    # The values average to the mean value of a purchase day, the first order's value reported.
    assert nodes.mean() == pytest.approx(got.loc["referral", "first_order_value"], rel=1e-9)
    with pytest.raises(ValueError, match="each once"):
        new_customer_curves(champion, ["a", "a"], acquired_at="2024-06-30")


@pytest.mark.slow
def test_new_customers_by_the_dropout_process_by_channel(champion):
    """The default: the new customers' process by channel alone, E_k = η v G(window k) for a customer
    alive for sure, against the dropout state computed here; a channel without a level gets the base's."""
    from features.btyd.lifetime import DropoutState
    from features.dates import day_number
    from serving.lifetime import new_customer_curves
    from training.curve import discount_per_horizon

    params = champion.lifetime.new_customer_params
    assert params is not None and params.by_level.column == "channel"
    channels = [*params.by_level.levels[:2], "nowhere"]
    got = new_customer_curves(champion, channels, acquired_at="2024-06-30")
    clv = champion.serving.config.clv
    H, K = champion.horizon_days, clv.lifetime_horizons
    state = DropoutState.new_customers(params, np.full(3, day_number(pd.Timestamp("2024-06-30").date())),
                                       np.array(channels, dtype=object))
    bounds = np.arange(K + 1) * H
    G = state.expected_purchases(bounds[:-1], bounds[1:])
    q = state.purchase_probability(bounds[:-1], bounds[1:])
    spend = state.net_value_share * state.order_value[:, None] * G
    # Spend given a purchase is at least one order (training.curve).
    spend[:, 0] = q[:, 0] * np.maximum(spend[:, 0] / q[:, 0], state.order_value)
    np.testing.assert_allclose(np.vstack(got["expected_spend_curve"]), spend, rtol=1e-9)
    discount = (1 + discount_per_horizon(H, clv.annual_discount_rate)) ** -np.arange(1, K + 1)
    np.testing.assert_allclose(got["clv"], (clv.gross_margin * spend - clv.cost_to_serve * q) @ discount, rtol=1e-9)
    np.testing.assert_allclose(got["churn_probability"], 1 - q[:, 0], rtol=1e-9)
    np.testing.assert_allclose(got["first_order_value"], params.mean_order_value(channels), rtol=1e-12)
    np.testing.assert_allclose(got["clv_from_acquisition"], got["first_order_margin"] + got["clv"])
    assert set(got["basis"]) == {"process"}
    assert got.loc["nowhere", "first_order_value"] == pytest.approx(params.mean_order_value([None])[0])
    assert got.loc[channels[0], "clv"] != pytest.approx(got.loc[channels[1], "clv"], rel=1e-3)
    assert (got["clv_lower"] <= got["clv_upper"]).all() and (got["clv_lower"] >= 0).all()
    # The interval is the process's at the nominal coverage, not the level calibrated for the boosters.
    curve = champion.lifetime.process_curve(state, horizon_days=H, clv=clv)
    lower, upper = curve.clv_interval(champion.lifetime.interval_coverage)
    np.testing.assert_allclose(got["clv_lower"], lower, rtol=1e-9)
    np.testing.assert_allclose(got["clv_upper"], upper, rtol=1e-9)
    assert champion.lifetime.interval_level != champion.lifetime.interval_coverage
    # A given first order changes its margin only.
    given = new_customer_curves(champion, channels, acquired_at="2024-06-30", first_order_value=55.0)
    np.testing.assert_allclose(given["clv"], got["clv"])
    np.testing.assert_allclose(given["first_order_margin"], clv.gross_margin * 55.0 - clv.cost_to_serve)
    # A champion without a new customers' process (trained before it, or with new_customers
    # 'champion') scores made-up customers; asking it for the process is an error.
    import dataclasses

    older = dataclasses.replace(champion, serving=champion.serving.model_copy(
        update={"lifetime": champion.lifetime.model_copy(update={"new_customer_params": None})}))
    pd.testing.assert_frame_equal(new_customer_curves(older, channels, acquired_at="2024-06-30"),
                                  new_customer_curves(champion, channels, acquired_at="2024-06-30", method="champion"))
    with pytest.raises(ValueError, match="no new customers' process"):
        new_customer_curves(older, channels, acquired_at="2024-06-30", method="process")
