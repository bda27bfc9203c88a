"""Known-value tests of the CLV and CAC arithmetic; every expected number is worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving import clv as C
from training.config import ClvConfig

_D = ClvConfig()
#: The documented defaults of the CLV configuration, for the calls below that leave some out.
DEFAULTS = dict(margin=_D.gross_margin, cost_to_serve=_D.cost_to_serve, annual_discount_rate=_D.annual_discount_rate,
                lifetime_horizons=_D.lifetime_horizons)


def _with_defaults(function, *names):
    def call(*args, **kwargs):
        return function(*args, **{**{n: DEFAULTS[n] for n in names}, **kwargs})

    return call


horizon_clv = _with_defaults(C.horizon_clv, "margin", "cost_to_serve")
from segment_rules import check_segment_rules
from serving import segments as SG

THREE_MONTHS = 3 * C.MONTH_DAYS  # a horizon of exactly 3 months of 30.4375 days


def test_discount_per_horizon():
    assert C.discount_per_horizon(365, 0.10) == pytest.approx(0.10)
    assert C.discount_per_horizon(182.5, 0.21) == pytest.approx(0.10)  # sqrt(1.21) - 1
    assert C.discount_per_horizon(90, 0.0) == 0.0
    with pytest.raises(ValueError, match="annual_discount_rate"):
        C.discount_per_horizon(90, -1.0)


def test_expected_spend_and_horizon_clv():
    assert C.expected_spend(0.25, 80) == pytest.approx(60.0)
    # (1 - 0.2) * (0.3 * 100 - 5) = 0.8 * 25
    assert horizon_clv(0.2, 100, margin=0.3, cost_to_serve=5) == pytest.approx(20.0)
    np.testing.assert_allclose(horizon_clv([0.0, 1.0], [10, 10], margin=0.5), [5.0, 0.0])


def test_lifetime_clv_is_the_discounted_margin_curve():
    # Margins 30 and 20, no discount: 50; a year per horizon at 25 %: 30 / 1.25 + 20 / 1.25^2 = 24 + 12.8.
    assert C.lifetime_clv([30.0, 20.0], horizon_days=365, annual_discount_rate=0.0) == pytest.approx(50.0)
    assert C.lifetime_clv([30.0, 20.0], horizon_days=365, annual_discount_rate=0.25) == pytest.approx(36.8)
    # Half-year horizons at 21 % a year: δ = 0.1 per horizon.
    got = C.lifetime_clv([[11.0, 12.1, 0.0], [0.0, 0.0, 0.0]], horizon_days=182.5, annual_discount_rate=0.21)
    np.testing.assert_allclose(got, [20.0, 0.0])
    # A negative margin (cost to serve above the margin) counts.
    assert C.lifetime_clv([-5.0], horizon_days=90, annual_discount_rate=0.0) == -5.0
    with pytest.raises(ValueError, match="at least one horizon"):
        C.lifetime_clv(np.zeros((2, 0)), horizon_days=90, annual_discount_rate=0.0)


def test_cumulative_margin_ends_at_lifetime_clv():
    curve = np.array([[15.0, 7.5, 3.75], [1.0, 2.0, 3.0]])
    got = C.cumulative_margin(curve, horizon_days=365, annual_discount_rate=0.0)
    np.testing.assert_allclose(got, [[15.0, 22.5, 26.25], [1.0, 3.0, 6.0]])
    got = C.cumulative_margin(curve, horizon_days=182, annual_discount_rate=0.1)
    np.testing.assert_allclose(got[:, -1], C.lifetime_clv(curve, horizon_days=182, annual_discount_rate=0.1))


def test_curve_matrix_stacks_the_scores_column():
    column = pd.Series([np.array([1.0, 2.0]), [3.0, 4.0]])
    np.testing.assert_array_equal(C.curve_matrix(column), [[1.0, 2.0], [3.0, 4.0]])
    assert C.curve_matrix([]).shape == (0, 0)


def test_clv_tiers():
    clv = np.arange(1, 11, dtype=float)
    # Thresholds at the 90/80/50 % quantiles: 9.1, 8.2, 5.5.
    np.testing.assert_allclose(SG.clv_tier_thresholds(clv), [9.1, 8.2, 5.5])
    got = SG.clv_tier(clv)
    assert list(got) == ["bottom 50%"] * 5 + ["next 30%"] * 3 + ["next 10%", "top 10%"]
    # A single customer tiered against the thresholds of a reference base.
    assert list(SG.clv_tier([9.5, 8.5, 0.0], SG.clv_tier_thresholds(clv))) == ["top 10%", "next 10%", "bottom 50%"]
    assert SG.tier_labels((0.25, 0.5)) == ["top 25%", "next 25%", "bottom 50%"]
    with pytest.raises(ValueError, match="top_shares"):
        SG.clv_tier_thresholds(clv, top_shares=(0.5, 0.2))


def test_quintile_scores_keep_ties_together():
    freq = [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    # Quantiles 0.2..0.8 of freq: 0, 0, 0.4, 2.2; a score is 1 + the edges strictly below.
    np.testing.assert_allclose(SG.quintile_edges(freq), [0.0, 0.0, 0.4, 2.2])
    assert list(SG.quintile_score(freq)) == [1] * 6 + [4, 4, 5, 5]


def test_rfm_scores_and_segments():
    scores = SG.rfm_scores([1, 10, 100, 5, 3], [0, 0, 0, 2, 5], [10, 20, 30, 40, 50])
    # Recency scored on its negation: the most recent (1 day) scores 5, the oldest (100) 1.
    assert scores["r_score"].tolist() == [5, 2, 1, 3, 4]
    assert scores["f_score"].tolist() == [1, 1, 1, 4, 5]
    assert scores["m_score"].tolist() == [1, 2, 3, 4, 5]
    # FM = round half up of (F + M) / 2.
    cells = [
        (5, 5, 5), (5, 1, 1), (1, 1, 1), (1, 5, 5), (2, 3, 4), (3, 3, 3), (4, 1, 2), (4, 1, 1), (3, 5, 4), (3, 1, 2),
    ]  # fmt: skip
    expected = [
        "champions", "new", "hibernating", "cannot_lose", "at_risk", "need_attention",
        "potential_loyalist", "promising", "loyal", "about_to_sleep",
    ]  # fmt: skip
    r, f, m = zip(*cells)
    assert list(SG.rfm_segment(r, f, m)) == expected
    # Without the models' columns the rules are the classic grid, cell by cell; "lost" needs them.
    rs, fms = np.meshgrid(np.arange(1, 6), np.arange(1, 6), indexing="ij")
    grid = SG.rfm_segment(rs.ravel(), fms.ravel(), fms.ravel()).reshape(5, 5)
    assert grid.tolist() == [list(row) for row in SG.RFM_SEGMENT_GRID]
    assert set(np.asarray(SG.RFM_SEGMENT_GRID).ravel()) | {"lost"} == set(SG.RFM_SEGMENTS)
    with pytest.raises(ValueError, match="1..5"):
        SG.rfm_segment([0], [1], [1])


def test_segments_follow_the_models_not_only_past_purchases():
    # Best R and FM but the models see the customer as gone (churn probability 1, CLV 0, P(alive)
    # near 0): lost, never champions; the same past at FM 5 and R 1 is lost too, not cannot_lose.
    got = SG.rfm_segment(
        [5, 1, 1, 1, 5, 4], [5, 5, 5, 5, 5, 5], [5, 5, 5, 5, 5, 5],
        p_alive=[0.9, 0.01, 0.6, 0.6, 0.8, 0.8], churn_probability=[1.0, 0.3, 0.7, 0.7, 0.6, 0.2],
        clv=[0.0, 50.0, 50.0, 5.0, 30.0, 30.0], clv_median=10.0,
    )  # fmt: skip
    assert got.tolist() == ["lost", "lost", "cannot_lose", "at_risk", "need_attention", "loyal"]
    assert list(SG.segment_definitions()) == list(SG.RFM_SEGMENTS) and all(SG.segment_definitions().values())


def test_every_member_of_a_segment_meets_its_rule_on_a_scored_book():
    # A book of 2,000 customers with model columns of every kind, scored against itself.
    rng = np.random.default_rng(11)
    n = 2_000
    churn = np.clip(rng.beta(0.6, 0.6, n), 0, 1)
    churn[:50] = 1.0
    scores = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 400, n).astype(float),
            "frequency": rng.poisson(2.0, n).astype(float),
            "monetary_value": rng.gamma(2.0, 30.0, n),
            "churn_probability": churn,
            "p_alive": np.clip(1 - churn + rng.normal(0, 0.1, n), 0, 1),
            "clv": np.where(churn == 1.0, 0.0, rng.gamma(1.5, 40.0, n)),
        }
    )
    reference = SG.SegmentReference.from_scores(scores)
    scores["clv_tier"], scores["rfm_segment"] = reference.segments(scores)
    sizes = check_segment_rules(reference, scores)
    assert sum(sizes.values()) == n and min(sizes.values()) > 0, sizes
    # Named as they read: no customer sure to churn among the customers to keep.
    kept = scores["rfm_segment"].isin(["champions", "loyal", "cannot_lose"])
    assert scores.loc[kept, "churn_probability"].max() < SG.LOST_CHURN_PROBABILITY
    assert (scores.loc[kept, "clv"] > 0).all()


def test_rfm_scores_against_a_reference():
    ref = pd.DataFrame({"recency_days": np.arange(10), "frequency": np.arange(10), "monetary_value": np.arange(10)})
    got = SG.rfm_scores([0], [9], [4.5], reference=ref)
    # Edges 1.8, 3.6, 5.4, 7.2: recency 0 beats all four negated edges, frequency 9 too, 4.5 two.
    assert got.iloc[0].tolist() == [5, 5, 3]


def test_ltv_cac_and_max_allowable_cac():
    assert C.ltv_cac_ratio(900, 300) == pytest.approx(3.0)
    np.testing.assert_array_equal(C.ltv_cac_ratio([100, 0], [0, 0]), [np.inf, np.nan])
    assert np.isnan(C.ltv_cac_ratio(100, np.nan))
    assert C.max_allowable_cac(900, target_ratio=3) == pytest.approx(300.0)
    assert C.max_allowable_cac(100, target_ratio=4) == pytest.approx(25.0)
    assert C.max_allowable_cac(-50, target_ratio=_D.target_ltv_cac) == 0.0
    with pytest.raises(ValueError, match="target_ratio"):
        C.max_allowable_cac(100, target_ratio=0)


def test_recommendation_rule():
    got = C.recommendation([3.0, 2.99, 1.0, 0.99, np.nan, np.inf], target_ratio=3.0)
    assert list(got) == ["grow", "hold", "hold", "cut", "unknown", "grow"]


def test_payback_months_known_values():
    flat = [10.0, 20.0, 30.0]  # 10 a month
    assert C.payback_months(flat, 25) == pytest.approx(2.5)
    assert C.payback_months(flat, 30) == pytest.approx(3.0)
    assert C.payback_months(flat, 31) == np.inf
    assert C.payback_months(flat, 0) == 0.0
    assert np.isnan(C.payback_months(flat, np.nan))
    np.testing.assert_allclose(C.payback_months([flat, [5.0, 50.0, 60.0]], [25, 25]), [2.5, 1.0 + 20 / 45])


def test_payback_from_the_per_horizon_margin_stream():
    # Horizons of 3 months with margins 15, 7.5 and 3.75, d = 0, each spread evenly over its 3
    # months. A CAC of 20 is reached 5/7.5 into horizon 2: 3 * (1 + 2/3) = 5 months.
    cum = C.cumulative_margin([15.0, 7.5, 3.75], horizon_days=THREE_MONTHS, annual_discount_rate=0)
    step = C.months_per_horizon(THREE_MONTHS)
    assert step == 3.0
    assert C.payback_months(cum, 20.0, step_months=step) == pytest.approx(5.0)
    assert C.payback_months(cum, 10.0, step_months=step) == pytest.approx(2.0)
    # Never within the 3-horizon cap (lifetime CLV 26.25 < 27).
    assert C.payback_months(cum, 27.0, step_months=step) == np.inf


def test_referral_credit():
    referred_by = pd.Series({"B": "A", "C": "A", "E": "D", "F": None})
    clv = pd.Series({"A": 50.0, "B": 100.0, "C": 300.0, "F": 80.0})
    got = C.referral_credit(referred_by, clv, referral_share=0.1, referral_bonus=5.0)
    # A: 0.1 * (100 + 300) - 2 * 5; D: E has no CLV, the bonus is still paid.
    expected = pd.Series({"A": 30.0, "D": -5.0}, name="referral_credit")
    expected.index.name = "customer_id"
    pd.testing.assert_series_equal(got, expected)
