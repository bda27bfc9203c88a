"""``clvcast retrain`` end to end: train with the champion rule and the refit, re-score, monitor, exit code.

A small book is retrained twice into a SQLite history: first on the data up to 2022-10-31 (no
champion yet: promoted, exit 0), then a month later with a deliberately weak configuration (one
stump per model), which the champion rule rejects: the champion scores the new month and the
command exits 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.build import build_features, fit_btyd
from features.dates import history_until
from features.history import prepare_history
from features.io import load_tables
from features.synthetic import SyntheticBook, generate, write_book
from serving.cli import main
from serving.monitor import read_history
from training import metrics as M
from training import registry
from training.labels import build_labels

pytestmark = pytest.mark.slow

FAST = """\
training:
  horizon_days: 91
  n_cutoffs: 3
  step_days: 30
  early_stopping_rounds: 10
  churn_params: {num_boost_round: 30}
  spend_params: {num_boost_round: 30}
lifetime:
  dropout_covariate: channel
"""
WEAK = FAST.replace("num_boost_round: 30}", "num_boost_round: 1, num_leaves: 2}")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        (root / "fast.yaml").write_text(FAST)
        (root / "weak.yaml").write_text(WEAK)
        book = generate(1500, seed=5, start="2021-01-01", end="2022-12-31")
        for end in ("2022-10-31", "2022-11-30"):
            tables = history_until(book.tables, end)
            write_book(SyntheticBook(tables=tables, truth=book.truth, settings=book.settings), root / f"data-{end}")
        yield root


def _retrain(capsys, work, end, config):
    capsys.readouterr()
    code = main(["--quiet", "retrain", "--data", str(work / f"data-{end}"), "--history", f"sqlite:///{work / 'history.db'}",
                 "--out", str(work / f"out-{end}"), "--config", str(work / config)])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


def test_retrain_promotes_refits_scores_and_monitors(capsys, work):
    code, out, err = _retrain(capsys, work, "2022-10-31", "fast.yaml")
    assert code == 0, (out, err)
    assert "(champion: no current champion)\nrefitted on data up to 2022-10-31" in out
    champion = registry.load_champion()
    assert champion.serving.refit and str(champion.serving.training_cutoff) == "2022-10-31"
    history = read_history(f"sqlite:///{work / 'history.db'}")
    assert [str(d) for d in history.scorings["as_of"]] == ["2022-10-31"]
    assert history.scorings["churn_model_version"].tolist() == [champion.churn_version]
    summary = json.loads((work / "out-2022-10-31" / "monitor" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["drift"]["reference_as_of"] == "2022-10-31"
    assert (work / "out-2022-10-31" / "scores.parquet").is_file()
    # The process by channel logged is the one the champion serves (the refit's), the evaluation's beside it.
    run = mlflow.get_run(champion.run_id)
    logged, at_cutoff = (
        pd.read_csv(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/tables/{name}.csv"), index_col="channel")
        for name in ("dropout_by_level", "dropout_by_level_at_cutoff")
    )  # fmt: skip
    served = champion.lifetime.params.by_level.table()
    pd.testing.assert_frame_equal(logged, served, check_dtype=False)
    common = logged.index.intersection(at_cutoff.index).drop("(base)")
    assert len(common) >= 2 and (logged.loc[common, "customers"] > at_cutoff.loc[common, "customers"]).all()  # the refit saw more


def test_retrain_that_is_not_promoted_exits_4_and_scores_with_the_champion(capsys, work):
    first = registry.load_champion()
    code, out, err = _retrain(capsys, work, "2022-11-30", "weak.yaml")
    assert code == 4, (out, err)
    assert "not promoted: worse than the champion" in out
    champion = registry.load_champion()
    assert (champion.churn_version, champion.spend_version) == (first.churn_version, first.spend_version)
    history = read_history(f"sqlite:///{work / 'history.db'}")
    assert [str(d) for d in history.scorings["as_of"]] == ["2022-10-31", "2022-11-30"]
    assert set(history.scorings["churn_model_version"]) == {first.churn_version}
    # The refitted champion saw data up to 2022-10-31, inside the new holdout window (cutoff, cutoff
    # + 91 days]: it was judged through its evaluated pair, which learnt up to its own holdout cutoff.
    runs = mlflow.search_runs(experiment_names=["clvcast"], filter_string="tags.`clvcast.kind` = 'train'")
    weak = runs.sort_values("start_time").iloc[-1]
    cutoff = weak["tags.cutoff"]
    assert weak["tags.refit"] == "false"
    assert str(first.serving.evaluated.training_cutoff) <= cutoff < str(first.serving.training_cutoff)
    evaluated = registry.load_evaluated_models(first)
    tables = load_tables(str(work / "data-2022-11-30"), progress=False).tables
    known = history_until(tables, cutoff)
    btyd = fit_btyd(known, cutoff=cutoff, config=first.feature_config)
    features = build_features(known, cutoff=cutoff, config=first.feature_config, btyd=btyd)
    labels = build_labels(tables, cutoff=cutoff, horizon_days=91)
    pred = evaluated.predict(features[list(evaluated.encoder_.columns)])
    # Through the evaluated pair's own lifetime model, as the champion rule scores it.
    curve = first.serving.evaluated.lifetime.curve(
        prepare_history(known, cutoff), churn_probability=pred["churn_probability"].to_numpy(float),
        spend_if_active=pred["spend_if_active"].to_numpy(float), horizon_days=91, clv=first.serving.config.clv,
    )  # fmt: skip
    spend = curve.expected_spend[:, 0]
    assert weak["metrics.champion_mae"] == pytest.approx(M.mae(labels["spend"], spend), rel=1e-9)
    served = first.models.predict(features[list(first.models.encoder_.columns)])["expected_spend"]
    assert weak["metrics.champion_mae"] != pytest.approx(M.mae(labels["spend"], served), rel=1e-6)
