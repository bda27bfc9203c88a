"""MLflow registry and the champion rule, on the temporary tracking store of the test session.

Nothing else in the suite registers models, so the first training run here meets an empty registry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import registry
from training.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _own_store(module_mlflow_store):
    """This module's champions are its own (:func:`conftest.module_mlflow_store`)."""
    return module_mlflow_store


SMALL = dict(
    horizon_days=91,
    n_cutoffs=3,
    step_days=30,
    early_stopping_rounds=10,
    training__churn_params__num_boost_round=40,
    training__spend_params__num_boost_round=40,
)


@pytest.fixture(scope="module")
def book():
    from features.synthetic import generate

    return generate(1500, seed=5, start="2021-01-01", end="2022-12-31")


@pytest.fixture(scope="module")
def good(book):
    from training.pipeline import train

    return train(book.tables, config=load_config(**SMALL))


@pytest.fixture(scope="module")
def bad(good, book):
    """A deliberately weak pair: one stump per model."""
    from training.pipeline import train

    weak = load_config(
        **{**SMALL, "training__churn_params__num_boost_round": 1, "training__spend_params__num_boost_round": 1},
        training__churn_params__num_leaves=2,
        training__spend_params__num_leaves=2,
    )
    return train(book.tables, config=weak)


# --------------------------------------------------------------------------- the rule itself


def test_rule_without_champion_promotes():
    assert registry.champion_decision({"mae": 5.0, "churn_auc": 0.5}, None).promote


@pytest.mark.parametrize(
    "new, promote",
    [
        ({"mae": 10.0, "churn_auc": 0.80}, True),  # equal
        ({"mae": 10.09, "churn_auc": 0.796}, True),  # within tolerance
        ({"mae": 10.2, "churn_auc": 0.85}, False),  # MAE 2% worse
        ({"mae": 9.0, "churn_auc": 0.79}, False),  # AUC 0.01 worse
    ],
)
def test_rule_tolerances(new, promote):
    decision = registry.champion_decision(new, {"mae": 10.0, "churn_auc": 0.80})
    assert decision.promote is promote
    assert "MAE" in decision.reason and "AUC" in decision.reason
    # A slightly higher MAE can be "not worse": the reason says by which rule.
    assert "(the rule: MAE at most 1% above the champion's, AUC at most 0.005 below)" in decision.reason


def test_other_business_modes_or_churn_definitions_are_not_compared():
    retail = {"business": "retail", "churn_definition": "purchase"}
    assert registry.mode_decision(retail, dict(retail)) is None
    for other in ({"business": "subscription", "churn_definition": "cancel"},
                  {"business": "retail", "churn_definition": "cancel"}):
        decision = registry.mode_decision(other, retail)
        assert not decision.promote and "not comparable" in decision.reason and "force" in decision.reason
        assert "churn_definition 'purchase' vs this run's 'cancel'" in decision.reason


# --------------------------------------------------------------------------- with a registry


def test_first_run_becomes_champion(good):
    assert good.promoted and good.reason == "no current champion"
    champion = registry.load_champion()
    assert (champion.churn_version, champion.spend_version) == (good.churn_version, good.spend_version)
    assert champion.run_id == good.run_id
    info = champion.describe()
    assert info["horizon_days"] == 91 and info["holdout_metrics"]["clvcast"]["mae"] == good.metrics["clvcast"]["mae"]
    assert champion.btyd_params  # what serving needs to rebuild BTYD features
    assert champion.serving.encoder.columns


def test_run_logs_params_metrics_and_artifacts(good):
    import mlflow

    run = mlflow.get_run(good.run_id)
    assert run.data.params["training.horizon_days"] == "91"
    for prefix in ("clvcast_", "btyd_", "naive_"):
        assert f"{prefix}mae" in run.data.metrics and f"{prefix}churn_auc" in run.data.metrics
    assert run.data.tags["data.hash"] and run.data.tags["cutoff"] == str(good.cutoff)
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(good.run_id)}
    assert {"metrics.json", "plots", "tables", "clvcast"} <= names
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(good.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in (
        "calibration", "cumulative_gains", "deciles", "feature_importance",
        "btyd_frequency_recency", "btyd_calibration_holdout", "btyd_tracking",
    )}  # fmt: skip


def test_reload_of_champion_alias_gives_same_predictions(good, book):
    import mlflow.lightgbm

    from features.build import build_features

    features = build_features(book.tables, cutoff=good.cutoff, config=load_config(**SMALL).features)
    X = good.models.transform(features)
    churn = mlflow.lightgbm.load_model(f"models:/{registry.CHURN_MODEL}@{registry.ALIAS}")
    np.testing.assert_array_equal(churn.predict_proba(X), good.models.churn_model_.predict_proba(X))
    champion = registry.load_champion()
    pd.testing.assert_frame_equal(champion.models.predict(features), good.models.predict(features))


def test_worse_model_does_not_move_the_alias(good, bad):
    assert not bad.promoted, bad.reason
    assert bad.reason.startswith("worse than the champion")
    assert bad.metrics["clvcast"]["mae"] > good.metrics["clvcast"]["mae"]
    snap = registry.registry_snapshot()
    for name, version in ((registry.CHURN_MODEL, bad.churn_version), (registry.SPEND_MODEL, bad.spend_version)):
        assert snap[name]["versions"][version] == "rejected"
    assert snap[registry.CHURN_MODEL]["aliases"] == {"champion": good.churn_version}
    assert snap[registry.SPEND_MODEL]["aliases"] == {"champion": good.spend_version}
    assert bad.champion_metrics["mae"] == pytest.approx(good.metrics["clvcast"]["mae"])  # same holdout


def test_a_run_of_another_churn_definition_is_never_compared_with_the_champion(good, bad, book):
    from training.pipeline import train

    cancel = train(book.tables, config=load_config(**SMALL, churn_definition="cancel"))
    assert not cancel.promoted and cancel.champion_metrics is None
    assert "churn_definition 'purchase' vs this run's 'cancel'" in cancel.reason
    snap = registry.registry_snapshot()
    assert snap[registry.CHURN_MODEL]["aliases"] == {"champion": good.churn_version}
    import mlflow

    tags = mlflow.MlflowClient().get_model_version(registry.CHURN_MODEL, cancel.churn_version).tags
    assert (tags["business"], tags["churn_definition"]) == ("retail", "cancel")


def test_comparison_table_shows_versions_and_verdict(good, bad):
    from training.pipeline import format_comparison

    text = format_comparison(bad)
    for word in ("clvcast", "btyd", "naive", "MAE", "churn AUC", "previous champion", "not promoted"):
        assert word in text
    assert f"clvcast-churn v{bad.churn_version}" in text
    assert "champion: no current champion" in format_comparison(good)


def test_training_runs_are_named_and_timed_from_the_start_of_the_fit(good):
    import mlflow

    run = mlflow.get_run(good.run_id)
    assert run.info.run_name == f"train {good.cutoff}, {good.horizon_days} days"
    assert mlflow.get_experiment(run.info.experiment_id).name == registry.EXPERIMENT
    # The duration covers building the training set, the fit, the holdout and the lifetime model, not only the logging.
    steps = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/metrics.json")["seconds"]
    assert set(steps) == {"training_set", "fit", "holdout", "lifetime"}
    assert (run.info.end_time - run.info.start_time) / 1000 >= sum(steps.values())
    assert run.data.tags.get("mlflow.user") is not None  # the tags MLflow's fluent API adds are there


def test_training_runs_log_the_btyd_diagnostics(good):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    names = {f.path for folder in ("plots", "tables") for f in client.list_artifacts(good.run_id, folder)}
    for plot in ("btyd_frequency_recency", "btyd_calibration_holdout", "btyd_tracking"):
        assert f"plots/{plot}.png" in names, plot
    uri = mlflow.get_run(good.run_id).info.artifact_uri
    holdout = pd.read_csv(mlflow.artifacts.download_artifacts(f"{uri}/tables/btyd_calibration_holdout.csv"))
    assert holdout["calibration_frequency"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert holdout["customers"].sum() > 0 and (holdout["predicted"].dropna() >= 0).all()
    tracking = pd.read_csv(mlflow.artifacts.download_artifacts(f"{uri}/tables/btyd_tracking.csv"))
    assert tracking["holdout"].any() and (~tracking["holdout"]).any()
    assert (tracking["actual_cumulative"].diff().dropna() >= 0).all()
    alive = pd.read_csv(mlflow.artifacts.download_artifacts(f"{uri}/tables/btyd_frequency_recency_alive.csv"))
    assert alive.drop(columns="frequency").to_numpy().max() <= 1.0


def test_failed_run_does_not_move_the_alias_or_register(good, book, monkeypatch):
    import mlflow
    import mlflow.lightgbm

    from training.pipeline import train

    before = registry.registry_snapshot()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mlflow.lightgbm, "log_model", broken)
    with pytest.raises(OSError, match="disk full"):
        train(book.tables, config=load_config(**SMALL))
    assert registry.registry_snapshot() == before
    last = mlflow.search_runs(experiment_names=[registry.EXPERIMENT], order_by=["start_time DESC"], max_results=1)
    assert last["status"].iloc[0] == "FAILED"


def test_champions_from_different_runs_are_refused(good, bad):
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(registry.SPEND_MODEL, registry.ALIAS, bad.spend_version)
    try:
        with pytest.raises(registry.ChampionError, match="different training runs") as err:
            registry.load_champion()
        assert registry.SPEND_MODEL in str(err.value) and registry.tracking_uri() in str(err.value)
    finally:
        client.set_registered_model_alias(registry.SPEND_MODEL, registry.ALIAS, good.spend_version)


def test_promote_refuses_a_mixed_pair(good, bad):
    with pytest.raises(registry.ChampionError, match="different runs"):
        registry.promote(good.churn_version, bad.spend_version)


def test_missing_champion_names_model_and_uri(good):
    from mlflow import MlflowClient

    client = MlflowClient()
    client.delete_registered_model_alias(registry.SPEND_MODEL, registry.ALIAS)
    try:
        with pytest.raises(registry.ChampionError) as err:
            registry.load_champion()
        assert f"registered model '{registry.SPEND_MODEL}'" in str(err.value)
        assert registry.tracking_uri() in str(err.value)
    finally:
        client.set_registered_model_alias(registry.SPEND_MODEL, registry.ALIAS, good.spend_version)


def test_tracking_uri_default_is_under_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert registry.tracking_uri() == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}"
    assert not (tmp_path / "mlruns").exists()  # resolving the URI creates nothing
