"""SaaS finance (serving.finance.saas): the MRR bridge, churn, GRR/NRR, cohorts, CAC payback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_series_equal

from features.contract import Tables
from features.synthetic import generate_subscription
from serving.finance.saas import (
    cac_payback,
    churn_rates,
    cohort_retention,
    mrr_bridge,
    mrr_movements,
    net_revenue_retention,
)


def _tables(invoices, customers=None) -> Tables:
    tx = pd.DataFrame([(c, pd.Timestamp(t), a) for c, t, a in invoices], columns=["customer_id", "timestamp", "amount"])
    tx = tx.astype({"customer_id": "str", "amount": "float64"})
    return Tables(transactions=tx, customers=customers)


# Four customers pay in January 2024, the base month:
#   a 100 every month, 150 from April (expansion);  b 200, 200, then gone (churned in March);
#   c 50, then 30 (contraction);                    d 100, gone in February and March, back in April.
# e joins in February (500 a month) and never counts in January's retention.
TINY = _tables(
    [
        ("a", "2024-01-10", 100), ("a", "2024-02-10", 100), ("a", "2024-03-10", 100), ("a", "2024-04-10", 150),
        ("b", "2024-01-20", 200), ("b", "2024-02-20", 200),
        ("c", "2024-01-05", 50), ("c", "2024-02-05", 30), ("c", "2024-03-05", 30), ("c", "2024-04-05", 30),
        ("d", "2024-01-31", 100), ("d", "2024-04-30", 100),
        ("e", "2024-02-14", 500), ("e", "2024-03-14", 500), ("e", "2024-04-14", 500),
        ("a", "2024-05-10", 150),  # after the last whole month: ignored
    ],
    customers=pd.DataFrame(
        {
            "customer_id": pd.array(["a", "b", "c", "d", "e"], dtype="str"),
            "channel": pd.array(["x", "y", "x", "y", "x"], dtype="str"),
            "acquisition_cost": [150.0, 1000.0, 10.0, np.nan, 200.0],
        }
    ),
)


@pytest.fixture(scope="module")
def tiny():
    return mrr_movements(TINY, cutoff="2024-05-15")


def test_grr_and_nrr_match_the_hand_computed_values(tiny):
    got = net_revenue_retention(tiny, base_month="2024-01-01", months=3)
    # Base MRR 100 + 200 + 50 + 100 = 450; in April a 150 (100 kept), b 0, c 30, d 100.
    assert got.loc["all", "customers"] == 4
    assert got.loc["all", "grr"] == pytest.approx((100 + 0 + 30 + 100) / 450)
    assert got.loc["all", "nrr"] == pytest.approx((150 + 0 + 30 + 100) / 450)
    by_channel = net_revenue_retention(tiny, base_month="2024-01-15", months=3, by=("channel",))
    assert by_channel.loc["x", "nrr"] == pytest.approx((150 + 30) / 150)
    assert by_channel.loc["x", "grr"] == pytest.approx((100 + 30) / 150)
    assert by_channel.loc["y", "nrr"] == pytest.approx(100 / 300)


def test_the_bridge_of_the_tiny_book_by_hand(tiny):
    bridge = mrr_bridge(tiny)
    assert list(bridge.index.strftime("%Y-%m")) == ["2024-01", "2024-02", "2024-03", "2024-04"]
    feb, mar, apr = (bridge.loc[pd.Timestamp(m)] for m in ("2024-02-01", "2024-03-01", "2024-04-01"))
    assert bridge.loc[pd.Timestamp("2024-01-01"), ["new", "mrr", "customers"]].tolist() == [450, 450, 4]
    assert feb[["mrr_start", "new", "contraction", "churned", "mrr"]].tolist() == [450, 500, -20, -100, 830]
    assert mar[["churned", "mrr", "churned_customers"]].tolist() == [-200, 630, 1]
    assert apr[["expansion", "reactivated", "mrr", "arr", "reactivated_customers"]].tolist() == [
        50, 100, 780, 12 * 780, 1
    ]


def test_logo_and_revenue_churn_by_hand(tiny):
    rates = churn_rates(tiny, by=())
    # Customers paying the month before: February a b c d, March a b c e, April a c e.
    assert rates.loc["all", "customer_months"] == 11
    assert rates.loc["all", "logo_churn"] == pytest.approx(2 / 11)
    mrr_start = 450 + 830 + 630
    assert rates.loc["all", "revenue_churn"] == pytest.approx((100 + 200 + 20) / mrr_start)
    assert rates.loc["all", "net_revenue_churn"] == pytest.approx((100 + 200 + 20 - 50) / mrr_start)
    by_plan = churn_rates(tiny, by=("plan",))
    assert by_plan.loc["200", "logo_churn"] == 1 / 2  # b: February kept, March lost
    with pytest.raises(ValueError, match="by"):
        churn_rates(tiny, by=("colour",))


def test_cohort_retention_by_hand(tiny):
    curves = cohort_retention(tiny)
    assert curves.loc["2024-01", "customers"] == 4
    assert curves.loc["2024-01", [0, 1, 2, 3]].tolist() == [1.0, 0.75, 0.5, 0.75]
    assert curves.loc["2024-02", [0, 1, 2]].tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(curves.loc["2024-02", 3])


def test_cac_payback_by_hand(tiny):
    got = cac_payback(tiny, TINY.customers, gross_margin=0.8)
    # Channel x: a (CAC 150), c (10), e (200). Observed 4, 4 and 3 months.
    # k = 1: margin 0.8 * (100 + 50 + 500) = 520 >= CAC 360.
    assert got.loc["x", "payback_months_observed"] == 1
    assert got.loc["x", "payback_months_formula"] == pytest.approx(120 / (0.8 * (100 + 50 + 500) / 3))
    # Channel y: only b has a CAC (1000); 0.8 * 400 never reaches it.
    assert got.loc["y", "customers"] == 1 and np.isnan(got.loc["y", "payback_months_observed"])


def test_annual_invoices_spread_over_twelve_months():
    book = _tables([("y", "2023-03-15", 1200.0)])
    bridge = mrr_bridge(mrr_movements(book, cutoff="2024-06-30", billing_months=12))
    assert bridge.loc[pd.Timestamp("2023-03-01"):pd.Timestamp("2024-02-01"), "mrr"].eq(100).all()
    assert bridge.loc[pd.Timestamp("2024-03-01"), ["mrr", "churned"]].tolist() == [0, -100]


def test_refunds_net_and_the_bridge_still_adds_up():
    book = _tables([("r", "2024-01-03", 50), ("r", "2024-02-03", 50), ("r", "2024-03-20", -50)])
    bridge = mrr_bridge(mrr_movements(book, cutoff="2024-04-30"))
    parts = bridge[["new", "expansion", "contraction", "churned", "reactivated", "adjustment"]].sum(axis=1)
    np.testing.assert_allclose(bridge["mrr_start"] + parts, bridge["mrr"])
    assert bridge.loc[pd.Timestamp("2024-04-01"), "adjustment"] == 50


def test_the_bridge_adds_up_to_the_invoices_month_by_month_on_a_generated_book():
    book = generate_subscription(3_000, seed=4, end="2023-12-31")
    movements = mrr_movements(book.tables, cutoff="2023-11-30", plans={"starter": 29, "growth": 79, "scale": 199})
    bridge = mrr_bridge(movements)
    tx = book.tables.transactions
    tx = tx.loc[tx["timestamp"] < pd.Timestamp("2023-12-01")]
    invoiced = tx.groupby(tx["timestamp"].dt.to_period("M").dt.to_timestamp())["amount"].sum()
    assert_series_equal(bridge["mrr"], invoiced.reindex(bridge.index).rename("mrr"), check_freq=False,
                        check_index_type=False, check_names=False)
    parts = bridge[["new", "expansion", "contraction", "churned", "reactivated", "adjustment"]].sum(axis=1)
    np.testing.assert_allclose(bridge["mrr_start"] + parts, bridge["mrr"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(bridge["mrr_start"].iloc[1:], bridge["mrr"].iloc[:-1])
    # Every movement happens once the book has a year of history.
    assert len(bridge) == 35 and (bridge[["new", "expansion", "reactivated"]].iloc[12:] > 0).all().all()
    assert (bridge[["contraction", "churned"]].iloc[12:] < 0).all().all()
    assert (bridge["customers"].diff().iloc[1:] == (bridge["new_customers"] + bridge["reactivated_customers"]
                                                    - bridge["churned_customers"]).iloc[1:]).all()


def test_retention_refuses_a_month_past_the_history(tiny):
    with pytest.raises(ValueError, match="base_month"):
        net_revenue_retention(tiny, base_month="2024-03-01", months=3)


def test_retention_by_plan_uses_the_plan_of_the_base_month(tiny):
    got = net_revenue_retention(tiny, base_month="2024-02-01", months=2, by=("plan",))
    # February: a 100, b 200, c 30 (contracted from 50 that month), e 500.
    assert got["customers"].to_dict() == {"100": 1, "200": 1, "30": 1, "500": 1}
    assert got.loc["30", "nrr"] == 1.0 and got.loc["200", "nrr"] == 0.0 and got.loc["100", "nrr"] == 1.5
