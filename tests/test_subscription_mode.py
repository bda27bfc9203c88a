"""Subscription mode: ``business: subscription`` in the config, the contractual scores and the SaaS tables."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pandas as pd
import pytest

from features.subscription import detect_business
from features.synthetic import generate_subscription
from serving.cli import main
from serving.scores import read_scores
from serving.subscription_mode import (
    CLV_CROSS_CHECK,
    SAAS_TABLES,
    contractual_settings,
    saas_tables,
    subscription_scores,
    write_frames,
)
from training.config import ConfigError, load_config


def test_auto_is_the_default_and_subscription_churns_by_cancelling(tmp_path):
    assert load_config(environ={}).business == "auto"
    assert load_config(environ={}).training.churn_definition == "purchase"
    path = tmp_path / "config.yaml"
    path.write_text("business: subscription\nsubscription:\n  plans: {starter: 29, growth: 79}\n  billing_months: 1\n")
    config = load_config(path, environ={})
    assert config.business == "subscription" and config.training.churn_definition == "cancel"
    assert config.subscription.plans == {"starter": 29.0, "growth": 79.0}
    assert config.to_flat_dict()["business"] == "subscription"


def test_business_from_the_environment_and_flags():
    assert load_config(environ={"CLVCAST_BUSINESS": "subscription"}).business == "subscription"
    assert load_config(environ={"CLVCAST_BUSINESS": "subscription"}, business="retail").business == "retail"
    assert load_config(environ={}, billing_months=12).subscription.billing_months == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"business": "wholesale"}, "config business"),
        ({"business": "subscription", "churn_definition": "purchase"}, "churn_definition must be 'cancel'"),
        ({"subscription__segment_by": ["plan", "size"]}, "config subscription.segment_by"),
        ({"billing_months": 0}, "config subscription.billing_months"),
    ],
)
def test_bad_subscription_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={}, **overrides)


# --------------------------------------------------------------------------- score and budget outputs

SAAS_CONFIG = {"business": "subscription", "subscription__plans": {"starter": 29, "growth": 79, "scale": 199},
               "gross_margin": 0.8}


@pytest.fixture(scope="module")
def saas_book():
    return generate_subscription(2_000, seed=9, end="2023-12-31")


def test_settings_follow_the_config():
    config = load_config(environ={}, **SAAS_CONFIG, cost_to_serve=6.0, horizon_days=91)
    settings = contractual_settings(config)
    assert (settings.horizon_days, settings.gross_margin, settings.plans["scale"]) == (91, 0.8, 199.0)
    assert settings.cost_to_serve == pytest.approx(6.0 * (365.2425 / 12) / 91)  # per horizon -> per month
    assert contractual_settings(config, horizon_days=182).horizon_days == 182
    assert contractual_settings(load_config(environ={}, late_tenure_periods=0)).late_tenure_periods == 0
    assert contractual_settings(load_config(environ={}, grace_days=3)).grace_days == 3
    assert settings.survival == "frailty"
    sbg = contractual_settings(load_config(environ={}, survival="sbg", hazard_bands=[0, 1, 6]))
    assert (sbg.survival, sbg.hazard_bands) == ("sbg", (0, 1, 6))


def test_saas_tables_are_written_as_csv(saas_book, tmp_path):
    config = load_config(environ={}, **SAAS_CONFIG)
    frames = saas_tables(saas_book.tables, cutoff="2023-11-30", config=config)
    assert tuple(frames) == SAAS_TABLES
    written = write_frames(frames, tmp_path / "budget")
    bridge = pd.read_csv(written["mrr_bridge"])
    parts = bridge[["new", "expansion", "contraction", "churned", "reactivated", "adjustment"]].sum(axis=1)
    np.testing.assert_allclose(bridge["mrr_start"] + parts, bridge["mrr"])
    retention = pd.read_csv(written["retention"])
    assert {"base_month", "channel", "grr", "nrr"} <= set(retention.columns)
    assert retention["grr"].between(0, 1).all() and (retention["nrr"] >= retention["grr"]).all()
    assert set(pd.read_csv(written["new_subscriber_clv"])["channel"]) == set(saas_book.tables.customers["channel"])


def test_subscription_scores_cover_every_subscriber(saas_book):
    config = load_config(environ={}, **SAAS_CONFIG)
    scores = subscription_scores(saas_book.tables, cutoff="2023-06-30", config=config)
    invoiced = saas_book.tables.transactions.loc[saas_book.tables.transactions["timestamp"] < "2023-07-01"]
    assert set(scores["customer_id"]) == set(invoiced["customer_id"])
    decided = scores["state"].isin(["cancelled_paid_through", "churned"])
    assert (scores.loc[decided, "churn_probability"] == 1).all() and (scores.loc[decided, "clv"] == 0).all()
    assert scores.loc[~decided, "churn_probability"].between(0, 1).all() and (scores.loc[~decided, "clv"] > 0).all()


@pytest.mark.slow
def test_score_and_budget_write_the_subscription_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    # No business in the config: the training run detects the subscription book, score follows its champion.
    (tmp_path / "config.yaml").write_text(
        "subscription: {plans: {starter: 29, growth: 79, scale: 199}}\n"
        "clv: {gross_margin: 0.8}\n"
        "training:\n  churn_params: {num_boost_round: 20}\n  spend_params: {num_boost_round: 20}\n"
        "  early_stopping_rounds: 5\n  n_cutoffs: 3\n  step_days: 30\n"
        # The subscribers' figures are the contractual model's: the refit is not checked here.
        "  refit: false\n"
    )
    data, config = tmp_path / "saas", str(tmp_path / "config.yaml")
    assert main(["generate", "--kind", "subscription", "--customers", "300", "--seed", "2", "--out", str(data)]) == 0
    assert main(["train", "--data", str(data), "--config", config]) == 0, capsys.readouterr().err
    import mlflow

    (run,) = mlflow.search_runs(experiment_names=["clvcast"], output_format="list")
    tags = run.data.tags
    assert (tags["business"], tags["business_source"]) == ("subscription", "detected"), tags
    assert run.data.params["training.churn_definition"] == "cancel"
    assert "login" in tags["event_types_added"].split(",") and int(tags["unknown_events"]) > 0
    out = tmp_path / "scores.csv"
    assert main(["score", "--data", str(data), "--cutoff", "2024-12-31", "--out", str(out), "--config", config]) == 0
    err = capsys.readouterr().err
    assert f"its detail in {tmp_path / 'scores_subscription.csv'}" in err
    contractual = pd.read_csv(tmp_path / "scores_subscription.csv", dtype={"customer_id": "str"})
    assert {"customer_id", "state", "churn_probability", "clv", "clv_classic"} <= set(contractual.columns)
    # The main scores carry the contractual churn, spend and CLV of every subscriber.
    scores = read_scores(out)
    assert scores.run.business == "subscription" and scores.run.contractual is not None
    main_rows = scores.frame.set_index("customer_id").loc[contractual["customer_id"]]
    for column in ("churn_probability", "expected_spend", "clv", "clv_classic", "p_alive"):
        np.testing.assert_allclose(main_rows[column].to_numpy(), contractual[column].to_numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(main_rows["subscription_state"].to_numpy(dtype=object),
                                  contractual["state"].to_numpy(dtype=object))
    decided = main_rows["subscription_state"].isin(["cancelled_paid_through", "churned"]).to_numpy()
    assert decided.any() and (main_rows.loc[decided, "churn_probability"] == 1).all()
    assert (main_rows.loc[decided, ["expected_spend", "clv", "clv_upper", "p_alive"]] == 0).all().all()
    assert not main_rows.loc[decided, "rfm_segment"].isin(["loyal", "champions", "potential_loyalist"]).any()
    assert ((main_rows["clv_lower"] <= main_rows["clv"]) & (main_rows["clv"] <= main_rows["clv_upper"])).all()
    budget = tmp_path / "budget"
    code = main(["budget", "--data", str(data), "--scores", str(out), "--out", str(budget), "--config", config])
    assert code == 0, capsys.readouterr().err
    assert all((budget / f"{name}.csv").exists() for name in (*SAAS_TABLES, CLV_CROSS_CHECK))
    assert (budget / "channels.csv").exists()  # the retail outputs are still there
    # The new subscriber's CLV of /acquisition_budget is the contractual model's, as in new_subscriber_clv.csv.
    new = pd.read_csv(budget / "new_customer_clv.csv", dtype={"channel": "str"}).set_index("channel")
    subscriber = pd.read_csv(budget / "new_subscriber_clv.csv", dtype={"channel": "str"}).set_index("channel")
    assert (new["basis"] == "contractual").all()
    np.testing.assert_allclose(new.loc[subscriber.index, "new_customer_clv"], subscriber["clv"], rtol=1e-4)
    report = (budget / "report.html").read_text()
    assert all(f'id="{t}"' in report for t in ("saas_mrr", "saas_churn", "saas_retention", "saas_new", "saas_payback",
                                                   "saas_classic"))

    # The service answers the same contractual figures over HTTP (BentoML on loopback).
    from features.io import load_tables
    from serving.service import running_service
    from test_service import request_body

    tables = load_tables(data).tables
    by_state = main_rows.reset_index().groupby("subscription_state")["customer_id"].first()
    ids = [by_state["active"], by_state["cancelled_paid_through"], by_state["churned"]]
    with running_service(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], scores=out,
                         new_customer_clv=budget / "new_customer_clv.csv", ready_timeout=180) as server:
        answer = httpx.post(f"{server.url}/clv", json=request_body(tables, ids, as_of="2024-12-31"), timeout=60)
        assert answer.status_code == 200, answer.text
        channel = str(new.index[0])
        budget_answer = httpx.post(f"{server.url}/acquisition_budget",
                                   json={"channels": [{"channel": channel, "cac": 100.0}]}, timeout=60)
    served = {c["customer_id"]: c for c in answer.json()["customers"]}
    for cid in ids:
        for column in ("churn_probability", "expected_spend", "clv", "clv_lower", "clv_upper", "p_alive"):
            assert served[cid][column] == pytest.approx(main_rows.loc[cid, column], rel=1e-6, abs=1e-9), (cid, column)
        assert served[cid]["subscription_state"] == main_rows.loc[cid, "subscription_state"]
    assert served[ids[1]]["churn_probability"] == 1 and served[ids[1]]["clv"] == 0
    assert served[ids[1]]["segment"]["rfm_segment"] == "cancelled"
    assert budget_answer.status_code == 200, budget_answer.text
    assert budget_answer.json()["channels"][0]["new_customer_clv"] == pytest.approx(new.loc[channel, "new_customer_clv"])


def test_the_mode_is_detected_from_the_data_and_stated(saas_book, caplog):
    from features.synthetic import generate
    from training.pipeline import resolve_for_data

    business, evidence = detect_business(saas_book.tables, cutoff="2023-06-30")
    assert business == "subscription" and "billed every month or year" in evidence and "cancel events" in evidence
    retail = generate(1_500, seed=4)
    assert detect_business(retail.tables, cutoff="2023-06-30")[0] == "retail"
    with caplog.at_level("INFO", logger="training.pipeline"):
        config, notes = resolve_for_data(load_config(environ={}), saas_book.tables, cutoff=pd.Timestamp("2023-06-30"))
    assert config.business == "subscription" and config.training.churn_definition == "cancel"
    assert notes["business"] == "subscription" and notes["business_source"] == "detected"
    assert notes["business_evidence"] == evidence
    assert any("business mode subscription, detected" in r.getMessage() for r in caplog.records)
    # The configuration decides when it says: no detection.
    kept, notes = resolve_for_data(load_config(environ={}, business="retail"), saas_book.tables,
                                   cutoff=pd.Timestamp("2023-06-30"))
    assert kept.business == "retail" and notes["business_source"] == "config"
    config, _ = resolve_for_data(load_config(environ={}), retail.tables, cutoff=pd.Timestamp("2023-06-30"))
    assert config.business == "retail" and config.training.churn_definition == "purchase"


def test_a_plan_column_makes_a_subscription_book(saas_book):
    tables = saas_book.tables
    with_plan = type(tables)(transactions=tables.transactions.assign(plan="starter"), events=None,
                             customers=tables.customers)
    business, evidence = detect_business(with_plan, cutoff="2023-06-30")
    assert business == "subscription" and evidence.startswith("transactions carry a 'plan' column")
