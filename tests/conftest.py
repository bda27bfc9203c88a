"""Test settings: every test runs offline against temporary MLflow and BentoML stores."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_cluster import Cluster, ClusterUnavailable, throwaway_cluster

REPO = Path(__file__).resolve().parents[1]
CDNOW = REPO.parent / "shared" / "data" / "cdnow"


def pytest_configure(config):
    # Before any test module imports mlflow or bentoml: both read these at import or first use.
    root = Path(tempfile.mkdtemp(prefix="clvcast-tests-"))
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="session")
def cdnow_dir() -> Path:
    if not (CDNOW / "transactions.csv").exists():
        pytest.skip(f"CDNOW data not found at {CDNOW}")
    return CDNOW



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
            if os.environ.get("CLVCAST_CI") == "1":
                pytest.fail(f"PostgreSQL is required under CLVCAST_CI=1: {exc}", pytrace=False)
            pytest.skip(f"no PostgreSQL server: {exc}")
        yield cluster
