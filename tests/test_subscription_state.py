"""Subscription state as of a cutoff (features.subscription): hand-made books, leakage, the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.contract import Tables
from features.subscription import STATE_COLUMNS, add_months, subscription_spells, subscription_state
from features.synthetic import generate_subscription, subscription_truth

PLANS = {"starter": 29.0, "growth": 79.0, "scale": 199.0}


def _tables(invoices, cancels=()) -> Tables:
    tx = pd.DataFrame([(c, pd.Timestamp(t), a) for c, t, a in invoices], columns=["customer_id", "timestamp", "amount"])
    ev = pd.DataFrame([(c, pd.Timestamp(t), "cancel") for c, t in cancels],
                      columns=["customer_id", "timestamp", "event_type"])
    return Tables(
        transactions=tx.astype({"customer_id": "str", "timestamp": "datetime64[ns]", "amount": "float64"}),
        events=ev.astype({"customer_id": "str", "timestamp": "datetime64[ns]", "event_type": "str"}),
    )


BOOK = _tables(
    [
        # a: monthly on the 31st, clipped to shorter months: paid through 30 April.
        ("a", "2024-01-31 10:00", 29), ("a", "2024-02-29 10:00", 29), ("a", "2024-03-31 10:00", 29),
        # b: cancels after its third invoice; access to 15 April.
        ("b", "2024-01-15", 79), ("b", "2024-02-15", 79), ("b", "2024-03-15", 79),
        # c: skips March and April, comes back in May on its old billing day.
        ("c", "2024-01-01", 29), ("c", "2024-02-01", 29), ("c", "2024-05-01", 79),
        # d: upgrades; a refund pays no period; the second invoice is three days late.
        ("d", "2024-02-05", 79), ("d", "2024-03-08", 199), ("d", "2024-03-20", -10),
        ("d", "2024-04-05", 199),
        # e: cancels, then pays the next invoice anyway: the cancel is undone.
        ("e", "2024-03-10", 29), ("e", "2024-04-10", 29),
    ],
    cancels=[("b", "2024-03-20 12:00"), ("e", "2024-03-20")],
)


def test_states_of_a_hand_made_book():
    got = subscription_state(BOOK, cutoff="2024-04-10", plans=PLANS)
    t0 = pd.Timestamp("2024-04-11")
    expected = pd.DataFrame(
        {
            "state": ["active", "cancelled_paid_through", "churned", "active", "active"],
            "plan": ["starter", "growth", "starter", "scale", "starter"],
            "mrr": [29.0, 79.0, 0.0, 199.0, 29.0],
            "last_mrr": [29.0, 79.0, 29.0, 199.0, 29.0],
            "subscription_start": pd.to_datetime(
                ["2024-01-31 10:00", "2024-01-15", "2024-01-01", "2024-02-05", "2024-03-10"], format="ISO8601"
            ),
            "paid_through": pd.to_datetime(
                ["2024-04-30 10:00", "2024-04-15", "2024-03-01", "2024-05-05", "2024-05-10"], format="ISO8601"
            ),
            "tenure_periods": pd.array([2, 2, pd.NA, 2, 1], dtype="Int64"),
            "period_elapsed": [
                (t0 - pd.Timestamp("2024-03-31 10:00")) / pd.Timedelta(days=30),
                27 / 31, np.nan, 6 / 30, 1 / 30,
            ],
            "n_subscriptions": [1, 1, 1, 1, 1],
            "cancelled_at": pd.to_datetime([None, "2024-03-20 12:00", None, None, None], format="ISO8601"),
            "periods_since_churn": pd.array([pd.NA, pd.NA, 1, pd.NA, pd.NA], dtype="Int64"),
        },
        index=pd.Index(["a", "b", "c", "d", "e"], dtype="str", name="customer_id"),
    )
    expected = expected.astype({"state": "str", "plan": "str", "subscription_start": "datetime64[ns]",
                                "paid_through": "datetime64[ns]", "cancelled_at": "datetime64[ns]"})
    assert_frame_equal(got, expected)
    assert list(got.columns) == list(STATE_COLUMNS)


def test_a_cancelled_customer_churns_at_the_end_of_the_paid_period_and_a_return_is_reactivated():
    # Paid through 15 April 00:00: access to the end of 14 April.
    before = subscription_state(BOOK, cutoff="2024-04-13", plans=PLANS)
    after = subscription_state(BOOK, cutoff="2024-04-14", plans=PLANS)
    assert before.loc["b", "state"] == "cancelled_paid_through"
    assert after.loc["b", "state"] == "churned" and after.loc["b", "mrr"] == 0
    may = subscription_state(BOOK, cutoff="2024-05-10", plans=PLANS)
    assert may.loc["c", ["state", "plan", "mrr", "n_subscriptions"]].tolist() == ["reactivated", "growth", 79.0, 2]
    assert may.loc["c", "tenure_periods"] == 0 and may.loc["c", "paid_through"] == pd.Timestamp("2024-06-01")


def test_spells_list_every_subscription_with_its_end():
    spells = subscription_spells(BOOK, cutoff="2024-05-30", plans=PLANS).set_index(["customer_id", "spell"])
    assert spells.loc[("c", 0), ["periods", "ended"]].tolist() == [2, True]
    assert spells.loc[("c", 1), ["periods", "ended", "plan"]].tolist() == [1, False, "growth"]
    assert spells.loc[("b", 0), "cancelled_at"] == pd.Timestamp("2024-03-20 12:00")
    assert pd.isna(spells.loc[("e", 0), "cancelled_at"])


def test_future_rows_change_nothing():
    cutoff = "2024-04-10"
    future = _tables(
        [("a", "2024-04-11", 199), ("c", "2024-04-11 00:00", 29), ("f", "2024-04-12", 29), ("b", "2024-04-15", 79)],
        cancels=[("a", "2024-04-11 00:00:01"), ("d", "2024-05-01")],
    )
    longer = Tables(
        transactions=pd.concat([BOOK.transactions, future.transactions], ignore_index=True),
        events=pd.concat([BOOK.events, future.events], ignore_index=True),
    )
    assert_frame_equal(subscription_state(longer, cutoff=cutoff, plans=PLANS),
                       subscription_state(BOOK, cutoff=cutoff, plans=PLANS))


def test_plan_comes_from_a_plan_column_or_the_amount():
    book = _tables([("x", "2024-01-03", 49.5)])
    assert subscription_state(book, cutoff="2024-01-10").loc["x", "plan"] == "49.5"
    assert subscription_state(book, cutoff="2024-01-10", plans=PLANS).loc["x", "plan"] == "other"
    named = Tables(transactions=book.transactions.assign(plan=pd.array(["pro"], dtype="str")))
    assert subscription_state(named, cutoff="2024-01-10").loc["x", "plan"] == "pro"


def test_annual_billing_and_grace_days():
    book = _tables([("y", "2023-03-01", 1200.0)])
    state = subscription_state(book, cutoff="2024-02-01", billing_months=12)
    assert state.loc["y", ["state", "mrr"]].tolist() == ["active", 100.0]
    assert state.loc["y", "paid_through"] == pd.Timestamp("2024-03-01")
    assert subscription_state(book, cutoff="2024-03-02", billing_months=12).loc["y", "state"] == "churned"
    late = subscription_state(book, cutoff="2024-03-02", billing_months=12, grace_days=5)
    assert late.loc["y", "state"] == "active"


def test_no_invoice_gives_an_empty_frame_with_the_columns():
    got = subscription_state(_tables([("z", "2025-01-01", 29)]), cutoff="2024-12-31")
    assert got.empty and list(got.columns) == list(STATE_COLUMNS) and got.index.name == "customer_id"


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"billing_months": 0}, "billing_months"), ({"grace_days": -1}, "grace_days")]
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        subscription_state(BOOK, cutoff="2024-04-10", **kwargs)


def test_add_months_clips_to_the_end_of_shorter_months():
    start = np.array(["2024-01-31T10:00"] * 4, dtype="datetime64[ns]")
    got = add_months(start, np.array([0, 1, 2, 13]))
    expected = np.array(["2024-01-31T10:00", "2024-02-29T10:00", "2024-03-31T10:00", "2025-02-28T10:00"],
                        dtype="datetime64[ns]")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("cutoff", ["2022-06-30", "2023-12-31"])
def test_states_agree_with_the_generators_truth(cutoff):
    book = generate_subscription(2_000, seed=11)
    truth = subscription_truth(book, cutoff=cutoff).customers
    state = subscription_state(book.tables, cutoff=cutoff, plans=PLANS).reindex(truth.index)
    names = {"active": "active", "reactivated": "reactivated", "cancelled": "cancelled_paid_through",
             "churned": "churned"}
    assert (state["state"] == truth["state"].map(names)).all()
    running = truth["state"] != "churned"
    assert (state.loc[running, "plan"] == truth.loc[running, "plan"]).all()
    assert (state.loc[running, "tenure_periods"] == truth.loc[running, "tenure_months"]).all()
    assert (state.loc[running, "paid_through"] == truth.loc[running, "next_billing_at"]).all()
    assert running.sum() > 300 and (truth["state"] == "cancelled").sum() > 3
