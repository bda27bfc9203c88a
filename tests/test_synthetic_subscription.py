"""Tests of the synthetic subscription book and its ground truth.

Statistical checks compare a count with its expectation under the model and allow 4 standard
errors, the standard error being the square root of the summed Bernoulli variances
``sum p (1 - p)`` of the rows counted (a Poisson-binomial count), or ``sd / sqrt(n)`` for means of
amounts. With the fixed seeds below each check either passes or fails every time; 4 standard
errors keep a correct generator from failing any of the ~40 cells checked here by chance
(P(|z| > 4) = 6e-5 per cell).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from features.synthetic import (
    SubscriptionChannel,
    SubscriptionConfig,
    SyntheticBook,
    generate,
    generate_subscription,
    new_customer_truth,
    read_book,
    subscription_truth,
    write_book,
)
from features.synthetic.subscription import STATES, SUBSCRIPTION_EVENT_TYPES

STR = pd.StringDtype(na_value=np.nan)
DAY = pd.Timedelta(days=1)
CFG = SubscriptionConfig()
PRICES = {p.name: p.price for p in CFG.plans}
PLAN_OF_PRICE = {p.price: i for i, p in enumerate(CFG.plans)}
PLAN_EFFECT = np.array([p.hazard_effect for p in CFG.plans])
Z = 4.0


@pytest.fixture(scope="module")
def book():
    return generate_subscription(20_000, seed=7)


@pytest.fixture(scope="module")
def invoices(book):
    """Invoices with their spell, tenure (billing months before this one in the spell) and plan.

    Derived from the tables alone: a gap of more than 31 days between two invoices starts a new
    spell (monthly invoices are 28 to 31 days apart; a return skips at least one anniversary).
    """
    tx = book.tables.transactions.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    gap = tx.groupby("customer_id")["timestamp"].diff()
    tx["spell"] = (gap.isna() | (gap > 31 * DAY)).cumsum()
    tx["tenure"] = tx.groupby("spell").cumcount()
    tx["plan"] = tx["amount"].map(PLAN_OF_PRICE)
    tx["next"] = tx.groupby("spell")["timestamp"].shift(-1)
    return tx


def z_score(observed, expected_p) -> float:
    expected_p = np.asarray(expected_p, dtype=float)
    return (float(np.sum(observed)) - expected_p.sum()) / np.sqrt(np.sum(expected_p * (1 - expected_p)))


# --------------------------------------------------------------------------------------------------
# the tables


def test_same_seed_gives_identical_frames():
    a, b = generate_subscription(3_000, seed=11), generate_subscription(3_000, seed=11)
    for name in ("transactions", "events", "customers"):
        pd.testing.assert_frame_equal(getattr(a.tables, name), getattr(b.tables, name))
    pd.testing.assert_frame_equal(a.truth, b.truth)
    c = generate_subscription(3_000, seed=12)
    assert not c.truth["frailty"].equals(a.truth["frailty"])


def test_tables_follow_the_contract(book):
    assert isinstance(book.tables, Tables)
    tx, ev, cu = book.tables.transactions, book.tables.events, book.tables.customers
    assert list(tx.columns) == ["customer_id", "timestamp", "amount"]
    assert list(ev.columns) == ["customer_id", "timestamp", "event_type"]
    assert list(cu.columns) == ["customer_id", "acquired_at", "channel", "acquisition_cost", "plan", "company_size"]
    assert tx["customer_id"].dtype == STR and ev["customer_id"].dtype == STR and cu["customer_id"].dtype == STR
    assert tx["timestamp"].dtype == "datetime64[ns]" and ev["timestamp"].dtype == "datetime64[ns]"
    assert cu["acquired_at"].dtype == "datetime64[ns]"
    assert tx["amount"].dtype == "float64" and np.isfinite(tx["amount"]).all()
    assert cu["acquisition_cost"].dtype == "float64" and (cu["acquisition_cost"] >= 0).all()
    assert ev["event_type"].dtype == STR and set(ev["event_type"].unique()) == set(SUBSCRIPTION_EVENT_TYPES)
    for col in ("channel", "plan", "company_size"):
        assert cu[col].dtype == STR and cu[col].notna().all()
    assert cu["customer_id"].is_unique and cu["customer_id"].iloc[0] == "C0000001"
    assert book.truth.index.name == "customer_id" and book.truth.index.dtype == STR
    assert book.truth.index.equals(pd.Index(cu["customer_id"]))
    assert book.settings["kind"] == "subscription" and book.settings["n_customers"] == 20_000


def test_rows_lie_in_the_period_in_time_order(book):
    for frame in (book.tables.transactions, book.tables.events):
        ts = frame["timestamp"]
        assert ts.is_monotonic_increasing
        assert ts.min() >= pd.Timestamp("2021-01-01") and ts.max() < pd.Timestamp("2025-01-01")
    year = book.tables.customers["acquired_at"].dt.year.value_counts().sort_index()
    assert year.is_monotonic_increasing and year.iloc[-1] > 1.8 * year.iloc[0]


def test_invoices_are_monthly_at_plan_prices_on_the_signup_day(book, invoices):
    cu = book.tables.customers.set_index("customer_id")
    assert invoices["amount"].isin(list(PRICES.values())).all()
    first = invoices.groupby("customer_id")["timestamp"].min()
    pd.testing.assert_series_equal(first, cu["acquired_at"].reindex(first.index), check_names=False)
    signup_plan = invoices.groupby("customer_id")["amount"].first()
    assert (signup_plan == cu["plan"].map(PRICES).reindex(signup_plan.index)).all()

    # Every invoice falls on an anniversary of the signup: the signup's day of month clipped to
    # the month's length, at the signup's time of day, a whole number of months later.
    acquired = cu["acquired_at"].reindex(invoices["customer_id"]).reset_index(drop=True)
    ts = invoices["timestamp"]
    months = (ts.dt.year - acquired.dt.year) * 12 + ts.dt.month - acquired.dt.month
    expected_day = np.minimum(acquired.dt.day, ts.dt.days_in_month)
    assert (ts.dt.day == expected_day).all()
    assert ((ts - ts.dt.normalize()) == (acquired - acquired.dt.normalize())).all()
    # Within a spell, one invoice per month and no month skipped.
    step = months.groupby(invoices["spell"]).diff().dropna()
    assert (step == 1).all()


def test_invoices_stop_after_a_cancel_and_resume_only_on_a_return(book, invoices):
    ev = book.tables.events
    cancels = ev[ev["event_type"] == "cancel"].sort_values(["timestamp"])
    assert len(cancels) > 1_000
    # The last invoice before each cancel and the next invoice after it.
    inv = invoices[["customer_id", "timestamp", "next", "spell"]].sort_values("timestamp")
    paired = pd.merge_asof(
        cancels, inv.rename(columns={"timestamp": "paid_at"}), left_on="timestamp", right_on="paid_at",
        by="customer_id", direction="backward",
    )
    assert paired["paid_at"].notna().all()
    # A cancel ends its spell (no invoice at the next anniversary) within the month it paid for.
    assert paired["next"].isna().all()
    assert ((paired["timestamp"] - paired["paid_at"]) < 31 * DAY).all()
    # Invoices that follow a cancel are returns: at least two anniversaries after the last one paid.
    later = pd.merge_asof(
        paired[["customer_id", "timestamp", "paid_at"]],
        inv[["customer_id", "timestamp"]].rename(columns={"timestamp": "back_at"}),
        left_on="timestamp", right_on="back_at", by="customer_id", direction="forward", allow_exact_matches=False,
    ).dropna(subset=["back_at"])
    assert len(later) > 50
    assert ((later["back_at"] - later["paid_at"]) >= 59 * DAY).all()
    # Conversely every spell after the first starts after a cancel: spells = 1 + returns.
    spells = invoices.groupby("customer_id")["spell"].nunique()
    truth = book.truth
    assert (spells == truth["n_subscriptions"].reindex(spells.index)).all()
    assert (truth["n_subscriptions"] <= truth["n_cancels"] + 1).all()
    returned = truth["reactivated_at"].notna()
    assert (truth.loc[returned, "reactivated_at"] > truth.loc[returned, "churned_at"]).all()


def test_plan_changes_follow_the_per_customer_rates(book, invoices):
    # Months that were survived show their plan change in the next invoice; given survival the
    # change probabilities are exactly expansion (if a dearer plan exists) and, failing that,
    # contraction (if a cheaper one exists).
    months = invoices[invoices["next"].notna()].copy()
    following = invoices.set_index(["customer_id", "timestamp"])["plan"]
    months["next_plan"] = following.reindex(pd.MultiIndex.from_frame(months[["customer_id", "next"]])).to_numpy()
    e = book.truth["expansion_rate"].reindex(months["customer_id"]).to_numpy()
    c = book.truth["contraction_rate"].reindex(months["customer_id"]).to_numpy()
    top = months["plan"].to_numpy() == len(CFG.plans) - 1
    bottom = months["plan"].to_numpy() == 0
    p_up = np.where(top, 0.0, e)
    p_down = np.where(bottom, 0.0, (1 - p_up) * c)
    delta = months["next_plan"].to_numpy() - months["plan"].to_numpy()
    assert set(np.unique(delta)) <= {-1, 0, 1}
    assert abs(z_score(delta == 1, p_up)) < Z
    assert abs(z_score(delta == -1, p_down)) < Z
    # Each billed change is announced by an upgrade/downgrade event in the month before it.
    ev = book.tables.events
    changes = ev[ev["event_type"].isin(["upgrade", "downgrade"])]
    announced = pd.merge_asof(
        changes.sort_values("timestamp"),
        invoices[["customer_id", "timestamp"]].sort_values("timestamp").rename(columns={"timestamp": "paid_at"}),
        left_on="timestamp", right_on="paid_at", by="customer_id", direction="backward",
    )
    key = pd.MultiIndex.from_frame(announced[["customer_id", "paid_at"]])
    kind = pd.Series(announced["event_type"].to_numpy(), index=key)
    billed = months.set_index(["customer_id", "timestamp"])
    billed = billed[billed["next_plan"] != billed["plan"]]
    assert billed.index.isin(kind.index).all()
    direction = np.where(kind.reindex(billed.index) == "upgrade", 1, -1)
    assert (direction == billed["next_plan"] - billed["plan"]).all()
    # After a cancel nothing changes plan until the customer is billed again.
    cancels = ev[ev["event_type"] == "cancel"].sort_values("timestamp")
    after = pd.merge_asof(
        cancels,
        changes.sort_values("timestamp").rename(columns={"timestamp": "changed_at"})[["customer_id", "changed_at"]],
        left_on="timestamp", right_on="changed_at", by="customer_id", direction="forward", allow_exact_matches=False,
    )
    after = pd.merge_asof(
        after.dropna(subset=["changed_at"]),
        invoices[["customer_id", "timestamp"]].sort_values("timestamp").rename(columns={"timestamp": "billed_at"}),
        left_on="timestamp", right_on="billed_at", by="customer_id", direction="forward",
    )
    assert len(after) > 0 and (after["billed_at"] < after["changed_at"]).all()


def test_cancel_rate_matches_the_hazard_by_tenure_plan_and_channel(book, invoices):
    # Each invoiced month is a Bernoulli trial with P(cancel) = 1 - exp(-h). Months starting in the
    # last 31 days of the period may end after it and are left out (their outcome is censored).
    months = invoices[invoices["timestamp"] < pd.Timestamp("2025-01-01") - 31 * DAY].copy()
    cancels = book.tables.events
    cancels = cancels[cancels["event_type"] == "cancel"].sort_values("timestamp")
    hit = pd.merge_asof(
        cancels,
        invoices[["customer_id", "timestamp"]].sort_values("timestamp").rename(columns={"timestamp": "paid_at"}),
        left_on="timestamp", right_on="paid_at", by="customer_id", direction="backward",
    )
    cancelled = pd.MultiIndex.from_frame(hit[["customer_id", "paid_at"]])
    months["cancelled"] = pd.MultiIndex.from_frame(months[["customer_id", "timestamp"]]).isin(cancelled)
    truth = book.truth.reindex(months["customer_id"])
    decay = (1.0 + np.minimum(months["tenure"].to_numpy(), CFG.hazard_decay_months)) ** -CFG.hazard_decay
    h = truth["hazard_scale"].to_numpy() * PLAN_EFFECT[months["plan"].to_numpy()] * decay
    months["p"] = 1 - np.exp(-h)
    months["channel"] = truth["channel"].to_numpy()
    months["band"] = pd.cut(months["tenure"], [-1, 0, 2, 11, 23, 10_000], labels=["0", "1-2", "3-11", "12-23", "24+"])
    cells = months.groupby(["band", "plan", "channel"], observed=True)
    z = cells.apply(lambda g: z_score(g["cancelled"], g["p"]))
    counts = cells.size()
    assert len(z) == 5 * 3 * 5 and (counts > 100).all()
    assert z.abs().max() < Z, z[z.abs() >= Z]
    # The observed rate does fall with tenure and is lowest on the dearest plan.
    rate = months.groupby("band", observed=True)["cancelled"].mean()
    assert rate.is_monotonic_decreasing
    by_plan = months.groupby("plan")["cancelled"].mean()
    assert by_plan.idxmin() == len(CFG.plans) - 1


def test_engagement_fades_and_tickets_rise_before_a_cancel(book):
    # Over the 30 days before the cutoff, customers who cancel in the next 60 days log in at their
    # rate times fade(d) = floor + (1 - floor) (d / fade_days)^power at d days before the cancel
    # (1 beyond fade_days), and file tickets at their rate times 1 + (boost - 1)(1 - d / fade_days).
    # Counts are Poisson: the standard error of a total is the square root of its expectation.
    cutoff = pd.Timestamp("2023-06-30")
    t0 = cutoff + DAY
    state = subscription_truth(book, cutoff=cutoff, max_months=1).customers
    # Two billed months before this one: the whole 30 days lie inside the running subscription.
    running = state.index[state["state"].isin(["active", "reactivated"]) & (state["tenure_months"].fillna(-1) >= 2)]
    ev = book.tables.events
    cancel = ev[(ev["event_type"] == "cancel") & (ev["timestamp"] >= t0)].groupby("customer_id")["timestamp"].min()
    days_to_cancel = ((cancel.reindex(running) - t0) / DAY).to_numpy()
    soon = days_to_cancel < 60
    assert soon.sum() > 300
    recent = ev[(ev["timestamp"] >= t0 - 30 * DAY) & (ev["timestamp"] < t0)]
    counts = pd.crosstab(recent["customer_id"], recent["event_type"]).reindex(running, fill_value=0)

    before = days_to_cancel[soon][:, None] + np.linspace(0, 30, 3001)[None, :]  # days before the cancel
    left = np.minimum(before / CFG.fade_days, 1.0)
    fade = (CFG.fade_floor + (1 - CFG.fade_floor) * left**CFG.fade_power).mean(axis=1) * 30
    boost = (1 + (CFG.support_boost - 1) * (1 - left)).mean(axis=1) * 30
    truth = book.truth.reindex(running[soon])
    checks = (("login", "login_rate_per_day", fade), ("support_ticket", "support_rate_per_day", boost))
    for event, rate, exposure in checks:
        expected = (truth[rate].to_numpy() * exposure).sum()
        without = truth[rate].sum() * 30
        observed = counts.loc[running[soon], event].sum()
        assert abs(observed - expected) < Z * np.sqrt(expected), (event, observed, expected)
        # A flat rate is rejected by the same rule.
        assert abs(observed - without) > Z * np.sqrt(without), (event, observed, without)


# --------------------------------------------------------------------------------------------------
# the truth at a cutoff


@pytest.fixture(scope="module")
def truth_2023(book):
    return subscription_truth(book, cutoff="2023-12-31", horizon_days=182, max_months=12)


def test_truth_covers_the_acquired_customers_with_decided_states(book, truth_2023):
    c = truth_2023.customers
    t0 = pd.Timestamp("2024-01-01")
    assert c.index.equals(book.truth.index[book.truth["acquired_at"] < t0])
    assert set(c["state"].unique()) == set(STATES)
    decided = c["state"].isin(["cancelled", "churned"])
    assert (c.loc[decided, "churn_probability"] == 1).all()
    assert ((c.loc[~decided, "churn_probability"] > 0) & (c.loc[~decided, "churn_probability"] < 1)).all()
    # A customer who has cancelled brings only what a later return brings.
    np.testing.assert_allclose(c.loc[decided, "clv"], c.loc[decided, "clv_reactivation"], rtol=1e-12)
    assert (c.loc[c["state"] == "churned", "expected_lifetime_days"] == 0).all()
    cancelled = c["state"] == "cancelled"
    np.testing.assert_allclose(
        c.loc[cancelled, "expected_lifetime_days"], (c.loc[cancelled, "next_billing_at"] - t0) / DAY
    )
    assert (c["next_billing_at"] >= t0).all() and (c["next_billing_at"] < t0 + 32 * DAY).all()
    assert c["tenure_months"].isna().eq(c["state"] == "churned").all()
    assert truth_2023.revenue_by_month.shape == (len(c), 12)
    assert (truth_2023.paying_by_month.to_numpy() <= 1 + 1e-12).all()
    assert (c[["expected_spend", "clv", "clv_reactivation"]] >= 0).all().all()


def test_truth_states_match_the_latent_path(book, truth_2023):
    c, truth = truth_2023.customers, book.truth
    t0 = pd.Timestamp("2024-01-01")
    cancelled_before = (truth["cancel_at"] < t0).reindex(c.index)
    assert (c.loc[~cancelled_before, "state"] == "active").all()
    assert (c.loc[cancelled_before, "state"] != "active").all()
    reactivated = c["state"] == "reactivated"
    assert (truth.loc[c.index[reactivated], "reactivated_at"] < t0).all()


def test_truth_churn_probability_matches_realised_cancels(book, truth_2023):
    c = truth_2023.customers
    t0 = pd.Timestamp("2024-01-01")
    ev = book.tables.events
    window = ev[(ev["event_type"] == "cancel") & (ev["timestamp"] >= t0) & (ev["timestamp"] < t0 + 182 * DAY)]
    running = c[c["state"].isin(["active", "reactivated"])].copy()
    running["cancelled"] = running.index.isin(window["customer_id"])
    assert abs(z_score(running["cancelled"], running["churn_probability"])) < Z
    running["band"] = pd.cut(running["tenure_months"].astype(float), [-1, 2, 11, 23, 10_000])
    cells = running.groupby(["plan", "band"], observed=True)
    z = cells.apply(lambda g: z_score(g["cancelled"], g["churn_probability"]))
    assert len(z) == 12 and (cells.size() > 150).all()
    assert z.abs().max() < Z, z


def test_truth_expected_spend_matches_realised_window_spend(book, truth_2023):
    c = truth_2023.customers
    t0 = pd.Timestamp("2024-01-01")
    tx = book.tables.transactions
    window = tx[(tx["timestamp"] >= t0) & (tx["timestamp"] < t0 + 182 * DAY)]
    actual = window.groupby("customer_id")["amount"].sum().reindex(c.index, fill_value=0.0)
    for state, rows in c.groupby("state"):
        realised = actual[rows.index]
        se = realised.std() / np.sqrt(len(rows))
        assert abs(rows["expected_spend"].mean() - realised.mean()) < Z * se, state
    # The first anniversary: P(paying) against the invoices actually issued on that day.
    issued = pd.MultiIndex.from_frame(tx[["customer_id", "timestamp"]])
    on_time = pd.MultiIndex.from_arrays([c.index, c["next_billing_at"]]).isin(issued)
    assert abs(z_score(on_time, truth_2023.paying_by_month[1])) < Z


def test_truth_without_plan_changes_or_returns_has_the_closed_form():
    # h constant per customer: P(cancel before t0 + H) = 1 - exp(-h u) with u the window in billing
    # months; spend = price * sum of exp(-h (1 - f + i)) over the anniversaries in the window;
    # CLV = m price gamma^(1-f) exp(-h (1 - f)) / (1 - gamma exp(-h)).
    cfg = SubscriptionConfig(hazard_decay=0.0, expansion_mean=0.0, contraction_mean=0.0, reactivation_share=0.0)
    small = generate_subscription(1_000, seed=3, config=cfg)
    cutoff, horizon, margin, rate = "2023-05-20", 100, 0.7, 0.08
    result = subscription_truth(
        small, cutoff=cutoff, horizon_days=horizon, gross_margin=margin, annual_discount_rate=rate
    )
    c = result.customers
    running = c[c["state"] == "active"]
    assert len(running) > 100
    t0 = pd.Timestamp(cutoff) + DAY
    t_end = t0 + horizon * DAY
    acquired = small.truth.loc[running.index, "acquired_at"]
    plan = running["plan"].map({p.name: i for i, p in enumerate(cfg.plans)}).to_numpy()
    h = small.truth.loc[running.index, "hazard_scale"].to_numpy() * PLAN_EFFECT[plan]
    price = running["plan"].map(PRICES).to_numpy()

    # Anniversaries with pandas' own month arithmetic (clips to the month end like the billing).
    months_since = (t0.year - acquired.dt.year) * 12 + t0.month - acquired.dt.month
    grid = np.array([
        [a + pd.DateOffset(months=int(k) + i) for i in range(-2, 6)] for a, k in zip(acquired, months_since)
    ], dtype="datetime64[ns]")
    start = np.array([row[row < t0.to_datetime64()][-1] for row in grid])
    stop = np.array([row[row >= t0.to_datetime64()][0] for row in grid])
    f = (t0.to_datetime64() - start) / (stop - start)
    assert (running["next_billing_at"].to_numpy() == stop).all()
    # Window length in billing months: the overlap of [t0, t_end) with each billing month.
    lo, hi = grid[:, :-1], grid[:, 1:]
    overlap = np.minimum(hi, t_end.to_datetime64()) - np.maximum(lo, t0.to_datetime64())
    overlap = np.clip(overlap, np.timedelta64(0), None)
    months_in_window = (overlap / (hi - lo)).sum(axis=1)
    # Spend: the anniversaries in [t0, t_end), the i-th future one (1 - f + i) months after t0.
    future = (grid >= t0.to_datetime64()) & (grid < t_end.to_datetime64())
    order = np.cumsum(grid >= t0.to_datetime64(), axis=1) - 1
    spend = (future * price[:, None] * np.exp(-h[:, None] * (1 - f[:, None] + order))).sum(axis=1)
    np.testing.assert_allclose(running["churn_probability"], 1 - np.exp(-h * months_in_window), rtol=1e-9)
    np.testing.assert_allclose(running["expected_spend"], spend, rtol=1e-9)
    gamma = (1 + rate) ** (-1 / 12)
    clv = margin * price * gamma ** (1 - f) * np.exp(-h * (1 - f)) / (1 - gamma * np.exp(-h))
    np.testing.assert_allclose(running["clv"], clv, rtol=1e-9)
    assert (running["clv_reactivation"].abs() < 1e-9 * running["clv"]).all()


def test_monthly_curve_discounts_to_the_closed_form_clv():
    # Two independent computations: the forward recursion month by month (with returns, plan changes
    # and the tenure decay) against the backward closed form. Beyond 1,200 months the discounted tail
    # is at most m * max price * gamma^1200 / (1 - gamma).
    small = generate_subscription(300, seed=5, config=SubscriptionConfig(reactivation_share=0.5))
    margin, rate, months = 0.8, 0.10, 1_200
    result = subscription_truth(
        small, cutoff="2023-08-31", gross_margin=margin, annual_discount_rate=rate, max_months=months
    )
    c = result.customers
    gamma = (1 + rate) ** (-1 / 12)
    t0 = pd.Timestamp("2023-09-01")
    acquired = small.truth.loc[c.index, "acquired_at"]
    # Fraction of the billing month elapsed at t0, from the previous anniversary (on the signup's
    # calendar: the previous month's day may have been clipped).
    k = (c["next_billing_at"].dt.year - acquired.dt.year) * 12 + c["next_billing_at"].dt.month - acquired.dt.month
    previous = pd.Series([a + pd.DateOffset(months=int(m) - 1) for a, m in zip(acquired, k)], index=c.index)
    f = ((t0 - previous) / (c["next_billing_at"] - previous)).to_numpy()
    discount = gamma ** ((1 - f)[:, None] + np.arange(months)[None, :])
    explicit = margin * (result.revenue_by_month.to_numpy() * discount).sum(axis=1)
    bound = margin * max(PRICES.values()) * gamma**months / (1 - gamma)
    gap = c["clv"].to_numpy() - explicit
    assert (gap > -1e-8 * c["clv"].to_numpy()).all() and (gap < bound).all(), (gap.min(), gap.max(), bound)
    assert c["clv_reactivation"][c["state"] == "active"].gt(0).all()


def test_truth_of_a_hand_made_book():
    cfg = SubscriptionConfig()
    ts = pd.Timestamp
    rows = [
        # A: active since 15 Oct 2023, growth plan, tenure 2 at the cutoff.
        ("A", [ts("2023-10-15 10:00"), ts("2023-11-15 10:00"), ts("2023-12-15 10:00")], 79.0),
        # B: starter since 20 Nov 2023, cancelled the day before the cutoff.
        ("B", [ts("2023-11-20 08:30"), ts("2023-12-20 08:30")], 29.0),
        # C: signed up 31 Jan 2023 (bills on 28 Feb, 31 Mar), cancelled in April, churned since.
        ("C", [ts("2023-01-31"), ts("2023-02-28"), ts("2023-03-31")], 199.0),
    ]
    tx = [(cid, t, amount) for cid, times, amount in rows for t in times]
    # D: monthly from 5 Jan 2022 to 5 May 2022, cancelled, back on 5 Aug 2022 and billed monthly to
    # 5 Dec 2023 (tenure 16), with an upgrade seen on 10 Dec 2023.
    d_first = pd.date_range("2022-01-01", periods=5, freq="MS") + pd.Timedelta(days=4)
    d_back = pd.date_range("2022-08-01", "2023-12-01", freq="MS") + pd.Timedelta(days=4)
    tx += [("D", t, 79.0) for t in d_first.append(d_back)]
    events = [
        ("B", ts("2023-12-30 12:00"), "cancel"),
        ("C", ts("2023-04-10"), "cancel"),
        ("D", ts("2022-05-20"), "cancel"),
        ("D", ts("2023-12-10"), "upgrade"),
        ("A", ts("2023-12-20"), "login"),
    ]
    transactions = pd.DataFrame(tx, columns=["customer_id", "timestamp", "amount"])
    transactions = transactions.sort_values("timestamp", ignore_index=True)
    transactions["customer_id"] = transactions["customer_id"].astype(STR)
    events = pd.DataFrame(events, columns=["customer_id", "timestamp", "event_type"])
    events = events.astype({"customer_id": STR, "event_type": STR})
    acquired = transactions.groupby("customer_id")["timestamp"].min()
    truth = pd.DataFrame(
        {
            "acquired_at": acquired,
            "hazard_scale": [0.05, 0.1, 0.2, 0.04],
            "expansion_rate": [0.02, 0.01, 0.0, 0.03],
            "contraction_rate": [0.01, 0.0, 0.05, 0.02],
        },
        index=pd.Index(acquired.index.astype(STR), name="customer_id"),
    )
    settings = {"kind": "subscription", "start": "2021-01-01", "end": "2024-12-31", "config": cfg.to_dict()}
    small = SyntheticBook(tables=Tables(transactions=transactions, events=events), truth=truth, settings=settings)
    result = subscription_truth(small, cutoff="2023-12-31", horizon_days=182)
    c = result.customers

    assert c["state"].to_dict() == {"A": "active", "B": "cancelled", "C": "churned", "D": "reactivated"}
    assert c["plan"].to_dict() == {"A": "growth", "B": "starter", "C": "scale", "D": "growth"}
    assert c["tenure_months"].tolist()[:2] == [2, 1] and pd.isna(c.loc["C", "tenure_months"])
    assert c.loc["D", "tenure_months"] == 16
    assert c["next_billing_at"].tolist() == [
        ts("2024-01-15 10:00"), ts("2024-01-20 08:30"), ts("2024-01-31"), ts("2024-01-05"),
    ]
    # B cancelled: nothing more from this subscription, its access ends on 20 Jan.
    assert c.loc["B", "churn_probability"] == 1
    assert result.paying_by_month.loc["B", 1] == 0
    assert c.loc["B", "expected_lifetime_days"] == pytest.approx((ts("2024-01-20 08:30") - ts("2024-01-01")) / DAY)
    # C churned at 30 Apr 2023 and missed the chances of 31 May .. 31 Dec: P(returner) is
    # rho (1 - a)^8 / (rho (1 - a)^8 + 1 - rho); at the first anniversary P(paying) = a P(returner).
    rho, a = cfg.reactivation_share, cfg.reactivation_rate
    p_returner = rho * (1 - a) ** 8 / (rho * (1 - a) ** 8 + 1 - rho)
    assert result.paying_by_month.loc["C", 1] == pytest.approx(a * p_returner, rel=1e-12)
    assert result.revenue_by_month.loc["C", 1] == pytest.approx(199.0 * a * p_returner, rel=1e-12)
    # D's upgrade applies from the next invoice: paying customers then pay the scale price.
    assert result.revenue_by_month.loc["D", 1] / result.paying_by_month.loc["D", 1] == pytest.approx(199.0)
    # A: P(paying at the next anniversary) = exp(-h (1 - f)) with f the elapsed share of the month.
    f = (ts("2024-01-01") - ts("2023-12-15 10:00")) / (ts("2024-01-15 10:00") - ts("2023-12-15 10:00"))
    h = 0.05 * cfg.plans[1].hazard_effect * (1 + 2) ** -cfg.hazard_decay
    assert result.paying_by_month.loc["A", 1] == pytest.approx(np.exp(-h * (1 - f)), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# the truth of new customers


def test_new_customer_truth_monte_carlo_agrees_with_the_exact_series():
    # One plan, constant hazard, no plan change, no return: for a gamma frailty F (shape k, mean 1)
    # and hazard b F, E[exp(-b F t)] = (1 + b t / k)^-k, so over the company-size mixture
    #   CLV = m price sum_j gamma^j E[exp(-h j)],  P(cancel within u months) = 1 - E[exp(-h u)].
    channel = SubscriptionChannel(name="only", share=1.0, cac_median=300.0, cac_sigma=0.4,
                                  plan_mix=(0.0, 1.0, 0.0), hazard_effect=1.3, cac_growth_per_year=0.05)
    cfg = SubscriptionConfig(channels=(channel,), hazard_decay=0.0, expansion_mean=0.0, contraction_mean=0.0,
                             reactivation_share=0.0)
    small = generate_subscription(10, seed=0, config=cfg)
    margin, rate = 0.75, 0.12
    # Signup on 1 Jan 2024: 182 days later is 1 Jul 2024, the sixth anniversary (u = 6 months).
    result = new_customer_truth(small, acquired_at="2024-01-01", horizon_days=182, gross_margin=margin,
                                annual_discount_rate=rate, draws=40_000, seed=1)
    row = result.loc["only"]
    gamma = (1 + rate) ** (-1 / 12)
    k = cfg.frailty_shape
    shares = np.array([s.share for s in cfg.company_sizes]) / sum(s.share for s in cfg.company_sizes)
    b = cfg.hazard_base * channel.hazard_effect * cfg.plans[1].hazard_effect * np.array(
        [s.hazard_effect for s in cfg.company_sizes])

    def survival(t):
        return (shares * (1 + b * t / k) ** -k).sum()

    j = np.arange(20_000)
    price = cfg.plans[1].price
    clv = margin * price * np.sum(gamma**j * (shares[:, None] * (1 + b[:, None] * j / k) ** -k).sum(axis=0))
    assert abs(row["clv"] - clv) < Z * row["clv_se"]
    assert row["clv_se"] < 0.01 * clv
    assert abs(row["churn_probability"] - (1 - survival(6.0))) < Z * row["churn_probability_se"]
    spend = price * sum(survival(float(i)) for i in range(6))
    assert abs(row["expected_spend"] - spend) < Z * row["expected_spend_se"]
    years = (pd.Timestamp("2024-01-01") - pd.Timestamp("2021-01-01")) / pd.Timedelta(days=365.25)
    cac = 300.0 * 1.05**years * np.exp(0.4**2 / 2)
    assert row["acquisition_cost"] == pytest.approx(cac, rel=1e-12)
    assert row["ltv_cac"] == pytest.approx(row["clv"] / cac, rel=1e-12)


def test_new_customer_truth_by_channel_spreads_ltv_to_cac(book):
    result = new_customer_truth(book, acquired_at="2023-12-31", draws=5_000)
    assert list(result.index) == [c.name for c in CFG.channels]
    assert (result["ltv_cac"] - Z * result["ltv_cac_se"]).max() > 3
    assert (result["ltv_cac"] + Z * result["ltv_cac_se"]).min() < 1
    # Cheaper churn, dearer plans: partner customers are worth more than paid-social ones.
    assert result.loc["partner", "clv"] - result.loc["paid_social", "clv"] > Z * (
        result.loc["partner", "clv_se"] + result.loc["paid_social", "clv_se"])


# --------------------------------------------------------------------------------------------------
# boundaries


def test_write_and_read_book_round_trip(tmp_path):
    small = generate_subscription(800, seed=5)
    back = read_book(write_book(small, tmp_path / "book"))
    meta = json.loads((tmp_path / "book" / "dataset.json").read_text())
    assert meta["settings"]["kind"] == "subscription"
    for name in ("transactions", "events", "customers"):
        pd.testing.assert_frame_equal(getattr(back.tables, name), getattr(small.tables, name))
    pd.testing.assert_frame_equal(back.truth, small.truth)
    assert SubscriptionConfig.from_dict(back.settings["config"]) == SubscriptionConfig()
    a = subscription_truth(small, cutoff="2023-06-30", max_months=6)
    b = subscription_truth(back, cutoff="2023-06-30", max_months=6)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    pd.testing.assert_frame_equal(a.revenue_by_month, b.revenue_by_month)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"n_customers": 10, "start": "2024-01-01", "end": "2023-01-01"}, "before start"),
        ({"n_customers": 10, "config": SubscriptionConfig(reactivation_share=1.5)}, "reactivation_share"),
        ({"n_customers": 10, "config": SubscriptionConfig(frailty_shape=0.4)}, "login_frailty_elasticity"),
        ({"n_customers": 10, "config": SubscriptionConfig(channels=(
            SubscriptionChannel(name="x", share=1.0, cac_median=1.0, cac_sigma=0.0, plan_mix=(1.0,)),))}, "plan_mix"),
    ],
)
def test_invalid_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_subscription(**kwargs)


def test_truth_refuses_other_books_and_cutoffs_outside_the_period(book):
    with pytest.raises(ValueError, match="generate_subscription"):
        subscription_truth(generate(50, seed=1), cutoff="2023-01-01")
    with pytest.raises(ValueError, match="outside"):
        subscription_truth(book, cutoff="2025-03-01")
    with pytest.raises(ValueError, match="horizon_days"):
        subscription_truth(book, cutoff="2023-01-01", horizon_days=0)
