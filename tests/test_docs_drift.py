"""Docs drift: the tables in docs/ list exactly what the registries hold."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmcl_theory.sweep import available_sweeps  # noqa: E402
from paper_checks import CHECKS  # noqa: E402


def _first_column(page: str, header: str) -> list[str]:
    """The first cell of every row of the markdown table whose header row starts with `header`."""
    lines = (ROOT / "docs" / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    cells = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells.append(line.split("|")[1].strip())
    return cells


def test_sweep_table_lists_every_named_sweep():
    names = [re.sub(r"`", "", c) for c in _first_column("README.md", "| sweep |")]
    assert sorted(names) == available_sweeps()


def test_claims_table_lists_every_check():
    ids = [re.match(r"\[([^\]]+)\]", c).group(1) for c in _first_column("claims.md", "| id |")]
    assert ids == list(CHECKS)
    text = (ROOT / "docs" / "claims.md").read_text()
    for cid in CHECKS:  # every row links to its own section
        assert f'<a id="{cid.lower().replace(".", "")}"></a>' in text, cid
