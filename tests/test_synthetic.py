"""Tests of the synthetic book generator and its oracle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from features.synthetic import (
    SyntheticConfig,
    generate,
    oracle_expected_spend,
    read_book,
    write_book,
)
from features.synthetic.retail import EVENT_TYPES

STR = pd.StringDtype(na_value=np.nan)
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def book():
    return generate(20_000, seed=7)


def window_spend(transactions: pd.DataFrame, index: pd.Index, *, cutoff: str, horizon_days: int) -> pd.Series:
    """Realised net spend in (cutoff, cutoff + H days], per customer of ``index`` (0 if none)."""
    t0 = pd.Timestamp(cutoff) + DAY
    in_window = (transactions["timestamp"] >= t0) & (transactions["timestamp"] < t0 + horizon_days * DAY)
    spend = transactions[in_window].groupby("customer_id")["amount"].sum()
    return spend.reindex(index, fill_value=0.0)


def test_same_seed_gives_identical_frames():
    a, b = generate(3_000, seed=11), generate(3_000, seed=11)
    for name in ("transactions", "events", "customers"):
        pd.testing.assert_frame_equal(getattr(a.tables, name), getattr(b.tables, name))
    pd.testing.assert_frame_equal(a.truth, b.truth)
    c = generate(3_000, seed=12)
    assert not c.tables.transactions["amount"].equals(a.tables.transactions["amount"])


def test_tables_follow_the_contract_dtypes(book):
    assert isinstance(book.tables, Tables)
    tx, ev, cu = book.tables.transactions, book.tables.events, book.tables.customers
    assert list(tx.columns) == ["customer_id", "timestamp", "amount"]
    assert list(ev.columns) == ["customer_id", "timestamp", "event_type"]
    assert tx["customer_id"].dtype == STR and ev["customer_id"].dtype == STR
    assert tx["timestamp"].dtype == "datetime64[ns]" and ev["timestamp"].dtype == "datetime64[ns]"
    assert tx["amount"].dtype == "float64" and np.isfinite(tx["amount"]).all()
    assert ev["event_type"].dtype == STR and set(ev["event_type"].unique()) == set(EVENT_TYPES)
    assert cu["customer_id"].dtype == STR and cu["customer_id"].is_unique
    assert cu["customer_id"].iloc[0] == "C0000001" and cu["customer_id"].str.len().eq(8).all()
    assert cu["acquired_at"].dtype == "datetime64[ns]"
    for col in ("channel", "referred_by", "region"):
        assert cu[col].dtype == STR
    assert cu["acquisition_cost"].dtype == "float64" and (cu["acquisition_cost"] >= 0).all()
    assert book.truth.index.name == "customer_id" and book.truth.index.dtype == STR
    assert book.truth.index.equals(pd.Index(cu["customer_id"]))


def test_rows_lie_in_the_period_in_time_order(book):
    for frame in (book.tables.transactions, book.tables.events):
        ts = frame["timestamp"]
        assert ts.is_monotonic_increasing
        assert ts.min() >= pd.Timestamp("2021-01-01") and ts.max() < pd.Timestamp("2025-01-01")
    assert set(book.tables.transactions["customer_id"]) == set(book.tables.customers["customer_id"])


def test_first_purchase_is_at_acquisition_and_none_before(book):
    tx, cu = book.tables.transactions, book.tables.customers.set_index("customer_id")
    first = tx.groupby("customer_id")["timestamp"].min()
    pd.testing.assert_series_equal(first, cu["acquired_at"].reindex(first.index), check_names=False)
    acquired = cu["acquired_at"].reindex(tx["customer_id"]).to_numpy()
    assert (tx["timestamp"].to_numpy() >= acquired).all()


def test_acquisition_volume_grows(book):
    year = book.tables.customers["acquired_at"].dt.year.value_counts().sort_index()
    assert year.is_monotonic_increasing and year.iloc[-1] > 1.8 * year.iloc[0]


def test_purchases_stop_and_events_nearly_stop_after_dropout(book):
    tx, ev, truth = book.tables.transactions, book.tables.events, book.truth
    purchases = tx[tx["amount"] > 0]
    # Refunds may follow a last purchase; purchases never do.
    dropout_at = truth["dropout_at"].reindex(purchases["customer_id"]).to_numpy()
    assert (purchases["timestamp"].to_numpy() <= dropout_at).all()

    end = pd.Timestamp("2025-01-01")
    acquired, dropout = truth["acquired_at"], truth["dropout_at"].clip(upper=end)
    active_days = ((dropout - acquired) / DAY).sum()
    dead_days = ((end - dropout) / DAY).sum()
    sessions = ev[ev["event_type"] == "session"]
    after = sessions["timestamp"].to_numpy() > truth["dropout_at"].reindex(sessions["customer_id"]).to_numpy()
    rate_active = (~after).sum() / active_days
    rate_dead = after.sum() / dead_days
    assert rate_dead < 0.1 * rate_active

    cancels = ev[ev["event_type"] == "cancel"]
    at_dropout = truth["dropout_at"].reindex(cancels["customer_id"]).to_numpy()
    assert len(cancels) > 0 and (cancels["timestamp"].to_numpy() == at_dropout).all()
    assert cancels["customer_id"].is_unique


def test_engagement_fades_before_dropout(book):
    cutoff = pd.Timestamp("2023-06-30")
    t0 = cutoff + DAY
    truth = book.truth[book.truth["acquired_at"] < t0 - 60 * DAY]
    alive = truth[truth["dropout_at"] > t0]
    churners = alive.index[alive["dropout_at"] <= t0 + 30 * DAY]
    stayers = alive.index[alive["dropout_at"] > t0 + 180 * DAY]
    assert len(churners) > 100 and len(stayers) > 1_000

    ev = book.tables.events
    recent = ev[(ev["timestamp"] >= t0 - 30 * DAY) & (ev["timestamp"] < t0)]
    counts = pd.crosstab(recent["customer_id"], recent["event_type"]).reindex(alive.index, fill_value=0)
    assert counts.loc[churners, "session"].mean() < 0.7 * counts.loc[stayers, "session"].mean()
    assert counts.loc[churners, "email_open"].mean() < 0.8 * counts.loc[stayers, "email_open"].mean()
    assert counts.loc[churners, "support_ticket"].mean() > 2 * counts.loc[stayers, "support_ticket"].mean()

    # The same holds for the observable churn label (no purchase in the next 90 days).
    tx = book.tables.transactions
    in_window = (tx["timestamp"] >= t0) & (tx["timestamp"] < t0 + 90 * DAY) & (tx["amount"] > 0)
    churned = ~truth.index.isin(tx.loc[in_window, "customer_id"])
    sessions = recent[recent["event_type"] == "session"].groupby("customer_id").size()
    sessions = sessions.reindex(truth.index, fill_value=0)
    assert sessions[churned].mean() < 0.5 * sessions[~churned].mean()


@pytest.mark.parametrize(
    ("cutoff", "horizon_days"), [("2023-06-30", 90), ("2023-12-31", 180), ("2024-09-30", 90)]
)
def test_oracle_mean_matches_realised_window_spend(book, cutoff, horizon_days):
    oracle = oracle_expected_spend(book.truth, cutoff=cutoff, horizon_days=horizon_days)
    actual = window_spend(book.tables.transactions, oracle.index, cutoff=cutoff, horizon_days=horizon_days)
    assert oracle.mean() == pytest.approx(actual.mean(), rel=0.04)
    # The oracle explains most of the variation between customers.
    assert np.corrcoef(oracle, actual)[0, 1] > 0.8


def test_oracle_is_zero_once_dropped_out_and_covers_acquired_customers(book):
    cutoff = "2023-06-30"
    t0 = pd.Timestamp(cutoff) + DAY
    oracle = oracle_expected_spend(book.truth, cutoff=cutoff, horizon_days=90)
    assert oracle.name == "expected_spend"
    acquired = book.truth.index[book.truth["acquired_at"] < t0]
    assert oracle.index.equals(acquired)
    dead = book.truth.loc[acquired, "dropout_at"] <= t0
    assert dead.any() and (oracle[dead] == 0).all()
    assert (oracle[~dead] > 0).all()


def test_oracle_known_value_without_seasonality():
    # With a flat season the exposure is (1 - exp(-mu * H)) / mu.
    book = generate(500, seed=3, config=SyntheticConfig(seasonality=(1.0,) * 12))
    truth = book.truth
    oracle = oracle_expected_spend(truth, cutoff="2024-02-29", horizon_days=60)
    alive = truth.loc[oracle.index, "dropout_at"] > pd.Timestamp("2024-03-01")
    t = truth.loc[oracle.index][alive]
    mu = t["dropout_rate_per_day"]
    expected = t["purchase_rate_per_day"] * t["net_order_value"] * (1 - np.exp(-mu * 60)) / mu
    np.testing.assert_allclose(oracle[alive], expected, rtol=1e-12)


def test_oracle_window_is_truncated_at_the_period_end(book):
    inside = oracle_expected_spend(book.truth, cutoff="2024-11-30", horizon_days=31)
    beyond = oracle_expected_spend(book.truth, cutoff="2024-11-30", horizon_days=365)
    pd.testing.assert_series_equal(inside, beyond)


def test_oracle_needs_the_generation_settings_in_attrs(book):
    truth = book.truth.copy()
    truth.attrs = {}
    with pytest.raises(ValueError, match="attrs"):
        oracle_expected_spend(truth, cutoff="2024-01-01", horizon_days=30)


def test_referred_by_points_to_earlier_customers(book):
    cu = book.tables.customers
    referral = cu["channel"] == "referral"
    assert referral.sum() > 500
    assert cu.loc[~referral, "referred_by"].isna().all()
    assert cu.loc[referral, "referred_by"].notna().all()
    acquired = cu.set_index("customer_id")["acquired_at"]
    referrers = cu.loc[referral, "referred_by"]
    assert referrers.isin(cu["customer_id"]).all()
    assert (acquired.reindex(referrers).to_numpy() <= cu.loc[referral, "acquired_at"].to_numpy()).all()
    assert book.truth["n_referred"].sum() == referral.sum()


def test_channels_differ_in_cost_and_quality(book):
    truth = book.truth
    columns = ["acquisition_cost", "dropout_rate_per_day", "purchase_rate_per_day"]
    mean = truth.groupby("channel")[columns].mean()
    assert mean.loc["paid_search", "acquisition_cost"] > 5 * mean.loc["organic", "acquisition_cost"]
    assert mean.loc["paid_social", "dropout_rate_per_day"] > mean.loc["referral", "dropout_rate_per_day"]
    assert mean.loc["referral", "purchase_rate_per_day"] > mean.loc["paid_social", "purchase_rate_per_day"]


def test_refunds_are_a_few_percent(book):
    amount = book.tables.transactions["amount"]
    assert 0.02 < (amount < 0).mean() < 0.06


def test_write_and_read_book_round_trip(tmp_path):
    book = generate(1_000, seed=5)
    out = write_book(book, tmp_path / "book")
    names = {p.name for p in out.iterdir()}
    tables = ("transactions", "events", "customers", "ground_truth")
    assert names == {f"{t}.parquet" for t in tables} | {"dataset.json"}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["rows"]["transactions"] == len(book.tables.transactions)
    assert meta["settings"]["seed"] == 5 and meta["settings"]["n_customers"] == 1_000

    back = read_book(out)
    for name in ("transactions", "events", "customers"):
        pd.testing.assert_frame_equal(getattr(back.tables, name), getattr(book.tables, name))
    pd.testing.assert_frame_equal(back.truth, book.truth)
    pd.testing.assert_series_equal(
        oracle_expected_spend(back.truth, cutoff="2023-01-31", horizon_days=90),
        oracle_expected_spend(book.truth, cutoff="2023-01-31", horizon_days=90),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"n_customers": 10, "start": "2024-01-01", "end": "2023-01-01"}, "before start"),
        ({"n_customers": 10, "config": SyntheticConfig(seasonality=(1.0,) * 11)}, "seasonality"),
        ({"n_customers": 10, "config": SyntheticConfig(refund_probability=1.5)}, "refund_probability"),
    ],
)
def test_invalid_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(**kwargs)
