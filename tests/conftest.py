from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker_guard import guard_worker

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO.parent / "shared" / "reference-data"


def pytest_configure(config):
    guard_worker(config)  # a dead xdist worker fails the run at once, never leaves it waiting


@pytest.fixture(scope="session")
def reference_data() -> Path:
    """The real public annotation files beside the checkout; tests using them skip when absent."""
    if not REFERENCE_DATA.is_dir():
        pytest.skip("../shared/reference-data is not available")
    return REFERENCE_DATA


@pytest.fixture(scope="session")
def vggss_annotations(reference_data) -> list[dict]:
    path = reference_data / "vggss.json"
    if not path.is_file():
        pytest.skip("vggss.json is not available")
    return json.loads(path.read_text())
