"""Shared fixtures and helpers: the location of the real test data in ../shared/data; running a CLI main."""

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


def run_main(main, argv, capsys):
    """(exit code, stdout, stderr) of a CLI main called in this process (argparse exits count as codes)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
