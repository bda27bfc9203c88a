"""Customers known at a cutoff by kind, and the prospects' first-purchase rates, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from features.population import customer_population
from serving.prospects import fit_prospects
from training.config import ClvConfig


def _tables(tx, events=(), customers=()) -> Tables:
    def frame(rows, columns, stamps):
        out = pd.DataFrame(list(rows), columns=columns)
        out["customer_id"] = out["customer_id"].astype("str")
        for c in stamps:
            out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")
        return out

    return Tables(
        transactions=frame(tx, ["customer_id", "timestamp", "amount"], ["timestamp"]),
        events=frame(events, ["customer_id", "timestamp", "event_type"], ["timestamp"]),
        customers=frame(customers, ["customer_id", "acquired_at", "channel"], ["acquired_at"]).astype(
            {"channel": "str"}
        ),
    )


def test_every_customer_of_every_table_has_a_kind():
    tables = _tables(
        tx=[("A", "2024-03-01", 50.0), ("B", "2024-04-01", -30.0), ("C", "2024-07-15", 80.0),
            ("G", "2024-02-01", 0.0), ("H", "2024-08-01", 5.0)],
        events=[("D", "2024-06-01", "session"), ("X", "2024-06-20", "email_open")],
        customers=[("A", "2024-03-01", "search"), ("B", "2024-01-01", "search"), ("C", "2024-07-15", "social"),
                   ("D", "2024-05-01", "social"), ("E", "2024-06-01", "social"), ("U", None, "social")],
    )  # fmt: skip
    population = customer_population(tables, cutoff="2024-06-30", engagement_days=30)
    assert population["kind"].to_dict() == {
        "A": "buyer", "B": "refund_only", "C": "acquired_after_cutoff", "D": "events_only", "E": "no_activity",
        "G": "buyer",  # a zero amount is a purchase, as in the features
        "H": "acquired_after_cutoff",  # no acquired_at: its first transaction, after the cutoff
        "U": "unknown_acquisition", "X": "events_only",
    }  # fmt: skip
    assert population.loc["X", "acquired_at"] == pd.Timestamp("2024-06-20")  # first event, without a customers row
    assert population.loc["B", "acquired_at"] == pd.Timestamp("2024-01-01")
    assert population["recent_events"].to_dict()["X"] == 1 and population["recent_events"].to_dict()["D"] == 1
    # Where every customers row is a customer (a POST /clv request), an undated one is known.
    named = customer_population(tables, cutoff="2024-06-30", undated_known=True)
    assert named.loc["U", "kind"] == "no_activity" and named.loc["C", "kind"] == "acquired_after_cutoff"


def test_nothing_after_the_cutoff_changes_a_known_customer():
    base = dict(tx=[("A", "2024-03-01", 5.0)], customers=[("E", "2024-06-01", "x")])
    later = dict(tx=[("A", "2024-03-01", 5.0), ("E", "2024-07-02", 9.0)], customers=[("E", "2024-06-01", "x")])
    before = customer_population(_tables(**base), cutoff="2024-06-30")
    after = customer_population(_tables(**later), cutoff="2024-06-30")
    pd.testing.assert_frame_equal(before, after)


def test_prospect_rates_count_conversions_in_the_window_after_each_origin():
    # One origin (horizon 100 days before 2024-12-31 = 2024-09-22): ten prospects acquired in
    # January, four of them engaged. Three convert (two engaged), spending 10, 20 and 30.
    customers = [(f"P{i}", "2024-01-10", "web") for i in range(10)]
    events = [(f"P{i}", "2024-09-01", "session") for i in range(4)]
    tx = [("P0", "2024-10-01", 10.0), ("P1", "2024-10-05", 20.0), ("P5", "2024-11-01", 30.0),
          ("P6", "2025-02-01", 99.0)]  # fmt: skip  # P6 after the scoring date: never read
    model = fit_prospects(_tables(tx, events, customers), as_of="2024-12-31", horizon_days=100, n_origins=1)
    assert model is not None
    assert (model.prospects, model.converted, model.spend_if_converted) == (10, 3, 20.0)
    cells = {(c.channel, c.engaged): (c.prospects, c.converted) for c in model.cells}
    assert cells == {("web", False): (6, 1), ("web", True): (4, 2)}
    # Shrinkage with 10 pseudo-trials: class towards the pool (0.3), cell towards its class.
    pooled = 0.3
    engaged_class = (2 + 10 * pooled) / (4 + 10)
    engaged_cell = (2 + 10 * engaged_class) / (4 + 10)
    q = model.conversion(np.array(["web", "other"], dtype=object), np.array([True, True]))
    assert q == pytest.approx([engaged_cell, engaged_class])

    clv = ClvConfig(gross_margin=0.5, cost_to_serve=1.0)
    cols = model.columns(np.array(["web"], dtype=object), np.array([True]), horizon_days=100, clv=clv)
    assert cols["churn_probability"][0] == pytest.approx(1 - engaged_cell)
    assert cols["clv"][0] == pytest.approx(engaged_cell * (0.5 * 20.0 - 1.0))
    with pytest.raises(ValueError, match="horizon_days=100"):
        model.columns(np.array(["web"], dtype=object), np.array([True]), horizon_days=90, clv=clv)


def test_no_prospect_at_any_origin_gives_no_model():
    tables = _tables(tx=[("A", "2024-01-01", 5.0), ("A", "2024-06-01", 5.0)], customers=[("A", "2024-01-01", "x")])
    assert fit_prospects(tables, as_of="2024-06-30", horizon_days=30) is None
