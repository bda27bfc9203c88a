"""Test settings: every test runs offline against temporary MLflow and BentoML stores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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
