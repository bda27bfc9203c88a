"""Test settings: every test runs offline against temporary MLflow and BentoML stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from pg_cluster import Cluster, ClusterUnavailable, throwaway_cluster

REPO = Path(__file__).resolve().parents[1]
#: The CDNOW data directory: ``CLVCAST_CDNOW`` if set, else ``../shared/data/cdnow`` beside the clone.
CDNOW = Path(os.environ.get("CLVCAST_CDNOW") or REPO.parent / "shared" / "data" / "cdnow")
#: The bug-report cases: ``CLVCAST_CASES`` if set, else ``../shared/cases`` beside the clone.
CASES = Path(os.environ.get("CLVCAST_CASES") or REPO.parent / "shared" / "cases")


def skip_unless_ci(reason: str) -> None:
    """Skip the test with ``reason``; under ``CLVCAST_CI=1`` (set by ``.ci/run``) fail instead.

    CI must never pass by not running a test: a missing data set, server or browser there is an
    error of the machine's set-up, said as such.
    """
    if os.environ.get("CLVCAST_CI") == "1":
        pytest.fail(f"{reason} (CLVCAST_CI=1: a skipped test is a failure in CI)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    # Before any test module imports mlflow or bentoml: both read these at import or first use.
    root = Path(tempfile.mkdtemp(prefix="clvcast-tests-"))
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def module_mlflow_store(tmp_path_factory) -> Iterator[str]:
    """A tracking store of the module's own (``MLFLOW_TRACKING_URI``) while its tests run.

    The session store of :func:`pytest_configure` is shared by every module a test worker runs, in
    an order that changes from run to run: a module whose rules assume no champion yet (or that
    registers one) takes this, autouse, so that another module's champion is never its own.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="session")
def cdnow_dir() -> Path:
    """The CDNOW directory (``CLVCAST_CDNOW``, else ``../shared/data/cdnow``); skipped without it, outside CI."""
    if not (CDNOW / "transactions.csv").exists():
        skip_unless_ci(f"CDNOW data not found at {CDNOW}: set CLVCAST_CDNOW to its directory")
    return CDNOW


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """The bug-report cases (``CLVCAST_CASES``, else ``../shared/cases``); skipped without them, outside CI."""
    if not (CASES / "README.md").exists():
        skip_unless_ci(f"bug-report cases not found at {CASES}: set CLVCAST_CASES to their directory")
    return CASES


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless Chromium (Debian's package, installed by ``.ci/run``); skipped without it, outside CI."""
    found = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    if found is None:
        skip_unless_ci("no chromium binary (Debian's chromium package; .ci/run installs it)")
    return found


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 for this test process (see ``tests/pg_cluster.py``).

    Stopped and deleted when the session ends, whatever the tests did. Without the server programs
    the tests that use it are skipped, except under ``CLVCAST_CI=1`` (set by ``.ci/run``), where they
    fail: CI must never pass by not running them.
    """
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(throwaway_cluster())
        except ClusterUnavailable as exc:
            skip_unless_ci(f"no PostgreSQL server: {exc}")
        yield cluster


@pytest.fixture(scope="session")
def champion_store(tmp_path_factory):
    """The service tests' trained champion (``tests/test_service.py``), trained once per test run.

    Under pytest-xdist the first worker to ask trains it in the directory the workers share (their
    base temporary directory's parent), under a file lock; every worker then serves from its own
    copy of the MLflow database (:func:`test_service.copy_champion_store`), so what one worker
    registers in it is not seen by the other.
    """
    from test_service import build_champion_store, champion_store_at, copy_champion_store

    own = tmp_path_factory.mktemp("champion")
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_champion_store(own)
    shared = tmp_path_factory.getbasetemp().parent / "champion-store"
    done = shared.with_name(shared.name + ".done")
    with FileLock(f"{shared}.lock"):
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)  # what a failed attempt left
            shared.mkdir()
            build_champion_store(shared)
            done.touch()
    return copy_champion_store(champion_store_at(shared), own)
