"""The registry under SIGKILL at named steps, concurrent trainings and broken stores (the cases).

Collected by ``test_registry_crash_sqlite.py`` and ``test_registry_crash_postgres.py``, which set
the fixture ``store_kind`` (two files, so that the test runner's two workers take one each).

Each store kind gets a template once: a champion pair (run A, v1/v1) and a second training run B
whose models are logged but not registered. Every test works on a copy of it (a copied sqlite
file; ``CREATE DATABASE ... TEMPLATE`` on the throw-away PostgreSQL cluster), so the tests do not
depend on one another.

A crash is a real process killed by SIGKILL at a named step of the real code, through the test
hook ``CLVCAST_TEST_KILL_AFTER`` (:func:`training.registry._test_hook`). The processes that only
register are forked from this one (no second import of MLflow and LightGBM; they run no LightGBM,
whose OpenMP pool does not survive a fork); the concurrent trainings are ``clvcast train`` commands.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from psycopg import sql

from serving.cli import main
from serving.service import environ, free_port
from training import registry
from training.config import load_config

pytestmark = pytest.mark.slow

TINY = dict(
    horizon_days=91,
    n_cutoffs=2,
    step_days=30,
    early_stopping_rounds=5,
    training__churn_params__num_boost_round=15,
    training__spend_params__num_boost_round=15,
)
TINY_YAML = """\
training:
  horizon_days: 91
  n_cutoffs: 2
  step_days: 30
  early_stopping_rounds: 5
  churn_params: {num_boost_round: 15}
  spend_params: {num_boost_round: 15}
  refit: false
"""
CHILD_TIMEOUT_S = 180
TRAIN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    from features.synthetic import generate, write_book

    book = generate(400, seed=3, start="2022-01-01", end="2023-12-31")
    path = tmp_path_factory.mktemp("book")
    write_book(book, path)
    return book.tables, path


@dataclass
class Template:
    """A store holding champion run A (v1/v1) and the logged, unregistered run B; copied per test."""

    kind: str
    uri: str
    run_a: str
    run_b: registry.LoggedRun
    copies: list
    root: Path
    cluster: object = None

    def copy(self) -> str:
        n = len(self.copies)
        if self.kind == "sqlite":
            target = self.root / f"copy{n}" / "mlflow.db"
            target.parent.mkdir()
            shutil.copy(self.root / "template" / "mlflow.db", target)
            uri = f"sqlite:///{target}"
        else:
            name = f"copy{n}"
            with self.cluster.connect(autocommit=True) as con:
                # This process's MLflow still holds pooled connections to the template, and
                # PostgreSQL copies a database only while nobody is connected to it.
                con.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                            "where datname = 'template_store' and pid <> pg_backend_pid()")
                con.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template_store").format(sql.Identifier(name)))
            uri = self.cluster.url(name)
        self.copies.append(uri)
        return uri


def _build_template(kind: str, uri: str, tables, root: Path, cluster=None) -> Template:
    from training.pipeline import train

    config = load_config(**TINY)
    with environ(MLFLOW_TRACKING_URI=uri):
        a = train(tables, config=config)
        logged = []
        with pytest.MonkeyPatch.context() as mp:
            # Run B: trained and logged as usual, its registration (and the versions' description) left to the tests.
            mp.setattr(registry, "register_pair",
                       lambda run, decision, **_: logged.append(run) or registry.Registration("", "", False, ""))
            mp.setattr(registry, "describe_versions", lambda registration, description: None)
            train(tables, config=config)
    return Template(kind=kind, uri=uri, run_a=a.run_id, run_b=logged[0], copies=[], root=root, cluster=cluster)


@pytest.fixture(scope="module")
def template(request, store_kind, book, tmp_path_factory):
    tables, _ = book
    root = tmp_path_factory.mktemp(f"store-{store_kind}")
    if store_kind == "sqlite":
        (root / "template").mkdir()
        return _build_template("sqlite", f"sqlite:///{root / 'template' / 'mlflow.db'}", tables, root)
    cluster = request.getfixturevalue("postgres")
    uri = cluster.create_database("template_store")
    with environ(CLVCAST_ARTIFACT_ROOT=str(root / "artifacts")):
        return _build_template("postgresql", uri, tables, root, cluster)


def _forked(uri: str, target, *, kill_after: str | None = None, pause_after: str | None = None):
    """Run ``target()`` in a forked process on store ``uri`` with the test hooks set; the process."""

    def child() -> None:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        if kill_after:
            os.environ[registry.KILL_AFTER_ENV] = kill_after
        if pause_after:
            os.environ[registry.PAUSE_AFTER_ENV] = pause_after
        target()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    return process


def _killed_at(uri: str, step: str, target) -> None:
    process = _forked(uri, target, kill_after=step)
    process.join(CHILD_TIMEOUT_S)
    assert process.exitcode == -signal.SIGKILL, f"the process was not killed after {step!r}: exit {process.exitcode}"


def _champion_tags(snapshot) -> dict[str, list[str]]:
    return {name: sorted(v for v, status in snap["versions"].items() if status == "champion")
            for name, snap in snapshot.items()}


def _assert_consistent(run_id: str) -> None:
    """One pair from ``run_id``: both aliases on it, it alone tagged champion, no candidate left."""
    snap = registry.registry_snapshot()
    churn, spend = registry.champion_versions()
    champion = registry.load_champion()
    assert champion.run_id == run_id and (champion.churn_version, champion.spend_version) == (churn, spend)
    assert snap[registry.CHURN_MODEL]["aliases"] == {"champion": churn}
    assert snap[registry.SPEND_MODEL]["aliases"] == {"champion": spend}
    assert _champion_tags(snap) == {registry.CHURN_MODEL: [churn], registry.SPEND_MODEL: [spend]}
    for name in snap:
        assert "candidate" not in snap[name]["versions"].values(), snap
    # Versions pair by number: every run's churn vN has its spend vN.
    assert snap[registry.CHURN_MODEL]["versions"].keys() == snap[registry.SPEND_MODEL]["versions"].keys(), snap
    assert registry.check_registry(repair=False).ok


# --------------------------------------------------------------------------- SIGKILL while registering


# step killed after -> whose pair is in effect right after the crash and after the check
STEPS = {
    "clvcast-churn registered": "a",
    "clvcast-spend registered": "a",
    "promotion committed": "b",
    "spend alias moved": "b",
    "aliases moved": "b",
    "status tags set": "b",
}


@pytest.mark.parametrize("step", list(STEPS))
def test_registration_killed_at_each_step_is_all_or_nothing(template, step):
    uri = template.copy()
    b = template.run_b
    _killed_at(uri, step, lambda: registry.register_pair(b, registry.Decision(True, "test"), basis=("1", "1")))
    winner = {"a": template.run_a, "b": b.run_id}[STEPS[step]]
    with environ(MLFLOW_TRACKING_URI=uri):
        # Before any repair: readers see one whole pair, and no two versions of a model say champion.
        assert registry.load_champion().run_id == winner
        assert all(len(v) <= 1 for v in _champion_tags(registry.registry_snapshot()).values())
        found = registry.check_registry()
        assert found.ok, found
        assert found.repaired, found  # each of these steps leaves something to complete
        _assert_consistent(winner)
        if STEPS[step] == "a":
            # The killed run's pair is whole (completed if need be) and rejected, not left a candidate.
            snap = registry.registry_snapshot()
            assert snap[registry.CHURN_MODEL]["versions"]["2"] == "rejected"
            assert snap[registry.SPEND_MODEL]["versions"]["2"] == "rejected"
            # The next registration gets one number for both models.
            reg = registry.register_pair(b, registry.Decision(False, "again"))
            assert (reg.churn_version, reg.spend_version) == ("3", "3")


def test_a_run_killed_while_logging_is_failed_only_once_its_process_is_gone(template):
    uri = template.copy()

    def log() -> None:
        registry.log_run(kind="backtest", params={}, tags={}, metrics={}, metrics_json={}, tables={}, figures={})

    process = _forked(uri, log, pause_after="run started=600")
    try:
        with environ(MLFLOW_TRACKING_URI=uri):
            client = MlflowClient(tracking_uri=uri)
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            while client.get_experiment_by_name(registry.BACKTEST_EXPERIMENT) is None and time.monotonic() < deadline:
                time.sleep(0.2)
            experiment = client.get_experiment_by_name(registry.BACKTEST_EXPERIMENT).experiment_id
            while True:
                running = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'")
                if running or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            (run,) = running
            run_id = run.info.run_id
            # The process is alive: its run is not touched.
            assert registry.check_registry().repaired == []
            assert client.get_run(run_id).info.status == "RUNNING"
            os.kill(process.pid, signal.SIGKILL)
            process.join(CHILD_TIMEOUT_S)
            found = registry.check_registry()
            assert any(run_id in line and "FAILED" in line for line in found.repaired), found
            assert client.get_run(run_id).info.status == "FAILED"
    finally:
        if process.is_alive():
            process.kill()


def test_split_aliases_are_refused_and_resolved_by_promoting_one_run(template, capsys):
    uri = template.copy()
    with environ(MLFLOW_TRACKING_URI=uri):
        registry.register_pair(template.run_b, registry.Decision(False, "kept aside"))
        # An alias moved by hand, outside clvcast: no champion change is in progress to complete.
        MlflowClient(tracking_uri=uri).set_registered_model_alias(registry.SPEND_MODEL, registry.ALIAS, "2")
        with pytest.raises(registry.ChampionError, match="different training runs"):
            registry.load_champion()
        assert main(["registry", "check"]) == 2
        err = capsys.readouterr().err
        assert f"clvcast registry promote --run {template.run_a}" in err, err
        assert main(["registry", "promote", "--run", template.run_b.run_id]) == 0
        _assert_consistent(template.run_b.run_id)


def test_the_rule_compares_with_the_last_good_pair_when_the_champion_is_damaged(template, book):
    if template.kind != "sqlite":
        pytest.skip("the fallback is the pipeline's, whatever the store: checked once")
    from training.pipeline import train

    uri = template.copy()
    with environ(MLFLOW_TRACKING_URI=uri):
        registry.register_pair(template.run_b, registry.Decision(True, "test"), basis=("1", "1"))
        artifacts = Path(MlflowClient(tracking_uri=uri).get_run(template.run_b.run_id).info.artifact_uri.removeprefix("file://"))
        hidden = artifacts.with_name(artifacts.name + ".hidden")
        artifacts.rename(hidden)  # the copies share the template's artifacts: put back below
        try:
            with pytest.raises(registry.ChampionError, match="artifacts of training run"):
                registry.load_champion()
            result = train(book[0], config=load_config(**TINY))
        finally:
            hidden.rename(artifacts)
    assert "compared with the last good pair v1/v1" in result.reason, result.reason
    assert result.champion_metrics is not None


# --------------------------------------------------------------------------- two trainings at once


def test_two_trainings_at_once_on_a_fresh_store(template, book, tmp_path):
    """Both succeed; store creation and champion changes are serialised; the second is compared."""
    if template.kind == "sqlite":
        uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    else:
        uri = template.cluster.create_database("fresh_store")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CLVCAST_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           # Stretch the window in which unserialised alias moves would interleave.
           registry.PAUSE_AFTER_ENV: "spend alias moved=2"}
    cmd = [sys.executable, "-m", "serving.cli", "train", "--data", str(book[1]), "--config", str(config)]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=TRAIN_TIMEOUT_S)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "Creating initial MLflow database tables" not in out  # MLflow's own lines need --debug
    reasons = " | ".join(line for out in outputs for line in out.splitlines() if line.startswith("registered "))
    # One promoted with no champion to compare with; the other was compared with it, under the lock.
    assert reasons.count("no current champion") == 1, reasons
    assert "than the champion" in reasons, reasons
    with environ(MLFLOW_TRACKING_URI=uri):
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name(registry.EXPERIMENT).experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
        churn, _ = registry.champion_versions()
        _assert_consistent(registry.load_champion().run_id)
        assert registry.registry_snapshot()[registry.CHURN_MODEL]["versions"].keys() == {"1", "2"}
        assert churn in {"1", "2"}


# --------------------------------------------------------------------------- store faults


def test_a_read_never_creates_a_store(tmp_path, book, capsys):
    missing = tmp_path / "no" / "such" / "mlflow.db"
    with environ(MLFLOW_TRACKING_URI=f"sqlite:///{missing}"):
        for argv in (["score", "--data", str(book[1]), "--cutoff", "2023-12-31", "--out", str(tmp_path / "s.csv")],
                     ["registry", "check"]):
            assert main(argv) == 1
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert line.startswith(f"error: no MLflow store at {missing}"), line
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("damage", "cause"),
    [("header", "file is not a database"), ("pages", "database disk image is malformed")],
)
def test_a_damaged_sqlite_store_is_named_with_its_cause(template, damage, cause, capsys):
    if template.kind != "sqlite":
        pytest.skip("sqlite files only")
    db = Path(template.copy().removeprefix("sqlite:///"))
    with open(db, "r+b") as f:
        if damage == "header":
            f.write(b"not a database!!" * 8)
        else:  # every page after the first two: the schema's first page reads, the tables do not
            f.seek(8192)
            f.write(b"\xff" * (db.stat().st_size - 8192))
    with environ(MLFLOW_TRACKING_URI=f"sqlite:///{db}"):
        assert main(["registry", "check"]) == 1
        err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert str(db) in line and cause in line, line
    assert "train one" not in line


def test_postgres_store_faults_name_the_store_without_its_password(template, capsys):
    if template.kind != "postgresql":
        pytest.skip("database server stores only")
    cluster = template.cluster
    empty = cluster.create_database("not_mlflow")
    wrong = cluster.url("postgres").replace(f":{cluster.port}/", f":{free_port()}/")  # nothing listens there
    for uri, cause in ((empty, "has no MLflow tables"), (wrong, "cannot be reached")):
        with environ(MLFLOW_TRACKING_URI=uri):
            assert main(["registry", "check"]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert cause in line and registry.display_uri(uri) in line and cluster.password not in line, line
    with cluster.connect("not_mlflow") as con:  # the read created no table
        assert con.execute("select count(*) from information_schema.tables where table_schema = 'public'").fetchone() == (0,)
