"""Shared fixtures: the location of the real test data in ../shared/data."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MMCL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (or $MMCL_SHARED_DATA); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA
