"""Registry crash, race and store-fault tests (``registry_crash_cases.py``) on a PostgreSQL store."""

import pytest
from registry_crash_cases import *  # noqa: F403 (the shared test cases)


@pytest.fixture(scope="module")
def store_kind() -> str:
    return "postgresql"
