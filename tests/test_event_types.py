"""Event types beyond features.event_types: reported, the usable ones taken into the engagement features."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from features.build import build_features
from features.config import DEFAULT_EVENT_TYPES, FeatureConfig
from features.contract import Tables
from features.event_types import MIN_CUSTOMERS, resolve_event_types
from features.synthetic import generate

CUTOFF = "2023-06-30"


@pytest.fixture(scope="module")
def retail():
    return generate(1_200, seed=5).tables


def _with_events(tables: Tables, rows: list[tuple[str, str, str]]) -> Tables:
    extra = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"]).astype(
        {"customer_id": "str", "event_type": "str", "timestamp": "datetime64[ns]"}
    )
    events = pd.concat([tables.events, extra], ignore_index=True)
    return Tables(transactions=tables.transactions, events=events, customers=tables.customers)


def test_a_retail_book_keeps_its_feature_settings_and_features(retail):
    config = FeatureConfig()
    resolved, report = resolve_event_types(config, retail.events, cutoff=CUTOFF)
    assert resolved is config and report.unknown_events == 0 and report.message() == ""
    assert resolved.event_types == DEFAULT_EVENT_TYPES


def test_usable_types_are_added_and_the_others_reported(retail):
    ids = retail.transactions["customer_id"].drop_duplicates().to_numpy()[: MIN_CUSTOMERS + 2]
    rows = [(cid, "2023-05-01", "login") for cid in ids for _ in range(2)]
    rows += [(ids[0], "2023-05-02", "Page View")] * 3  # not snake case
    rows += [(cid, "2023-05-03", "webinar") for cid in ids[: MIN_CUSTOMERS - 1]]  # too few customers
    rows += [(cid, "2023-08-01", "survey") for cid in ids]  # after the cutoff: not read
    tables = _with_events(retail, rows)
    resolved, report = resolve_event_types(FeatureConfig(), tables.events, cutoff=CUTOFF)
    assert resolved.event_types == (*DEFAULT_EVENT_TYPES, "login")
    assert report.added == {"login": 2 * len(ids)}
    assert report.ignored == {"webinar": MIN_CUSTOMERS - 1, "Page View": 3}
    assert report.unknown_events == 2 * len(ids) + 3 + MIN_CUSTOMERS - 1
    assert "login (24)" in report.message() and "'Page View' (3)" in report.message()
    # The login counts are engagement features now, and the configured ones did not move.
    before = build_features(tables, cutoff=CUTOFF, config=FeatureConfig())
    after = build_features(tables, cutoff=CUTOFF, config=resolved)
    assert after.loc[ids[0], "login_count"] == 2 and (after["login_count"] > 0).sum() == len(ids)
    pd.testing.assert_frame_equal(after[before.columns], before)
    # Switched off: reported, nothing added.
    kept, report = resolve_event_types(FeatureConfig(event_types_from_data=False), tables.events, cutoff=CUTOFF)
    assert kept.event_types == DEFAULT_EVENT_TYPES and "login" in report.ignored


def test_training_runs_tag_and_warn_about_unknown_types(retail, caplog):
    from training.config import load_config
    from training.pipeline import resolve_for_data

    ids = retail.transactions["customer_id"].drop_duplicates().to_numpy()[:MIN_CUSTOMERS]
    tables = _with_events(retail, [(cid, "2023-05-01", "login") for cid in ids])
    with caplog.at_level(logging.WARNING, logger="training.pipeline"):
        config, notes = resolve_for_data(load_config(environ={}), tables, cutoff=pd.Timestamp(CUTOFF))
    assert "login" in config.features.event_types
    assert notes["unknown_events"] == str(len(ids)) and notes["event_types_added"] == "login"
    assert any("taken into the engagement features: login" in r.getMessage() for r in caplog.records)
    _, notes = resolve_for_data(load_config(environ={}), retail, cutoff=pd.Timestamp(CUTOFF))
    assert notes["unknown_events"] == "0" and notes["event_types_added"] == ""


def test_clvcast_features_reports_and_takes_in_the_types(retail, tmp_path, capsys):
    from serving.cli import main

    ids = retail.transactions["customer_id"].drop_duplicates().to_numpy()[:MIN_CUSTOMERS]
    tables = _with_events(retail, [(cid, "2023-05-01", "login") for cid in ids] + [("x", "2023-05-01", "Bad Type")])
    data = tmp_path / "book"
    data.mkdir()
    tables.transactions.to_csv(data / "transactions.csv", index=False)
    tables.events.to_csv(data / "events.csv", index=False)
    tables.customers.to_csv(data / "customers.csv", index=False)
    out = tmp_path / "features.parquet"
    assert main(["features", "--data", str(data), "--cutoff", CUTOFF, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"event types: {MIN_CUSTOMERS + 1} event(s) of types not in features.event_types" in err
    assert "login (10)" in err and "'Bad Type' (1)" in err
    frame = pd.read_parquet(out)
    assert frame["login_count"].sum() == MIN_CUSTOMERS
