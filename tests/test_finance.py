"""Finance outputs on a three-customer book whose numbers are worked out by hand.

Settings of the hand computation: horizons of exactly 3 months (H = 3 · 30.4375 days), margin 0.5,
no cost to serve, no discounting, K = 2 horizons, target LTV:CAC 3.

| customer | channel | acquired   | CAC | p   | s  | CLV = (0.5 s) (r + r²) | realised margin      |
| a1       | ads     | 2024-01-15 | 10  | 0.5 | 40 | 20 · 0.75 = 15         | 0.5 · 20 = 10        |
| a2       | ads     | 2024-03-31 | 20  | 0.5 | 40 | 15                     | 0.5 · 10 = 5         |
| b1       | mail    | 2024-02-10 | 2   | 0   | 20 | 10 · 2 = 20            | 0.5 · 40 = 20        |

Scored as of 2024-03-31. A purchase after that date and one before a2's acquisition must not count.

The scores' run states H as 91 days in a real file (whole days); here it is copied to exactly three
months past the run's validation, which is all the arithmetic needs.

The revenue forecast uses BG/NBD with r = 2, a = 2, b = 1 (passed in, not fitted), where
a + b + x − 1 = r + x makes the hypergeometric term (1 − z)^−(b+x), so that
E[X(t) | x, t_x, T] = (2 + x) · P(alive) · t / (A + t) with A = alpha + T: the curve a customer's
expected spend follows, relative to the first horizon, is F(t) = t (A + H) / (H (A + t)). The
three months of history are too few for seasonality (flat).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.btyd import BGNBDParams, BTYDParams, GammaGammaParams, summary_from_transactions
from features.contract import Tables
from serving import clv as C
from serving import finance as F
from serving import segments as SG
from serving.finance.forecast import fit_forecast_shape
from serving.finance.outputs import REPORT_NAME, csv_frame, format_channels, write_budget, write_report
from serving.finance.report import clv_concentration, fmt_money, fmt_months, fmt_ratio, render_report
from serving.scores import Scores, ScoringRun
from training import diagnostics as D
from training.config import ClvConfig

H = 3 * C.MONTH_DAYS
CLV = ClvConfig(gross_margin=0.5, cost_to_serve=0.0, annual_discount_rate=0.0, lifetime_horizons=2)
#: The decisions of the fixture: target LTV:CAC 3, referral credit 10 % of the referred CLV minus 1,
#: advice for cohorts of any size with credibility weight n / (n + 1) (one-customer cohorts: 1/2).
DECISIONS = CLV.model_copy(
    update=dict(target_ltv_cac=3.0, referral_share=0.1, referral_bonus=1.0, cohort_min_customers=1, cohort_credibility_k=1.0)
)
ALPHA_DAYS = 14.0
BGNBD = BGNBDParams(r=2.0, alpha=ALPHA_DAYS / 7, a=2.0, b=1.0)  # alpha in weeks, the fit's time unit
AS_OF = pd.Timestamp("2024-03-31").date()
# A = alpha + T in days; T = days from the first purchase day to the scoring date (a2's first purchase
# day is 2024-03-01: a purchase before acquisition still belongs to the customer's history).
A_DAYS = {"a1": ALPHA_DAYS + 76, "a2": ALPHA_DAYS + 30, "b1": ALPHA_DAYS + 50}


def _curve(t, a):
    """F(t) = E[X(t)] / E[X(H)] for this BG/NBD family, t and A in days."""
    return t * (a + H) / (H * (a + t))


def _run(champion_bgnbd: BGNBDParams = BGNBD) -> ScoringRun:
    """The scoring run of the fixture: CLV settings ``CLV``, the champion's BTYD in weeks, H = 91.3125 days."""
    run = ScoringRun(
        as_of=AS_OF, horizon_days=91, churn_model_version="1", spend_model_version="1", run_id="hand",
        feature_set_id="hand", clv=CLV,
        btyd=BTYDParams(bgnbd=champion_bgnbd, gamma_gamma=GammaGammaParams(p=2.0, q=3.0, v=10.0), time_unit_days=7.0),
    )  # fmt: skip
    # Whole days in the contract; exactly three months of 30.4375 days for the hand computation.
    return run.model_copy(update={"horizon_days": H})


def _frame() -> pd.DataFrame:
    p = np.array([0.5, 0.5, 0.0])
    s = np.array([40.0, 40.0, 20.0])
    return pd.DataFrame(
        {
            "customer_id": pd.array(["a1", "a2", "b1"], dtype="str"),
            "as_of": AS_OF,
            "horizon_days": H,
            "churn_probability": p,
            "spend_if_active": s,
            "expected_spend": (1 - p) * s,
            "clv_horizon": C.horizon_clv(p, s, margin=0.5, cost_to_serve=0.0),
            "clv": [15.0, 15.0, 20.0],
            "p_alive": [0.5, 0.5, 1.0],
            "expected_spend_lower": [0.0, 0.0, 10.0],
            "expected_spend_upper": [45.0, 45.0, 30.0],
            "clv_lower": [0.0, 0.0, 12.0],
            "clv_upper": [30.0, 30.0, 28.0],
            "expected_lifetime_days": [H * 0.75, H * 0.75, 2 * H],
            # m = 0.5, d = 0 and K = 2 (CLV): the margin curves whose sums are the clv column, as a
            # customer active with probability 1/2 per horizon and then 1/4 would have.
            "expected_spend_curve": [np.array([20.0, 10.0]), np.array([20.0, 10.0]), np.array([20.0, 20.0])],
            "expected_margin_curve": [np.array([10.0, 5.0]), np.array([10.0, 5.0]), np.array([10.0, 10.0])],
            "clv_tier": ["bottom 50%", "bottom 50%", "top 10%"],
            "rfm_segment": ["at_risk", "new", "champions"],
            "recency_days": [76, 0, 50],
            "frequency": [0, 0, 0],
            "monetary_value": [20.0, 10.0, 40.0],
            "channel": pd.array(["ads", "ads", "mail"], dtype="str"),
            "acquired_at": pd.to_datetime(["2024-01-15", "2024-03-31", "2024-02-10"]),
            "acquisition_cost": [10.0, 20.0, 2.0],
            "drivers": [{"churn": [], "spend": []}] * 3,
            "churn_model_version": "1",
            "spend_model_version": "1",
            "feature_set_id": "hand",
        }
    )


def _scores(frame: pd.DataFrame | None = None) -> Scores:
    return Scores(frame=_frame() if frame is None else frame, run=_run())


def _tables() -> Tables:
    tx = pd.DataFrame(
        {
            "customer_id": pd.array(["a1", "a2", "b1", "a1", "a2"], dtype="str"),
            "timestamp": pd.to_datetime(
                ["2024-01-15 09:00", "2024-03-31 10:00", "2024-02-10 12:00", "2024-04-05 00:00", "2024-03-01 00:00"]
            ),
            "amount": [20.0, 10.0, 40.0, 1000.0, 500.0],
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(["a1", "a2", "b1"], dtype="str"),
            "referred_by": pd.array([None, "a1", None], dtype="str"),
        }
    )
    return Tables(transactions=tx, customers=customers)


@pytest.fixture(scope="module")
def result(diagnostics):
    settings = F.BudgetSettings(new_customer_max_age_days=60, n_simulations=400, seed=1)
    return F.compute_budget(
        _tables(), _scores(), decisions=DECISIONS, settings=settings, forecast_bgnbd=BGNBD, diagnostics=diagnostics
    )


@pytest.fixture(scope="module")
def diagnostics(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The BTYD diagnostic tables of the fixture's book, written and read back as a training run's artifacts."""
    summary = summary_from_transactions(_tables().transactions, cutoff=AS_OF, time_unit_days=7.0)
    frames = dict(zip(D.TABLES, (
        D.frequency_recency_matrix(BGNBD, T=10.0, max_frequency=3, t=H / 7),
        D.frequency_recency_matrix(BGNBD, T=10.0, max_frequency=3),
        D.calibration_holdout_table(summary, pd.Series([1, 0, 2], index=summary.index), BGNBD, t=H / 7, max_frequency=2),
        D.transaction_tracking(_tables().transactions, BGNBD, cutoff=AS_OF, end="2024-06-30", time_unit_days=7.0),
    ), strict=True))  # fmt: skip
    folder = tmp_path_factory.mktemp("tables")
    read = {}
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv")  # as training.registry.log_run writes them
        read[name] = D.read_table(name, folder / f"{name}.csv")
        pd.testing.assert_frame_equal(read[name], frame, check_names=False, check_index_type=False)
    return read


def csv(x: float):
    """``x`` as the budget CSVs hold it: to two decimals (cents; months and ratios to two decimals)."""
    return pytest.approx(x, abs=0.005)


@pytest.fixture(scope="module")
def paths(result, tmp_path_factory):
    """The files of ``result``: the CSVs by name and ``report``."""
    out = tmp_path_factory.mktemp("budget")
    return {**write_budget(result, out), "report": write_report(result, out / REPORT_NAME)}


def test_channels_known_values(paths):
    # Read from the CSV, which holds cents and two decimals of ratios and months.
    ch = pd.read_csv(paths["channels"]).set_index("channel")
    ads, mail = ch.loc["ads"], ch.loc["mail"]
    assert (ads["customers"], ads["mean_cac"], ads["total_cac"]) == (2, 15.0, 30.0)
    assert ads["mean_clv"] == csv(15.0)
    assert ads["realised_margin"] == csv(7.5)  # (10 + 5) / 2
    assert ads["mean_ltv"] == csv(22.5)
    assert ads["ltv_cac"] == csv(1.5)
    assert ads["max_allowable_cac"] == csv(7.5)
    assert ads["recommendation"] == "hold"
    # Mean cumulative margin by month since acquisition (a1 is 2 months old, a2 0): month 3:
    # (15 + 10 + 10/3) / 2 = 14.17, month 4: (15 + 35/3 + 20/3) / 2 = 16.67; 15 is reached a third
    # of the way: 3.33 months.
    assert ads["payback_months"] == csv(10 / 3)
    assert mail["mean_ltv"] == csv(40.0)
    assert mail["ltv_cac"] == csv(20.0)
    assert mail["max_allowable_cac"] == csv(40 / 3)
    assert mail["payback_months"] == csv(0.1)  # 20 earned in month 1 covers 2 after 0.1
    assert mail["recommendation"] == "grow"
    assert (ch["clv_low"] <= ch["mean_clv"] + 1e-9).all() and (ch["mean_clv"] <= ch["clv_high"] + 1e-9).all()


def test_csv_files_hold_cents_and_no_inf(result, tmp_path):
    frame = pd.DataFrame({
        "channel": ["a", "b", "c"], "mean_clv": [1 / 3, 2.0049, -1e-12], "churn_probability": [0.123456, 1.0, 0.0],
        "ltv_cac": [np.inf, np.nan, 2.0], "payback_months": [0.1234, np.inf, np.nan],
    })  # fmt: skip
    out = csv_frame(frame)
    assert list(out.columns) == ["channel", "mean_clv", "churn_probability", "ltv_cac", "ltv_cac_note",
                                 "payback_months", "payback_note"]  # fmt: skip
    path = tmp_path / "x.csv"
    out.to_csv(path, index=False)
    text = path.read_text()
    assert "inf" not in text and "e-" not in text and "-0.0" not in text
    assert text.splitlines()[1:] == [
        "a,0.33,0.1235,,no acquisition cost,0.12,",
        "b,2.0,1.0,,acquisition cost unknown,,not recovered within the lifetime cap",
        "c,0.0,0.0,2.0,,,acquisition cost unknown",
    ]
    assert frame["mean_clv"][0] == 1 / 3  # the input is not changed
    # The files written by write_budget went through it: two decimals at most in every money column.
    written = write_budget(result, tmp_path / "budget")
    for name, p in written.items():
        for col, values in pd.read_csv(p).select_dtypes("number").items():
            assert np.allclose(values.dropna(), values.dropna().round(4)), (name, col)
    printed = format_channels(result).splitlines()
    assert len(printed) == 2 + len(result.channels) and printed[1].split()[:3] == ["channel", "customers", "mean"]
    assert printed[2].split()[:3] == ["ads", "2", "15.00"]


def test_clv_concentration_oracles():
    x, y = clv_concentration(np.full(4, 5.0))  # an even spread is the diagonal
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(y, x)
    _, y = clv_concentration(np.array([0.0, 10.0, 0.0, 0.0]))  # one customer holds everything
    np.testing.assert_allclose(y, [0, 1, 1, 1, 1])
    _, y = clv_concentration(np.array([1.0, 3.0]))
    np.testing.assert_allclose(y, [0, 0.75, 1.0])
    assert np.isnan(clv_concentration(np.zeros(3))[1]).all()


def test_cohorts_known_values(paths):
    co = pd.read_csv(paths["cohorts"], dtype={"cohort": str})
    assert list(zip(co["cohort"], co["channel"])) == [("2024-01", "ads"), ("2024-02", "mail"), ("2024-03", "ads")]
    jan, mar = co.iloc[0], co.iloc[2]
    assert jan["age_months"] == 2 and jan["mean_ltv"] == csv(25.0) and jan["ltv_cac"] == csv(2.5)
    assert jan["payback_months"] == csv(1.0)
    assert (jan["realised_m01"], jan["realised_m02"]) == (10.0, 10.0)
    assert np.isnan(jan["realised_m03"]) and np.isnan(jan["predicted_m01"])
    assert jan["predicted_m02"] == csv(10.0) and jan["predicted_m03"] == csv(10 + 10 / 3)
    assert jan["predicted_m36"] == csv(25.0)  # realised + the whole lifetime CLV
    # a2: 5 realised, then 10/3 a month for 3 months and 5/3 a month for 3 more: 20 at month 6.
    assert mar["ltv_cac"] == csv(1.0) and mar["payback_months"] == csv(6.0)
    # Advice from the credible LTV, half the cohort's and half its channel's (ads: (25 + 20) / 2).
    assert (jan["credibility"], mar["credibility"]) == (0.5, 0.5)
    assert jan["credible_ltv"] == csv(23.75) and jan["credible_ltv_cac"] == csv(2.375)
    assert mar["credible_ltv"] == csv(21.25) and mar["credible_ltv_cac"] == csv(1.0625)
    assert jan["recommendation"] == mar["recommendation"] == "hold" and co["recommendation_note"].isna().all()


def test_cohorts_below_the_minimum_size_get_no_advice(tmp_path):
    # The default decisions: cohorts of fewer than 30 customers get no advice, only the reason.
    res = F.compute_budget(_tables(), _scores(), settings=F.BudgetSettings(n_simulations=20), forecast_bgnbd=BGNBD)
    co = pd.read_csv(write_budget(res, tmp_path)["cohorts"])
    assert co["recommendation"].isna().all()
    assert (co["recommendation_note"] == "too few customers (n < 30)").all()
    assert res.summary["settings"]["cohort_min_customers"] == ClvConfig().cohort_min_customers == 30


def test_cohort_advice_moves_from_the_cohorts_ltv_to_the_channels_with_k():
    from serving.finance.ltv import cohort_advice

    channels = pd.DataFrame({"channel": ["ads"], "mean_ltv": [90.0]})
    cohorts = pd.DataFrame(
        {"channel": ["ads"] * 3, "customers": [400, 40, 4], "mean_ltv": [100.0, 20.0, 10.0], "mean_cac": [30.0] * 3}
    )
    own = cohort_advice(cohorts, channels, target_ratio=3.0, min_customers=1, k=0.0)
    np.testing.assert_allclose(own["credible_ltv"], cohorts["mean_ltv"])  # k = 0: the cohort's own figures
    assert own["recommendation"].tolist() == ["grow", "cut", "cut"]
    mid = cohort_advice(cohorts, channels, target_ratio=3.0, min_customers=10, k=40.0)
    np.testing.assert_allclose(mid["credibility"], [400 / 440, 0.5, 4 / 44])
    np.testing.assert_allclose(mid["credible_ltv"], [(400 * 100 + 40 * 90) / 440, 55.0, (4 * 10 + 40 * 90) / 44])
    # The 40-customer cohort moves half way to its channel (LTV:CAC 55 / 30: hold, not cut); the
    # 4-customer one is below the minimum: no advice, the reason instead.
    assert mid["recommendation"][:2].tolist() == ["grow", "hold"] and pd.isna(mid["recommendation"][2])
    assert mid["recommendation_note"][:2].isna().all() and mid["recommendation_note"][2] == "too few customers (n < 10)"


#: Ends of the forecast's calendar months (April 2024 .. March 2025) in days after the scoring date.
END_DAYS = np.array([30, 61, 91, 122, 153, 183, 214, 244, 275, 306, 334, 365])


def _bgnbd_survival(t_days, a_days, x, params=BGNBD):
    """P(alive t days on | alive now) under BG/NBD by quadrature: E[(1 + p t / A)^-(r + x)], p ~ Beta(a, b + x)."""
    from scipy import integrate, stats

    dist = stats.beta(params.a, params.b + x)
    return np.array(
        [integrate.quad(lambda q: dist.pdf(q) * (1 + q * t / a_days) ** -(params.r + x), 0, 1)[0] for t in t_days]
    )


def test_forecast_known_values(paths):
    fc = pd.read_csv(paths["forecast"])
    # Calendar months: the scoring date 2024-03-31 is a month's last day, so no partial month.
    assert fc["month"].tolist() == [f"2024-{m:02d}" for m in range(4, 13)] + ["2025-01", "2025-02", "2025-03"]
    assert fc["period_start"][0] == "2024-04-01" and fc["period_end"].iloc[-1] == "2025-03-31"
    assert not fc["partial_month"].any() and fc["days"].tolist() == list(np.diff(np.r_[0, END_DAYS]))
    # Expected spend over the first horizon e = (1 − p) s: 20 for each customer; month j gets
    # e · (F(end of j) − F(end of j − 1)), the month ends in days after the scoring date.
    e = {"a1": 20.0, "a2": 20.0, "b1": 20.0}
    edges = np.r_[0, END_DAYS]
    expected = sum(e[c] * np.diff(_curve(edges, A_DAYS[c])) for c in e)
    # By hand for b1 (A = 64 days, H = 91.3125): April (30 days) = 20 · 30 · 155.3125 / (91.3125 · 94).
    assert e["b1"] * np.diff(_curve(edges, A_DAYS["b1"]))[0] == pytest.approx(20 * 30 * 155.3125 / (91.3125 * 94))
    # The CSV holds cents (and two decimals of customers): compare at that precision.
    np.testing.assert_allclose(fc["expected_revenue"], expected, rtol=0, atol=0.005)
    np.testing.assert_allclose(fc["expected_margin"], 0.5 * expected, rtol=0, atol=0.005)
    # Customers alive at each month end: P(alive) of the scores times BG/NBD's survival given alive
    # (a2 has one repeat purchase day, x = 1; a1 and b1 none).
    x = {"a1": 0, "a2": 1, "b1": 0}
    p_alive = {"a1": 0.5, "a2": 0.5, "b1": 1.0}
    alive = sum(p_alive[c] * _bgnbd_survival(END_DAYS, A_DAYS[c], x[c]) for c in e)
    np.testing.assert_allclose(fc["expected_active_customers"], alive, rtol=0, atol=0.005)
    # Smooth, not a step function: it falls every month, and each fall is no larger than the one
    # before (to the CSV's rounding).
    step = np.diff(np.r_[sum(p_alive.values()), fc["expected_active_customers"]])
    assert (step < 0).all() and (np.diff(step) >= -0.01).all()
    np.testing.assert_allclose(fc["cumulative_revenue"], np.cumsum(expected), rtol=0, atol=0.005)
    # Without seasonality the first horizon of the forecast is the scores' expected spend: the 91
    # days of April to June are H less 0.3125 days.
    first = sum(e[c] * _curve(91.0, A_DAYS[c]) for c in e)
    assert fc["expected_revenue"][:3].sum() == pytest.approx(first, abs=0.015)
    assert first == pytest.approx(_frame()["expected_spend"].sum(), rel=0.003)
    # Later horizons fall below the first (dropout), month by month within a horizon too (per day).
    assert (np.diff(fc["expected_revenue"] / fc["days"]) < 0).all()
    assert (fc["revenue_low"] <= fc["expected_revenue"]).all() and (fc["expected_revenue"] <= fc["revenue_high"]).all()
    assert (fc["cumulative_revenue_low"] <= fc["cumulative_revenue"]).all()
    assert (fc["cumulative_revenue"] <= fc["cumulative_revenue_high"]).all()


def test_forecast_calendar_labels_a_partial_first_month():
    cal = F.forecast_calendar("2024-02-10", 2)
    assert cal["month"].tolist() == ["2024-02", "2024-03", "2024-04"]
    assert cal["partial_month"].tolist() == [True, False, False]
    assert [str(d) for d in cal["period_start"]] == ["2024-02-11", "2024-03-01", "2024-04-01"]
    assert [str(d) for d in cal["period_end"]] == ["2024-02-29", "2024-03-31", "2024-04-30"]
    assert cal["days"].tolist() == [19, 31, 30] and cal["end_day"].tolist() == [19, 50, 80]


def test_first_horizon_of_calendar_months_is_the_scores_expected_spend():
    # Scored on 2024-12-31 with H = 90 days: January to March 2025 are exactly the first horizon, so
    # without seasonality their revenue is Σ (1 − p) s whatever the BG/NBD decay; P(alive) starts at
    # the scores' and decays smoothly.
    rng = np.random.default_rng(5)
    n = 50
    p, s, alive = rng.uniform(0, 0.9, n), rng.gamma(2.0, 30.0, n), rng.uniform(0.2, 1.0, n)
    x = rng.poisson(2, n).astype(float)
    T = rng.uniform(5, 60, n)
    shape = F.ForecastShape(
        as_of=pd.Timestamp("2024-12-31"), frequency=x, recency=np.where(x > 0, 0.5 * T, 0.0), T=T,
        bgnbd=BGNBDParams(r=0.8, alpha=4.0, a=0.6, b=2.0), seasonality=np.ones(12), time_unit_days=7.0,
    )  # fmt: skip
    cal = F.forecast_calendar("2024-12-31", 12)
    revenue, _, active = F.expected_forecast(
        p, s, p_alive=alive, horizon_days=90, margin=0.5, cost_to_serve=0.0, end_days=cal["end_day"], shape=shape
    )
    assert revenue[:3].sum() == pytest.approx(((1 - p) * s).sum(), rel=1e-9)
    assert (np.diff(np.r_[alive.sum(), active]) < 0).all() and active[-1] > 0


def test_survival_given_alive_known_values():
    # r = a = b = 1 and no repeat purchase: S(t) = ₂F₁(1, 1; 2; −z) = ln(1 + z) / z, z = t / (alpha + T).
    shape = F.ForecastShape(
        as_of=pd.Timestamp("2024-12-31"), frequency=np.array([0.0, np.nan]), recency=np.array([0.0, np.nan]),
        T=np.array([3.0, np.nan]), bgnbd=BGNBDParams(r=1.0, alpha=2.0, a=1.0, b=1.0), seasonality=np.ones(12),
        time_unit_days=7.0,
    )  # fmt: skip
    days = np.array([0.0, 7.0, 70.0])
    got = F.survival_given_alive(shape, slice(None), days, churn_probability=[0.5, 0.5], horizon_days=91)
    for row, A in ((0, 5.0), (1, 2.0)):  # alpha + T in weeks; no history: T = 0
        z = days[1:] / 7 / A
        np.testing.assert_allclose(got[row], np.r_[1.0, np.log1p(z) / z], rtol=1e-12)
    # Without BG/NBD: the retention (1 − p)^(t / H) as a continuous decay.
    flat = F.survival_given_alive(None, slice(None), [0.0, 45.5, 91.0], churn_probability=[0.75], horizon_days=91)
    np.testing.assert_allclose(flat, [[1.0, 0.5, 0.25]])


def _tables_without_repeat_buyers() -> Tables:
    """The book without a2's purchase before acquisition: nobody has a repeat purchase, BG/NBD cannot be fitted."""
    tables = _tables()
    tx = tables.transactions
    return Tables(transactions=tx.loc[tx["amount"] != 500.0].reset_index(drop=True), customers=tables.customers)


def test_forecast_falls_back_to_the_champions_bgnbd_without_a_refit():
    # The champion's BG/NBD (the run's, in weeks) replaces the failed refit: the curve F of the module
    # docstring with A = alpha + T, where a2's history now starts on the scoring date (T = 0).
    with pytest.warns(UserWarning, match="cannot fit BG/NBD.*champion's BG/NBD parameters"):
        res = F.compute_budget(_tables_without_repeat_buyers(), _scores(), settings=F.BudgetSettings(n_simulations=50))
    a_days = {"a1": ALPHA_DAYS + 76, "a2": ALPHA_DAYS + 0, "b1": ALPHA_DAYS + 50}
    edges = np.r_[0, END_DAYS]
    expected = sum(20.0 * np.diff(_curve(edges, a_days[c])) for c in a_days)
    np.testing.assert_allclose(res.forecast["expected_revenue"], expected, rtol=1e-9)
    assert res.summary["forecast_decay"] == "bgnbd"


def test_forecast_without_any_bgnbd_is_the_retention_r_k():
    # No refit and no champion's parameters: later horizons use r^k, flat within each horizon.
    tables = _tables_without_repeat_buyers()
    frame = _frame()
    with pytest.warns(UserWarning, match="cannot fit BG/NBD.*r\\^k"):
        shape = fit_forecast_shape(tables, frame["customer_id"], pd.Timestamp(AS_OF), time_unit_days=7.0)
    assert shape.bgnbd is None
    # Periods of a third of a horizon (the arithmetic is the same for calendar months).
    revenue, _, active = F.expected_forecast(
        frame["churn_probability"], frame["spend_if_active"], p_alive=frame["p_alive"], horizon_days=H,
        margin=0.5, cost_to_serve=0.0, end_days=H / 3 * np.arange(1, 13), shape=shape,
    )  # fmt: skip
    # b1 stays: 20 / 3 a month; a1 and a2: 40 / 3 a month each, times 0.5^k in horizon k.
    expected = np.repeat([20.0, 20 / 3 + 20 / 3, 20 / 3 + 10 / 3, 20 / 3 + 5 / 3], 3)
    np.testing.assert_allclose(revenue, expected)
    # Alive at each period's end: b1 (P(alive) 1, p = 0) stays; a1 and a2 (P(alive) 1/2) decay as
    # 0.5^(t / H), smoothly.
    np.testing.assert_allclose(active, 1.0 + 0.5 ** (np.arange(1, 13) / 3))


def test_bgnbd_decay_at_a_equal_1_is_its_limit():
    # At the formula's 0/0 point (a = 1) the BG/NBD decay is its limit, not a fallback: the same
    # forecast as for a just below and just above 1.
    forecasts = [
        F.compute_budget(
            _tables(), _scores(), settings=F.BudgetSettings(n_simulations=50),
            forecast_bgnbd=BGNBDParams(r=1.0, alpha=1.0, a=a, b=1.0),
        ).forecast["expected_revenue"].to_numpy()
        for a in (1.0 - 1e-4, 1.0, 1.0 + 1e-4)
    ]  # fmt: skip
    assert np.isfinite(forecasts[1]).all()
    np.testing.assert_allclose(forecasts[1], (forecasts[0] + forecasts[2]) / 2, rtol=1e-3)
    r_k = np.repeat([20.0, 20 / 3 + 20 / 3, 20 / 3 + 10 / 3, 20 / 3 + 5 / 3], 3)
    assert not np.allclose(forecasts[1], r_k)  # BG/NBD decay, not the r^k fallback


def test_horizon_ratios_known_values():
    # r = 2, a = 2, b = 1: E[X(t)] ∝ t / (A + t) with A = alpha + T (see the module docstring); with
    # A = H, E[X(kH)] ∝ k / (1 + k): ratio_2 = (2/3 − 1/2) / (1/2) = 1/3, ratio_3 = (3/4 − 2/3) / (1/2) = 1/6,
    # whatever x and t_x (P(alive) and 2 + x cancel in the ratio).
    weeks = H / 7
    params = BGNBDParams(r=2.0, alpha=weeks / 2, a=2.0, b=1.0)
    got = F.horizon_ratios(params, [0, 3, 1], [0, 5, 0.5], [weeks / 2, weeks / 2, weeks / 2], horizon_days=H, n_horizons=3,
                             time_unit_days=7)
    np.testing.assert_allclose(got, [[1, 1 / 3, 1 / 6]] * 3, rtol=1e-10)
    # A longer-known customer (larger T) decays more slowly: A = 3H gives E[X(kH)] ∝ k / (3 + k),
    # ratio_2 = (2/5 − 1/4) / (1/4) = 0.6, ratio_3 = (3/6 − 2/5) / (1/4) = 0.4.
    got = F.horizon_ratios(params, [0], [0], [2.5 * weeks], horizon_days=H, n_horizons=3, time_unit_days=7)
    np.testing.assert_allclose(got, [[1, 0.6, 0.4]], rtol=1e-10)


def _daily_book(start, end, per_day):
    """One transaction per day whose amount is ``per_day(day)``."""
    days = pd.date_range(start, end, freq="D")
    return pd.DataFrame(
        {
            "customer_id": pd.array(["c"] * len(days), dtype="str"),
            "timestamp": days + pd.Timedelta(hours=12),
            "amount": [per_day(d) for d in days],
        }
    )


def test_the_budget_of_a_book_does_not_depend_on_the_order_of_its_scores(result, diagnostics):
    """The same scores in another row order give the same budget, the simulated intervals included.

    The simulation draws customer by customer; a cluster writes its scores in partition order, a
    file keeps the order it was written in: the budget takes the customers in ``customer_id`` order.
    """
    settings = F.BudgetSettings(new_customer_max_age_days=60, n_simulations=400, seed=1)
    reordered = _frame().iloc[::-1].reset_index(drop=True)
    got = F.compute_budget(
        _tables(), _scores(reordered), decisions=DECISIONS, settings=settings, forecast_bgnbd=BGNBD, diagnostics=diagnostics
    )
    for name in ("channels", "cohorts", "forecast", "segments", "new_customer_clv", "channel_curves"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(result, name), check_exact=True)
    assert result.channels["clv_low"].lt(result.channels["clv_high"]).all()  # intervals that draws decide
    assert got.summary == result.summary


def test_budget_inputs_of_parts_holding_whole_customers_combine_into_the_books():
    """What the budget reads of the tables, per part of the book (a cluster's partitions), adds up to the book's.

    a2 (referred by a1) and b1 in one part, a1 in another: the referral crosses the parts; a third
    part holds nobody the budget counts.
    """
    tables, scores = _tables(), _scores()
    columns = ["customer_id", "acquired_at"]
    whole = F.budget_inputs(tables, scores.frame[columns], scores.run)
    assert whole.realised.to_dict("list") == {"customer_id": ["a1", "a2", "b1"], "month": [0, 0, 0], "margin": [10.0, 5.0, 20.0]}
    assert whole.before_acquisition == 1  # a2's purchase of 2024-03-01
    assert whole.revenue.to_dict() == {pd.Timestamp(d): v for d, v in
                                       [("2024-01-15", 20.0), ("2024-02-10", 40.0), ("2024-03-01", 500.0), ("2024-03-31", 10.0)]}  # fmt: skip
    assert whole.referred_by.to_dict() == {"a2": "a1"}
    assert whole.customers["scored"].all() and list(whole.summary.index) == ["a1", "a2", "b1"]

    def part(ids):
        keep = lambda f: f[f["customer_id"].isin(ids).to_numpy()].reset_index(drop=True)  # noqa: E731
        return F.budget_inputs(Tables(keep(tables.transactions), customers=keep(tables.customers)), keep(scores.frame)[columns],
                               scores.run)  # fmt: skip

    # A part of which no customer is in the budget: z9, acquired after the scoring date.
    late = Tables(pd.DataFrame({"customer_id": pd.array(["z9"], dtype="str"), "timestamp": pd.to_datetime(["2024-05-01"]),
                                "amount": [5.0]}))  # fmt: skip
    nobody = F.budget_inputs(late, scores.frame[columns].iloc[:0], scores.run)
    assert len(nobody.customers) == len(nobody.realised) == len(nobody.summary) == len(nobody.revenue) == 0
    got = F.BudgetInputs.combine([part(["a2", "b1"]), nobody, part(["a1"])])
    for name in ("customers", "realised", "summary"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(whole, name))
    for name in ("revenue", "referred_by"):
        pd.testing.assert_series_equal(getattr(got, name), getattr(whole, name))
    assert got.before_acquisition == whole.before_acquisition
    settings = F.BudgetSettings(n_simulations=20)
    here = F.compute_budget(tables, _scores(), settings=settings, forecast_bgnbd=BGNBD)
    there = F.compute_budget(got, _scores(), settings=settings, forecast_bgnbd=BGNBD)
    for name in ("channels", "cohorts", "forecast", "segments", "new_customer_clv"):
        pd.testing.assert_frame_equal(getattr(there, name), getattr(here, name))
    other = scores.run.model_copy(update={"as_of": pd.Timestamp("2024-03-30").date()})
    with pytest.raises(ValueError, match="parts of other scorings"):
        F.BudgetInputs.combine([whole, F.budget_inputs(tables, scores.frame[columns], other)])
    with pytest.raises(ValueError, match="budget inputs: built for"):
        F.compute_budget(F.budget_inputs(tables, scores.frame[columns], other), scores)
    with pytest.raises(ValueError, match="other customers than the scores'"):
        F.compute_budget(part(["a1"]), scores)


SEASON = np.array([0.9, 0.8, 1.0, 1.0, 1.1, 1.0, 0.9, 0.9, 1.0, 1.0, 1.2, 1.2])  # mean 1


def test_seasonality_indices_constant_level():
    # Three years at a constant level: the ratio to the centred 12-month average is the index itself.
    # A partial month at the end (January 2024 up to the 10th) and a purchase after as_of do not count.
    tx = _daily_book("2021-01-01", "2024-01-20", lambda d: 100.0 * SEASON[d.month - 1])
    tx.loc[tx["timestamp"] >= "2024-01-01", "amount"] = 1e6
    got = F.seasonality_indices(tx, "2024-01-10")
    np.testing.assert_allclose(got, SEASON, rtol=1e-9)


def test_seasonality_indices_with_growth_and_fallback():
    # 18 complete months of 3 % growth a month: the log-linear trend takes the growth, the month
    # effects the index.
    origin = pd.Timestamp("2022-07-01")

    def per_day(d):
        months = (d.year - origin.year) * 12 + d.month - origin.month
        return 50.0 * 1.03**months * SEASON[d.month - 1]

    tx = _daily_book("2022-07-01", "2023-12-31", per_day)
    got = F.seasonality_indices(tx, "2023-12-31")
    np.testing.assert_allclose(got, SEASON, rtol=1e-9)
    assert got.mean() == pytest.approx(1.0)
    # 12 complete months cannot tell the season from the trend: flat. A first month that starts
    # after its 1st day is not complete (2023-01-15 .. 2023-12-31 is 11 complete months).
    np.testing.assert_array_equal(F.seasonality_indices(tx, "2023-06-30"), np.ones(12))
    np.testing.assert_array_equal(
        F.seasonality_indices(_daily_book("2023-01-15", "2023-12-31", per_day), "2023-12-31"), np.ones(12)
    )
    # The tiny book of this module: flat.
    np.testing.assert_array_equal(F.seasonality_indices(_tables().transactions, "2024-03-31"), np.ones(12))


def test_forecast_seasonality_known_values():
    # One customer who never churns (p = 0, design retention: flat spend s / H a day) and an index
    # twice as high in January as in the other months: 24/13 in January, 12/13 otherwise (mean 1).
    # Calendar months: January (31 days), February (29 days in 2024), ...
    season = np.ones(12)
    season[0] = 2.0
    df = pd.DataFrame({"churn_probability": [0.0], "spend_if_active": [182.0], "p_alive": [1.0]})
    shape = F.ForecastShape(
        as_of=pd.Timestamp("2023-12-31"), frequency=np.array([np.nan]), recency=np.array([np.nan]),
        T=np.array([np.nan]), bgnbd=None, seasonality=season / season.mean(), time_unit_days=7.0,
    )  # fmt: skip
    revenue, _, active = F.expected_forecast(
        df["churn_probability"], df["spend_if_active"], p_alive=df["p_alive"], horizon_days=182, margin=0.5,
        cost_to_serve=0.0, end_days=F.forecast_calendar("2023-12-31", 12)["end_day"], shape=shape,
    )  # fmt: skip
    assert revenue[0] == pytest.approx(31 * 24 / 13)
    assert revenue[1] == pytest.approx(29 * 12 / 13)
    assert revenue[5] == pytest.approx(30 * 12 / 13)
    np.testing.assert_allclose(active, 1.0)


def test_segments_are_the_scores_with_referral_credit(paths):
    seg = pd.read_csv(paths["segments"], dtype={"customer_id": str})
    scores = _frame()
    for col in F.SEGMENT_COLUMNS:
        assert seg[col].tolist() == scores[col].tolist(), col
    # a1 referred a2: 0.1 * 15 - 1.
    assert seg["referral_credit"].tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_csvs_agree_with_the_scores(paths):
    scores = _frame()
    ch = pd.read_csv(paths["channels"])
    co = pd.read_csv(paths["cohorts"])
    for table in (ch, co):
        assert table["customers"].sum() == len(scores)
        assert (table["mean_clv"] * table["customers"]).sum() == pytest.approx(scores["clv"].sum())
        assert table["total_cac"].sum() == pytest.approx(scores["acquisition_cost"].sum())


def test_new_customer_clv_and_acquisition_budget(result):
    new = result.new_customer_clv
    # Customers at most 60 days old: a2 (ads) 15 + 5 realised, b1 (mail) 20 + 20.
    assert new.loc["ads", "new_customer_clv"] == pytest.approx(20.0)
    assert new.loc["mail", "new_customer_clv"] == pytest.approx(40.0)
    assert new["customers"].tolist() == [1, 1]
    got = F.acquisition_budget(
        [{"channel": "ads", "cac": 5.0}, {"channel": "mail", "cac": 20.0}, {"channel": "radio", "cac": 10.0}],
        new,
        target_ratio=3.0,
    )
    assert [g["ltv_cac"] for g in got[:2]] == pytest.approx([4.0, 2.0])
    assert [g["max_allowable_cac"] for g in got[:2]] == pytest.approx([20 / 3, 40 / 3])
    assert [g["recommendation"] for g in got] == ["grow", "hold", "unknown"]
    assert [g["basis"] for g in got] == ["channel", "channel", "unknown"]
    # An unknown channel borrows nothing: no value, ratio, allowance or decision.
    assert (got[2]["new_customer_clv"], got[2]["ltv_cac"], got[2]["max_allowable_cac"]) == (None, None, None)
    assert "radio" in got[2]["note"] and "ads, mail" in got[2]["note"] and got[0]["note"] == ""
    # A plain mapping works too; a zero CAC has no ratio, and grows only a channel worth something.
    got = F.acquisition_budget([{"channel": "x", "cac": 0.0}, {"channel": "y", "cac": 0.0}], {"x": 30.0, "y": -1.0},
                               target_ratio=3.0)
    assert [g["ltv_cac"] for g in got] == [None, None]
    assert [g["recommendation"] for g in got] == ["grow", "cut"]
    assert got[0]["max_allowable_cac"] == pytest.approx(10.0) and got[1]["max_allowable_cac"] == 0.0
    assert "CAC 0" in got[0]["note"]
    with pytest.raises(ValueError, match="rule 'cac is a finite number >= 0'"):
        F.acquisition_budget([{"channel": "x", "cac": -1.0}], {"x": 30.0}, target_ratio=3.0)


def test_new_customer_clv_from_the_champions_curves_and_channels_agree_with_the_endpoint(paths, result):
    """With the champion's new-customer curves, new_customer_clv.csv is their value from acquisition, and
    channels.csv's acquisition decision is the endpoint's answer at the channel's mean CAC."""
    curves = pd.DataFrame(
        {"clv_from_acquisition": [20.0, 90.0], "first_order_margin": [3.0, 6.0], "clv_lower": [1.0, 10.0],
         "clv_upper": [40.0, 200.0]},
        index=pd.Index(["mail", "ads"], name="channel"),
    )  # fmt: skip
    scores = pd.DataFrame({"customer_id": ["a", "b"], "as_of": ["2024-03-31"] * 2, "acquired_at": ["2024-03-01", "2023-01-01"],
                           "channel": ["ads", "ads"], "clv": [1.0, 2.0]})  # fmt: skip
    table = F.new_customer_clv(scores, max_age_days=60, curves=curves)
    assert table.index.tolist() == ["ads", "mail"] and table["customers"].tolist() == [1, 0]
    assert table["new_customer_clv"].tolist() == [90.0, 20.0]
    assert table["new_customer_clv_lower"].tolist() == [16.0, 4.0]
    assert table["new_customer_clv_upper"].tolist() == [206.0, 43.0]
    assert set(table["basis"]) == {"champion"}

    channels = result.channels
    for row in channels.itertuples():
        if not np.isfinite(row.mean_cac):
            assert row.acquisition_recommendation == "unknown"
            continue
        (answer,) = F.acquisition_budget([{"channel": row.channel, "cac": row.mean_cac}], result.new_customer_clv,
                                         target_ratio=result.summary["settings"]["target_ratio"])
        assert row.acquisition_recommendation == answer["recommendation"]
        for got, expected in ((row.new_customer_ltv_cac, answer["ltv_cac"]),
                              (row.new_customer_max_allowable_cac, answer["max_allowable_cac"])):
            assert (np.nan if expected is None else expected) == pytest.approx(got, nan_ok=True)
    written = pd.read_csv(paths["channels"])
    assert {"new_customer_clv", "new_customer_ltv_cac", "acquisition_recommendation"} <= set(written.columns)


class _Tables(HTMLParser):
    """Cell texts of every ``<table id=...>`` in a page."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _report_tables_of(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _report_tables(paths) -> dict[str, list[list[str]]]:
    return _report_tables_of(paths["report"].read_text(encoding="utf-8"))


def test_report_agrees_with_the_csvs(paths):
    tables = _report_tables(paths)
    ch = pd.read_csv(paths["channels"])
    rows = tables["channels"][1:]
    assert len(rows) == len(ch)
    for row, (_, c) in zip(rows, ch.iterrows()):
        assert row[0] == c["channel"] and row[1] == f"{c['customers']:,}"
        money = ("mean_cac", "total_cac", "mean_clv", "clv_low", "clv_high", "realised_margin", "mean_ltv")
        assert row[2:9] == [fmt_money(c[k]) for k in money]
        assert row[9:] == [
            fmt_ratio(c["ltv_cac"]), fmt_money(c["max_allowable_cac"]), fmt_months(c["payback_months"]),
            c["recommendation"],
        ]  # fmt: skip
    assert rows[0][9] == "1.50" and rows[0][11] == "3.3"  # the hand-computed ads figures

    fc = pd.read_csv(paths["forecast"])
    for row, (_, f) in zip(tables["forecast"][1:], fc.iterrows(), strict=True):
        cols = ("expected_revenue", "revenue_low", "revenue_high", "expected_margin", "margin_low", "margin_high")
        assert row[0] == str(f["month"]) and row[3:9] == [fmt_money(f[k]) for k in cols]
        # One decimal of customers on the page, two in the CSV.
        assert float(row[9].replace(",", "")) == pytest.approx(f["expected_active_customers"], abs=0.051)

    seg = pd.read_csv(paths["segments"])
    # Each segment's rule, from the one place the rules are declared.
    rules = tables["segment-rules"][1:]
    assert [tuple(r) for r in rules[: len(SG.RFM_SEGMENTS)]] == list(SG.segment_definitions().items())
    assert [r[0] for r in rules[len(SG.RFM_SEGMENTS) :]] == ["prospect", "not scored"]
    # Mean P(alive) per segment, from segments.csv.
    assert {r[0]: r[6] for r in tables["segments"][1:]} == {
        name: f"{g['p_alive'].mean():.2f}" for name, g in seg.groupby("rfm_segment")
    }
    sizes = {r[0]: int(r[1]) for r in tables["segments"][1:]}
    assert sizes == seg["rfm_segment"].value_counts().to_dict()
    tiers = {r[0]: (int(r[1]), r[2]) for r in tables["tiers"][1:]}
    assert tiers == {t: (len(g), fmt_money(g["clv"].sum())) for t, g in seg.groupby("clv_tier")}

    summary = dict(tables["summary"][1:])
    assert summary["Predicted remaining CLV, total"] == fmt_money(_frame()["clv"].sum()) == "50.00"
    assert summary["Realised margin to date, total"] == "35.00"
    assert summary["Expected revenue, 2024-04-01 to 2025-03-31"] == fmt_money(fc["cumulative_revenue"].iloc[-1])
    assert summary["Revenue 80% interval, high"] == fmt_money(fc["cumulative_revenue_high"].iloc[-1])
    assert summary["Referral credit, total"] == "0.50"
    assert len(tables["cohorts"]) == 1 + 3


def test_report_is_self_contained(paths):
    page = paths["report"].read_text(encoding="utf-8")
    # LTV:CAC, payback, forecast, CLV spread, segments, P(alive), cohort map, and the three BTYD
    # diagnostics of the training run (frequency x recency, calibration vs holdout, tracking).
    assert page.count('src="data:image/png;base64,') == 10
    assert 'id="p-alive"' in page and 'id="btyd-diagnostics"' in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page


def test_report_shows_names_as_text_not_markup():
    # The template autoescapes: a channel named like markup is shown as its text.
    name = "<b>ads</b> & co"
    frame = _frame().assign(channel=pd.array([name, name, "mail"], dtype="str"))
    result = F.compute_budget(_tables(), _scores(frame), settings=F.BudgetSettings(n_simulations=20), forecast_bgnbd=BGNBD)
    page = render_report(result)
    assert "&lt;b&gt;ads&lt;/b&gt; &amp; co" in page and name not in page
    assert [row[0] for row in _report_tables_of(page)["channels"][1:]] == [name, "mail"]
    # Without the training run's diagnostics the page has P(alive) but no diagnostics section.
    assert 'id="p-alive"' in page and 'id="btyd-diagnostics"' not in page
    assert page.count('src="data:image/png;base64,') == 7 and result.summary["diagnostics_run_id"] is None


@pytest.mark.parametrize("with_shape", [False, True])
def test_simulation_means_match_the_formulas_and_ignore_chunking(with_shape):
    rng = np.random.default_rng(7)
    n = 300
    df = pd.DataFrame({"churn_probability": rng.uniform(0, 1, n), "spend_if_active": rng.gamma(2.0, 50.0, n)})
    df.loc[:9, "churn_probability"] = 0.0
    shape = None
    if with_shape:
        T = rng.uniform(0, 150, n)
        x = rng.poisson(3, n).astype(float)
        tx = np.where(x > 0, rng.uniform(0, 1, n) * T, 0.0)
        x[:5] = tx[:5] = T[:5] = np.nan  # customers without a purchase in the history
        shape = F.ForecastShape(
            as_of=pd.Timestamp("2023-06-30"), frequency=x, recency=tx, T=T,
            bgnbd=BGNBDParams(r=0.8, alpha=6.0, a=0.7, b=2.5), seasonality=np.r_[np.full(10, 0.9), 1.3, 1.7] / 1.05,
            time_unit_days=7.0,
        )  # fmt: skip
    codes = (np.arange(n) % 3).astype(np.int64)
    clv_config = ClvConfig(gross_margin=0.3, cost_to_serve=2.0, annual_discount_rate=0.1, lifetime_horizons=10)
    p, s = df["churn_probability"], df["spend_if_active"]
    end_days = F.forecast_calendar("2023-06-30", 12)["end_day"].to_numpy()
    kw = dict(
        horizon_days=182, clv=clv_config, end_days=end_days, n_simulations=3000, spend_cv=0.5, common_cv=0.0,
        seed=3, shape=shape,
    )  # fmt: skip
    # The scores' CLV (from their spend curve): any value per customer; the draws' mean is it.
    clv = rng.gamma(2.0, 40.0, n)
    clv[:3] = 0.0
    sims = F.simulate(p, s, [(codes, 3)], chunk_size=1000, clv_mean=clv, **kw)
    expected = np.bincount(codes, weights=clv)
    np.testing.assert_allclose(sims["clv_sums"][0].mean(axis=1), expected, rtol=0.02)
    revenue, margin, _ = F.expected_forecast(
        p, s, p_alive=np.ones(n), horizon_days=182, margin=0.3, cost_to_serve=2.0, end_days=end_days, shape=shape,
        chunk_size=7,
    )  # fmt: skip
    np.testing.assert_allclose(sims["revenue"].mean(axis=1), revenue, rtol=0.02)
    np.testing.assert_allclose(sims["margin"].mean(axis=1), margin, rtol=0.02)
    again = F.simulate(p, s, [(codes, 3)], chunk_size=7, clv_mean=clv, **{**kw, "n_simulations": 50})
    once = F.simulate(p, s, [(codes, 3)], chunk_size=1000, clv_mean=clv, **{**kw, "n_simulations": 50})
    np.testing.assert_allclose(again["revenue"], once["revenue"], rtol=1e-12)
    np.testing.assert_allclose(again["clv_sums"][0], once["clv_sums"][0], rtol=1e-12)


def test_scores_are_validated():
    with pytest.raises(ValueError, match="missing column.*'clv'"):
        F.compute_budget(_tables(), _scores(_frame().drop(columns="clv")))
    bad = _frame().assign(churn_probability=[0.5, 1.5, 0.0])
    with pytest.raises(ValueError, match="'churn_probability': must be in \\[0, 1\\]: 1 row.*a2"):
        F.compute_budget(_tables(), _scores(bad))
    # Rows of another scoring date or horizon than their run's.
    bad = _frame().assign(as_of=[AS_OF, AS_OF, pd.Timestamp("2024-03-30").date()])
    with pytest.raises(ValueError, match="'as_of': must be 2024-03-31, the scoring run's: 1 row.*b1"):
        F.compute_budget(_tables(), _scores(bad))
    with pytest.raises(ValueError, match="'horizon_days': must be 91.3125, the scoring run's: 3 row"):
        F.compute_budget(_tables(), _scores(_frame().assign(horizon_days=182)))


def test_decisions_with_other_clv_arithmetic_than_the_scores_are_refused():
    # Decisions may change the target and the referral credit; m, c, d, K are the scores' own.
    for name, value in (("gross_margin", 0.4), ("cost_to_serve", 1.0), ("annual_discount_rate", 0.1),
                        ("lifetime_horizons", 3)):  # fmt: skip
        with pytest.raises(ValueError, match=f"computed with other CLV settings.*{name}.*re-score"):
            F.compute_budget(_tables(), _scores(), decisions=CLV.model_copy(update={name: value}))
    target = F.compute_budget(
        _tables(), _scores(), decisions=CLV.model_copy(update={"target_ltv_cac": 1.5}),
        settings=F.BudgetSettings(n_simulations=20), forecast_bgnbd=BGNBD,
    ).channels.set_index("channel")  # fmt: skip
    assert target.loc["ads", "max_allowable_cac"] == pytest.approx(22.5 / 1.5)
    assert target.loc["ads", "recommendation"] == "grow"  # LTV:CAC 1.5 reaches the target 1.5


def test_a_clv_column_other_than_its_runs_formula_warns():
    edited = _frame().assign(clv=[15.0, 15.0, 21.0])
    with pytest.warns(UserWarning, match="'clv' differs from the CLV recomputed.*1 of 3 customers"):
        F.compute_budget(_tables(), _scores(edited), settings=F.BudgetSettings(n_simulations=20), forecast_bgnbd=BGNBD)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(paths, tmp_path, chromium):
    import importlib.util

    from PIL import Image

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "render_report.py"
    spec = importlib.util.spec_from_file_location("render_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png = module.render(paths["report"], tmp_path / "report.png", width=1200, height=4000)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    # Charts draw in colour: the bars of the LTV:CAC chart use the "grow" green and "hold" amber.
    for colour in ((0x2E, 0x7D, 0x32), (0xF9, 0xA8, 0x25)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=2) < 30).sum() > 500, colour
    # The same page through tests/browser.py (offline, scripts run): title and every chart's image.
    import browser

    dom = browser.rendered_dom(chromium, paths["report"].resolve().as_uri())
    assert "<title>Customer value and acquisition budget</title>" in dom and "<h2>Cohorts</h2>" in dom
    assert dom.count('src="data:image/png;base64,') == 10
    # The P(alive) section: one chart, its histogram bars in the section's purple.
    (p_alive,) = browser.section_images(dom, "p-alive")
    assert (np.abs(p_alive.astype(int) - (0x6A, 0x3D, 0x9A)).sum(axis=2) < 30).sum() > 500
    # The BTYD diagnostics: frequency x recency heatmaps (viridis and magma), calibration, tracking.
    heatmaps, calibration, tracking = browser.section_images(dom, "btyd-diagnostics")
    assert all(min(img.shape[:2]) > 200 for img in (heatmaps, calibration, tracking))
    assert (np.abs(heatmaps.astype(int) - (0x21, 0x91, 0x8C)).sum(axis=2) < 60).sum() > 100  # viridis' middle
    for img in (calibration, tracking):  # matplotlib's first two line colours: actual and BG/NBD
        for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
            assert (np.abs(img.astype(int) - colour).sum(axis=2) < 30).sum() > 50, colour
    shot = browser.screenshot(chromium, paths["report"].resolve().as_uri(), tmp_path / "finance-report.png",
                              width=1200, height=9000)  # fmt: skip
    # In the page as drawn: the P(alive) purple and the heatmaps' viridis.
    assert browser.pixels_near(shot, (0x6A, 0x3D, 0x9A)) > 500
    assert browser.pixels_near(shot, (0x21, 0x91, 0x8C), tolerance=60) > 100
    # The cohort map, the page's last chart (in its lower half, where no other chart is): wide cells
    # in the recommendations' colours.
    with Image.open(shot) as image:
        lower = image.crop((0, image.height // 2, image.width, image.height))
        lower.save(tmp_path / "lower.png")
    counts = {c: browser.pixels_near(tmp_path / "lower.png", c) for c in ((0x2E, 0x7D, 0x32), (0xF9, 0xA8, 0x25))}
    assert min(counts.values()) > 5_000, counts
