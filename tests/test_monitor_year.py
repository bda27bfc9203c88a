"""A simulated year of monitoring on a synthetic book.

The book (3,000 customers, 2021–2024) is trained on up to 2023-12-31 (91-day horizon, the refit
registers a pair that has seen the final 91 days), then scored at every month end of 2024 into a
Parquet history, with ``monitor`` run after each scoring on the data known then. From 2024-07-01
the ``paid_search`` channel buys half as often (:func:`features.synthetic.scenarios.thin_channel_purchases`).
The monitor must stay quiet for the six scorings before the change and alert on that channel
within two scorings after it; the realised performance of the matured scorings must equal the
metrics computed here by hand from the stored scores and the transactions that followed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.dates import history_until
from features.synthetic import SyntheticBook, generate, write_book
from features.synthetic.scenarios import thin_channel_purchases
from serving.cli import main
from serving.monitor import compute_monitor, read_history
from serving.monitor.history import append_scores
from serving.scoring import score_tables
from training import registry
from training.config import load_config

pytestmark = pytest.mark.slow

CHANNEL = "paid_search"
CHANGE = pd.Timestamp("2024-07-01")
TRAIN_END = "2023-12-31"
MONTHS = [d.date() for d in pd.date_range("2024-01-31", "2024-12-31", freq="ME")]
SMALL = dict(
    horizon_days=91,
    n_cutoffs=4,
    step_days=30,
    early_stopping_rounds=10,
    training__churn_params__num_boost_round=40,
    training__spend_params__num_boost_round=40,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("year")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def book():
    return generate(3000, seed=11, start="2021-01-01", end="2024-12-31")


@pytest.fixture(scope="module")
def tables(book):
    return thin_channel_purchases(book.tables, channel=CHANNEL, start=CHANGE, keep_share=0.5, seed=1)


@pytest.fixture(scope="module")
def config():
    return load_config(**SMALL)


@pytest.fixture(scope="module")
def trained(work, tables, config):
    from training.pipeline import train

    return train(history_until(tables, TRAIN_END), config=config)


@pytest.fixture(scope="module")
def year(work, tables, config, trained):
    """Score every month end into the history and monitor after each scoring: month -> MonitorResult."""
    champion = registry.load_champion()
    history = work / "history"
    results = {}
    for month in MONTHS:
        append_scores(score_tables(tables, as_of=month, champion=champion, top_drivers=0), history)
        results[month] = compute_monitor(
            read_history(history), history_until(tables, month), artifact_for=registry.load_serving_artifact,
            config=config.monitor,
        )  # fmt: skip
    return results


@pytest.fixture(scope="module")
def data_dir(work, book, tables) -> Path:
    out = work / "data"
    write_book(SyntheticBook(tables=tables, truth=book.truth, settings=book.settings), out)
    return out


def test_the_thinned_channel_buys_half_as_often(book, tables):
    def repeat_purchases(t, start, end):
        tx = t.transactions
        cust = t.customers.set_index("customer_id")["channel"]
        window = tx[(tx["timestamp"] >= start) & (tx["timestamp"] < end) & (tx["amount"] >= 0)]
        first = tx[tx["amount"] >= 0].groupby("customer_id")["timestamp"].transform("min")
        window = window[window["timestamp"] > first.loc[window.index]]
        return window.groupby(window["customer_id"].map(cust)).size()

    before = repeat_purchases(tables, CHANGE, CHANGE + pd.DateOffset(months=6)) / repeat_purchases(
        book.tables, CHANGE, CHANGE + pd.DateOffset(months=6)
    )
    assert before[CHANNEL] == pytest.approx(0.5, abs=0.05)
    assert (before.drop(CHANNEL) == 1.0).all()
    earlier = repeat_purchases(tables, "2024-01-01", CHANGE)
    assert (earlier == repeat_purchases(book.tables, "2024-01-01", CHANGE)).all()


def test_no_alert_before_the_change_and_an_alert_on_the_channel_within_two_scorings(year):
    alerts = {month: result.alerts for month, result in year.items()}
    before = [m for m in MONTHS if pd.Timestamp(m) < CHANGE]
    after = [m for m in MONTHS if pd.Timestamp(m) >= CHANGE][:2]
    assert len(before) == 6 and all(alerts[m] == [] for m in before), {m: [a.message for a in alerts[m]] for m in before}
    on_channel = [a for m in after for a in alerts[m] if a.subject == f"channel={CHANNEL}"]
    assert on_channel, {m: [a.message for a in alerts[m]] for m in after}
    # The alert says what moved, and no other segment is blamed.
    assert all(a.subject in (f"channel={CHANNEL}", "book") or a.kind.endswith("drift") for m in after for a in alerts[m])
    assert on_channel[0].value < 0


def _by_hand(scores: pd.DataFrame, transactions: pd.DataFrame, as_of, horizon_days: int) -> pd.DataFrame:
    """Realised spend and churn of each scored customer over (as_of, as_of + H], from the raw rows."""
    start = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    end = start + pd.Timedelta(days=horizon_days)
    window = transactions[(transactions["timestamp"] >= start) & (transactions["timestamp"] < end)]
    spend = window.groupby("customer_id")["amount"].sum()
    buyers = set(window.loc[window["amount"] >= 0, "customer_id"])
    out = scores.copy()
    out["actual"] = out["customer_id"].map(spend).fillna(0.0).to_numpy(dtype=float)
    out["churned"] = (~out["customer_id"].isin(buyers)).astype(float).to_numpy()
    return out


def _gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Normalised Gini as in the Kaggle reference implementation (sort by prediction, Lorenz sums)."""

    def gini(a, p):
        order = np.lexsort((np.arange(len(a)), -p))
        lorenz = np.cumsum(a[order]) / a.sum()
        return (lorenz.sum() - (len(a) + 1) / 2) / len(a)

    return gini(actual, predicted) / gini(actual, actual)


def test_realised_performance_equals_the_hand_computation(year, tables):
    result = year[MONTHS[-1]]
    history = read_history(Path.cwd() / "history")
    matured = result.performance
    # Data to 2024-12-31, horizon 91 days: the scorings of January to September have matured.
    assert [str(d) for d in matured["as_of"]] == [str(m) for m in MONTHS[:9]]
    for _, row in matured.iterrows():
        key = history.latest_per_day().set_index("as_of").loc[row["as_of"]]
        scores = history.scoring((row["as_of"], key["churn_model_version"], key["spend_model_version"]))
        hand = _by_hand(scores, tables.transactions, row["as_of"], 91)
        predicted, actual = hand["expected_spend"].to_numpy(), hand["actual"].to_numpy()
        assert row["customers"] == len(hand) and row["without_outcome"] == 0
        assert row["mae"] == pytest.approx(np.mean(np.abs(predicted - actual)), rel=1e-12)
        assert row["total_actual"] == pytest.approx(actual.sum(), rel=1e-12)
        assert row["bias"] == pytest.approx((predicted.sum() - actual.sum()) / actual.sum(), rel=1e-12)
        assert row["gini"] == pytest.approx(_gini(actual, predicted), rel=1e-6)
        # AUC = Mann-Whitney U / (n1 n0) of the churn probability between churned and not.
        churned = hand["churned"].to_numpy() == 1
        p = hand["churn_probability"].to_numpy()
        u = stats.mannwhitneyu(p[churned], p[~churned]).statistic
        assert row["churn_auc"] == pytest.approx(u / (churned.sum() * (~churned).sum()), rel=1e-12)
        assert row["churn_rate"] == pytest.approx(churned.mean())
    # Per channel, for the latest matured scoring.
    last = matured.iloc[-1]
    key = history.latest_per_day().set_index("as_of").loc[last["as_of"]]
    hand = _by_hand(history.scoring((last["as_of"], key["churn_model_version"], key["spend_model_version"])),
                    tables.transactions, last["as_of"], 91)  # fmt: skip
    by_channel = result.performance_by_segment["channel"].set_index("segment")
    for channel, g in hand.groupby("channel"):
        assert by_channel.loc[channel, "mae"] == pytest.approx(np.mean(np.abs(g["expected_spend"] - g["actual"])), rel=1e-12)
        bias = (g["expected_spend"].sum() - g["actual"].sum()) / g["actual"].sum()
        assert by_channel.loc[channel, "bias"] == pytest.approx(bias, rel=1e-12)


def test_the_registered_model_has_seen_the_last_days(trained, tables, config):
    """The refit: origins moved forward by H, the last window ending on the last day, fitted alike."""
    from training.models import ClvModels
    from training.training_set import TrainingSet, build_training_matrix, build_training_set, degenerate_rows, drop_degenerate_origins

    champion = registry.load_champion()
    serving = champion.serving
    last_day = pd.Timestamp(TRAIN_END)
    assert trained.refit and serving.refit and serving.training_cutoff == last_day.date() == trained.data_end
    assert serving.training_origins[-1] == (last_day - pd.Timedelta(days=91)).date()  # its window ends on the last day
    assert serving.holdout_cutoff == trained.cutoff == serving.evaluated.training_cutoff
    assert serving.holdout_cutoff == (last_day - pd.Timedelta(days=91)).date()
    assert serving.holdout_metrics["clvcast"]["mae"] == trained.metrics["clvcast"]["mae"]
    # The same fit by hand on those origins gives the registered models' predictions exactly.
    history = history_until(tables, TRAIN_END)
    training = build_training_set(history, origins=serving.training_origins, horizon_days=91, config=config.features)
    frame = drop_degenerate_origins(training.frame, needed=2)
    X, _ = TrainingSet(frame, training.btyd, training.feature_set_id).split(config.features)
    # The pipeline fits on the same rows encoded in float32 (build_training_matrix).
    matrix = build_training_matrix(
        history, origins=serving.training_origins, horizon_days=91, config=config.features,
        exclude_features=config.training.exclude_features,
    )  # fmt: skip
    keep = degenerate_rows(matrix.offset_features, matrix.labels["cutoff"].to_numpy(), needed=2)
    by_hand = ClvModels(training=config.training).fit_matrix(matrix.rows(keep))
    sample = X.tail(300)
    pd.testing.assert_frame_equal(champion.models.predict(sample), by_hand.predict(sample))
    evaluated = registry.load_evaluated_models(champion)
    assert not np.allclose(evaluated.predict(sample)["expected_spend"], by_hand.predict(sample)["expected_spend"])
    versions = registry.registry_snapshot()
    assert versions[registry.CHURN_MODEL]["aliases"]["champion"] == trained.churn_version


def _main(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_monitor_command_exit_codes_summary_and_mlflow(capsys, work, year, data_dir):
    import mlflow

    quiet = _main(capsys, "--quiet", "monitor", "--history", work / "history", "--data", data_dir,
                  "--out", work / "m-june", "--as-of", "2024-06-30")  # fmt: skip
    assert quiet[0] == 0, quiet
    alert = _main(capsys, "--quiet", "monitor", "--history", work / "history", "--data", data_dir,
                  "--out", work / "m-july", "--as-of", "2024-07-31")  # fmt: skip
    assert alert[0] == 3, alert
    assert f"ALERT channel {CHANNEL}" in alert[1]

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"summary.json holds {name}"))

    ok = strict((work / "m-june" / "summary.json").read_text())
    assert ok["status"] == "ok" and ok["alerts"] == [] and ok["as_of"] == "2024-06-30"
    summary = strict((work / "m-july" / "summary.json").read_text())
    assert summary["status"] == "alert" and summary["as_of"] == "2024-07-31"
    assert {a["subject"] for a in summary["alerts"]} >= {f"channel={CHANNEL}"}
    assert [a["message"] for a in summary["alerts"]] == [a.message for a in year[MONTHS[6]].alerts]
    assert len(summary["trends"]["book"]) == 7 and summary["drift"]["reference_as_of"] == TRAIN_END
    assert summary["performance"]["latest_matured"]["as_of"] == "2024-04-30"
    # Logged to MLflow against the versions that made the scoring.
    runs = mlflow.search_runs(experiment_names=["clvcast"], filter_string="tags.`clvcast.kind` = 'monitor'")
    assert set(runs["tags.as_of"]) == {"2024-06-30", "2024-07-31"}
    july = runs[runs["tags.as_of"] == "2024-07-31"].iloc[0]
    assert july["metrics.alerts"] == len(summary["alerts"])
    assert july["tags.churn_model_version"] == summary["latest"]["churn_model_version"]
    version = mlflow.MlflowClient().get_model_version(registry.CHURN_MODEL, summary["latest"]["churn_model_version"])
    assert version.tags["clvcast.monitor.run_id"] in set(runs["run_id"])


def test_score_command_replaces_the_scoring_in_the_history(capsys, work, year, data_dir):
    before = read_history(work / "history")
    code, _, err = _main(capsys, "score", "--data", data_dir, "--cutoff", "2024-12-31", "--out", work / "dec.parquet",
                         "--history", work / "history")  # fmt: skip
    assert code == 0, err
    assert "replaced the scoring" in err
    after = read_history(work / "history")
    assert len(after.rows) == len(before.rows) and len(after.scorings) == len(before.scorings) == 12
    december = after.scoring((MONTHS[-1], *before.scorings.iloc[-1][["churn_model_version", "spend_model_version"]]))
    assert december["drivers"].str.contains("contribution").all()  # the command's scoring, with drivers


def test_monitor_errors_are_one_line(capsys, work, data_dir):
    code, out, err = _main(capsys, "--quiet", "monitor", "--history", work / "no-history", "--data", data_dir, "--out", work / "x")
    assert code == 1 and err.startswith("error: history not found") and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not any(__import__("shutil").which(b) for b in ("chromium", "chromium-browser")), reason="no chromium binary")
def test_monitor_report_renders_in_headless_chromium(work, year, data_dir, capsys, tmp_path):
    import importlib.util

    from PIL import Image

    from test_finance import _report_tables_of

    page = (work / "m-july" / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 5
    assert "http://" not in page and "https://" not in page and "<script" not in page
    tables = _report_tables_of(page)
    summary = json.loads((work / "m-july" / "summary.json").read_text())
    moves = {(r[0], r[1]): r[-1] for r in tables["moves"][1:]}
    assert moves[(f"channel={CHANNEL}", "clv")] == "alert"
    assert len(tables["book"]) == 1 + len(summary["trends"]["book"])
    assert [r[0] for r in tables["performance"][1:]] == [s["as_of"] for s in summary["performance"]["scorings"]]

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "render_report.py"
    spec = importlib.util.spec_from_file_location("render_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png = module.render(work / "m-july" / "report.html", tmp_path / "monitor.png", width=1200, height=3000)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # The alert box is drawn in its red tint and the charts in their colours.
    for colour in ((0xFD, 0xEC, 0xEA), (0x1F, 0x77, 0xB4)):
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 500, colour
