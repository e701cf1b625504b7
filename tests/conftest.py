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


def synthetic_run_toml(num_examples: int = 32, **train) -> str:
    """TOML text of a CLIP run on random image-text pairs (no files) with the test-size ViT: batch 8,
    lr 1e-3, a log line every step; ``train`` adds or replaces [train] fields (steps=4, ...)."""
    fields = {"batch_size": 8, "lr": 1e-3, "log_every": 1, **train}
    return ('[model]\nname = "ViT-test"\n[data]\ndataset = "synthetic"\n'
            f"num_examples = {num_examples}\nvocab_size = 512\n[train]\n"
            + "".join(f"{k} = {v!r}\n" for k, v in fields.items()))


def run_main(main, argv, capsys):
    """(exit code, stdout, stderr) of a CLI main called in this process (argparse exits count as codes)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
