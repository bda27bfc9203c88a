"""The ``clvcast`` command end to end, in process through ``serving.cli.main``.

One small synthetic book goes through generate → features → train → backtest → score → budget
against a temporary MLflow store; the error paths check the exit code, the one-line cause on stderr
and that ``--debug`` shows the exception instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.cli import main

pytestmark = pytest.mark.slow

N_CUSTOMERS = 1_500
SEED = 3
SCORE_CUTOFF = "2024-12-31"
FEATURE_CUTOFF = "2024-06-30"
BACKTEST_CUTOFF = "2024-03-31"
# Few trees and origins: the commands are under test here, not the models.
FAST_CONFIG = """\
training:
  n_cutoffs: 4
  step_days: 30
  churn_params: {num_boost_round: 30}
  spend_params: {num_boost_round: 30}
  early_stopping_rounds: 10
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def _run_captured(*args) -> Run:
    """Run the command outside a test function (module fixtures cannot use capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def _run(capsys, *args) -> Run:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def _assert_one_line_error(run: Run, *fragments: str) -> None:
    assert run.code == 1, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err and run.out == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A working directory with its own MLflow store for the whole module."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)  # default quarantine directories are relative to the working directory
        (root / "config.yaml").write_text(FAST_CONFIG)
        yield root


@pytest.fixture(scope="module")
def generated(work) -> Run:
    return _run_captured("generate", "--customers", N_CUSTOMERS, "--seed", SEED, "--out", work / "data")


@pytest.fixture(scope="module")
def data(work, generated) -> Path:
    assert generated.code == 0, generated
    return work / "data"


@pytest.fixture(scope="module")
def trained(work, data) -> Run:
    return _run_captured("--quiet", "train", "--data", data, "--config", work / "config.yaml")


@pytest.fixture(scope="module")
def scores(work, data, trained) -> Path:
    assert trained.code == 0, trained
    out = work / "scores.parquet"
    run = _run_captured("--quiet", "score", "--data", data, "--cutoff", SCORE_CUTOFF, "--out", out)
    assert run.code == 0, run
    return out


def _customers_with_purchase_by(data: Path, day: str) -> set[str]:
    tx = pd.read_parquet(data / "transactions.parquet")
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    return set(tx.loc[(tx["timestamp"] < end) & (tx["amount"] >= 0), "customer_id"].astype(str))


def test_generate_writes_the_tables_and_says_so(generated, data):
    for name in ("transactions", "events", "customers"):
        assert (data / f"{name}.parquet").exists(), name
    customers = pd.read_parquet(data / "customers.parquet")
    assert len(customers) == N_CUSTOMERS and customers["customer_id"].is_unique
    assert generated.err.startswith(f"wrote {data}: 1,500 customers, ")


def test_a_command_leaves_the_root_logger_its_records_and_serve_holds_them_back_only_while_it_runs(
    capsys, caplog, work, data
):
    from serving.cli import _not_propagated

    # A scheduler's log file or a test's caplog hangs on the root logger: a command in-process keeps it fed.
    with caplog.at_level(logging.INFO):
        run = _run(capsys, "features", "--data", data, "--cutoff", FEATURE_CUTOFF, "--out", work / "root.parquet")
    assert run.code == 0, run
    assert any(r.name.split(".")[0] in ("features", "training", "serving") for r in caplog.records), caplog.text
    # Under `clvcast serve` they stop at clvcast's handler (BentoML's root handler would print them
    # again), and propagate again once it ends, also when it ends in an error.
    loggers = [logging.getLogger(name) for name in ("features", "training", "serving")]
    with pytest.raises(RuntimeError, match="stopped"), _not_propagated():
        assert not any(logger.propagate for logger in loggers)
        raise RuntimeError("stopped")
    assert all(logger.propagate for logger in loggers)


def test_features_writes_one_row_per_customer(capsys, work, data):
    out = work / "features.parquet"
    run = _run(capsys, "--quiet", "features", "--data", data, "--cutoff", FEATURE_CUTOFF, "--out", out)
    assert run.code == 0, run
    frame = pd.read_parquet(out)
    assert frame.index.is_unique
    assert set(frame.index.astype(str)) == _customers_with_purchase_by(data, FEATURE_CUTOFF)
    assert {"recency_days", "frequency", "monetary_value", "tenure_days"} <= set(frame.columns)
    assert f"wrote {out}: {len(frame):,} customers" in run.err


def test_train_prints_the_comparison_and_registers_a_champion(trained):
    from training import registry

    assert trained.code == 0, trained
    out = trained.out
    assert out.startswith("holdout: ") and "horizon 182 days" in out
    header = out.splitlines()[1].split()
    assert header == ["metric", "clvcast", "btyd", "pareto", "naive"]
    for label in ("MAE", "RMSE", "Gini", "churn AUC", "total predicted", "total actual"):
        assert f"\n{label} " in out, label
    assert "registered clvcast-churn v1, clvcast-spend v1 (champion" in out
    assert registry.champion_versions() == ("1", "1")


def test_promote_never_registers_a_rejected_pair_and_keeps_the_champion(capsys, work, data, trained):
    from training import registry

    before = registry.champion_versions()
    run = _run(capsys, "--quiet", "train", "--data", data, "--config", work / "config.yaml", "--promote", "never")
    assert run.code == 0, run
    assert "(not promoted: promotion disabled for this run)" in run.out
    assert registry.champion_versions() == before


def test_version_and_the_help_of_config_and_promote(capsys):
    from importlib.metadata import version

    run = _run(capsys, "--version")
    assert run.code == 0 and run.out == f"clvcast {version('clvcast')}\n"
    for command in ("features", "train", "backtest", "score", "monitor", "retrain", "budget"):
        text = " ".join(_run(capsys, command, "--help").out.split())
        assert ("--config FILE YAML or JSON file with the sections features, training, lifetime, clv, scoring, monitor "
                "and subscription and the key business") in text, command
    for command in ("train", "retrain"):
        text = " ".join(_run(capsys, command, "--help").out.split())
        assert "--promote [auto|force|never] auto: the new pair becomes champion only if" in text, command
        assert "force: it becomes champion whatever the comparison" in text, command


def test_backtest_writes_the_json_contract_and_logs_its_steps(capsys, work, data):
    out = work / "backtest" / "result.json"
    run = _run(
        capsys, "backtest", "--data", data, "--cutoff", BACKTEST_CUTOFF, "--horizon-days", 91,
        "--config", work / "config.yaml", "--json", out,
    )  # fmt: skip
    assert run.code == 0, run
    # Without --quiet the steps go to stderr with their durations, and MLflow's own lines do not.
    for step in ("building the training set (", "fitting churn and spend models on ", "logging the backtest to MLflow"):
        assert f"[clvcast] {step}" in run.err, (step, run.err)
    assert re.search(r"\[clvcast\] fitting churn and spend models on [\d,]+ rows: done in \d+\.\d s", run.err), run.err
    assert "transactions: " in run.err  # the load report
    result = json.loads(out.read_text())
    assert result["customers"] == len(_customers_with_purchase_by(data, BACKTEST_CUTOFF))
    assert result["total_actual"] > 0
    assert set(result["models"]) == {"clvcast", "btyd", "pareto", "naive"}
    metrics = {"mae", "rmse", "gini", "spearman", "decile_mape", "churn_auc", "total_predicted"}
    for name, values in result["models"].items():
        assert metrics <= set(values), name
        assert values["mae"] > 0 and values["total_predicted"] > 0, name
    assert run.out.startswith(f"backtest: {result['customers']:,} customers, cutoff {BACKTEST_CUTOFF}")


def test_score_writes_csv_and_parquet_alike(capsys, work, data, scores):
    from serving.scores import SCORE_COLUMNS, read_scores

    csv = work / "scores.csv"
    run = _run(capsys, "--quiet", "score", "--data", data, "--cutoff", SCORE_CUTOFF, "--out", csv)
    assert run.code == 0, run
    parquet, text = read_scores(scores).frame, read_scores(csv).frame
    assert list(parquet.columns) == list(SCORE_COLUMNS)
    assert parquet["customer_id"].is_unique
    assert set(parquet["customer_id"]) == _customers_with_purchase_by(data, SCORE_CUTOFF)
    assert parquet["churn_probability"].between(0, 1).all() and (parquet["clv"] >= 0).all()
    assert text["customer_id"].tolist() == parquet["customer_id"].tolist()
    pd.testing.assert_series_equal(text["clv"], parquet["clv"], rtol=1e-9)
    assert run.err.strip() == f"wrote {csv}: {len(parquet):,} customers scored as of {SCORE_CUTOFF}"  # --quiet


def test_features_and_scores_in_blocks_are_the_files_of_one_block(capsys, monkeypatch, work, data, scores):
    import pyarrow.parquet as pq

    features = work / "features-one-block.parquet"
    run = _run(capsys, "--quiet", "features", "--data", data, "--cutoff", FEATURE_CUTOFF, "--out", features)
    assert run.code == 0, run
    monkeypatch.setenv("CLVCAST_SCORING__BLOCK_CUSTOMERS", "50")
    for name, args in (("features", ("--cutoff", FEATURE_CUTOFF)), ("score", ("--cutoff", SCORE_CUTOFF))):
        out = work / f"{name}-blocks.parquet"
        run = _run(capsys, "--quiet", name, "--data", data, *args, "--out", out)
        assert run.code == 0, run
        whole = features if name == "features" else scores
        assert pq.ParquetFile(out).num_row_groups > 10  # blocks of 50 customers
        assert pq.read_table(out).equals(pq.read_table(whole)), name
        assert pq.read_schema(out).equals(pq.read_schema(whole), check_metadata=True), name


def test_mlflow_download_bars_show_with_debug_only(capsys, work, data, scores):
    args = ["score", "--data", data, "--cutoff", SCORE_CUTOFF, "--out", work / "again.parquet"]
    plain, debug = _run(capsys, *args), _run(capsys, "--debug", *args)
    assert plain.code == 0 and debug.code == 0, (plain, debug)
    # Loading the champion downloads its artifacts: MLflow draws a bar, unless the CLI turned it off.
    assert "Downloading artifacts" in debug.err, debug.err
    assert "Downloading artifacts" not in plain.err, plain.err
    assert "[clvcast] transactions: " in plain.err  # the steps themselves still show


def test_a_read_on_a_new_store_path_creates_nothing(tmp_path):
    """As a user runs it: one line that names the path, the traceback only with --debug, no file made."""
    def run(*flags: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / (flags[0] if flags else 'plain')}.db"}
        cmd = [sys.executable, "-m", "serving.cli", *flags, "score", "--data", str(tmp_path), "--cutoff", SCORE_CUTOFF,
               "--out", str(tmp_path / "s.parquet")]  # fmt: skip
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    plain, debug = run(), run("--debug")
    assert plain.returncode == 1 and plain.stderr.strip().startswith(f"error: no MLflow store at {tmp_path}"), plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "StoreError" in debug.stderr, debug.stderr
    assert not list(tmp_path.glob("*.db"))


def test_budget_writes_the_finance_outputs(capsys, work, data, scores):
    out = work / "budget"
    run = _run(capsys, "--quiet", "budget", "--data", data, "--scores", scores, "--out", out)
    assert run.code == 0, run
    for name in ("channels.csv", "cohorts.csv", "forecast.csv", "segments.csv", "report.html"):
        assert (out / name).exists(), name
    n_scored = len(pd.read_parquet(scores))
    channels = pd.read_csv(out / "channels.csv")
    assert channels["customers"].sum() == n_scored
    assert set(channels["channel"]) == set(pd.read_parquet(data / "customers.parquet")["channel"])
    forecast = pd.read_csv(out / "forecast.csv")
    assert len(forecast) == 12 and (forecast["revenue_low"] <= forecast["revenue_high"]).all()
    assert len(pd.read_csv(out / "segments.csv")) == n_scored
    assert "<html" in (out / "report.html").read_text().lower()
    # The channel table, as the demo prints it (not a Python dict).
    lines = run.out.splitlines()
    assert lines[0].startswith(f"{n_scored:,} customers as of {SCORE_CUTOFF}, horizon 182 days: total CLV ")
    assert lines[1].split() == ["channel", "customers", "mean", "CAC", "mean", "CLV", "LTV:CAC", "max", "CAC",
                                "payback", "months", "recommendation"]  # fmt: skip
    assert len(lines) == 2 + len(channels) and "{" not in run.out


# --------------------------------------------------------------------------- errors


def test_missing_data_directory_is_a_one_line_error(capsys, work):
    run = _run(capsys, "--quiet", "features", "--data", work / "nope", "--cutoff", FEATURE_CUTOFF,
               "--out", work / "f.parquet")  # fmt: skip
    _assert_one_line_error(run, "not found", "nope")


def test_debug_shows_the_exception(work):
    with pytest.raises(FileNotFoundError, match="not found"):
        main(["--debug", "--quiet", "features", "--data", str(work / "nope"), "--cutoff", FEATURE_CUTOFF,
              "--out", str(work / "f.parquet")])  # fmt: skip


BAD_ROWS = "C9999991,2024-05-01,abc\n,2024-05-02,5.0\n"


@pytest.fixture()
def bad_csv_data(tmp_path, data) -> Path:
    """The book's tables as CSV with a non-numeric amount and a blank customer_id appended."""
    out = tmp_path / "bad"
    out.mkdir()
    tx = pd.read_parquet(data / "transactions.parquet")
    tx.to_csv(out / "transactions.csv", index=False)
    with open(out / "transactions.csv", "a") as f:
        f.write(BAD_ROWS)
    return out


def test_invalid_csv_names_the_file_column_and_rule(capsys, tmp_path, bad_csv_data):
    out = tmp_path / "f.parquet"
    run = _run(capsys, "--quiet", "features", "--data", bad_csv_data, "--cutoff", FEATURE_CUTOFF, "--out", out)
    assert run.code == 1 and run.out == "" and "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert lines[0].startswith("error: invalid input data, 2 rule(s) broken; nothing was written")
    text = "\n".join(lines[1:])
    assert "transactions.csv: column 'amount': non-numeric: 1 row(s)" in text and "'abc'" in text
    assert "transactions.csv: column 'customer_id': null or blank: 1 row(s)" in text
    assert not out.exists()


def test_quarantine_sets_bad_rows_aside_and_proceeds(capsys, tmp_path, data, bad_csv_data):
    out = tmp_path / "f.parquet"
    run = _run(capsys, "features", "--data", bad_csv_data, "--cutoff", FEATURE_CUTOFF, "--out", out,
               "--on-invalid", "quarantine")  # fmt: skip
    assert run.code == 0, run
    quarantine = tmp_path / "f.quarantine" / "transactions.quarantine.csv"
    rows = pd.read_csv(quarantine, dtype=str, keep_default_na=False)
    assert len(rows) == 2 and rows["reason"].str.len().gt(0).all()
    assert "2 quarantined to" in run.err
    # The valid rows are all used: the same customers as the clean book.
    assert set(pd.read_parquet(out).index.astype(str)) == _customers_with_purchase_by(data, FEATURE_CUTOFF)


@pytest.mark.parametrize("command", ["features", "train", "score"])
def test_cutoff_before_any_transaction_is_a_one_line_error(capsys, work, data, trained, command):
    args = ["--quiet", command, "--data", data, "--cutoff", "2019-01-01"]
    if command != "train":
        args += ["--out", work / f"early-{command}.parquet"]
    run = _run(capsys, *args)
    _assert_one_line_error(run, "2019-01-01")
    assert not (work / f"early-{command}.parquet").exists()


def test_bad_option_values_exit_with_usage_errors(capsys, work, data):
    run = _run(capsys, "features", "--data", data, "--cutoff", "31/12/2024", "--out", work / "x.parquet")
    assert run.code == 2 and "expected a date YYYY-MM-DD" in run.err and "Traceback" not in run.err


def test_a_non_finite_feature_is_a_one_line_error_and_nothing_is_written(capsys, tmp_path, data, monkeypatch):
    from features.families import FAMILIES

    family = FAMILIES["btyd"]
    computed = family.columns
    monkeypatch.setattr(
        family, "columns", lambda h, config, params: computed(h, config, params) | {"btyd_expected_spend": np.full(h.n, np.nan)}
    )
    out = tmp_path / "f.csv"
    run = _run(capsys, "--quiet", "features", "--data", data, "--cutoff", FEATURE_CUTOFF, "--out", out)
    _assert_one_line_error(run, "btyd column 'btyd_expected_spend': rule 'finite'", "customer(s) break it, first:")
    assert not out.exists()
