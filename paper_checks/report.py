"""Run the checks and render REPORT.md."""

from __future__ import annotations

import datetime
import platform
import sys
import time
import traceback

from mmcl_theory.io import atomic_write_json

from .checks import CHECKS
from .common import CRASHED, Record


def run_one(check_id: str, quick: bool) -> Record:
    """Run one check; an exception becomes a failed record that says so (never a silent pass)."""
    start = time.perf_counter()
    try:
        rec = CHECKS[check_id](quick)
    except Exception as e:  # noqa: BLE001 - the report must show a crashed check as failed
        rec = Record(check_id, "(check crashed)", "-", "-", "-", CRASHED, f"{type(e).__name__}: {e}",
                     ["```", traceback.format_exc().rstrip(), "```"])
    rec.seconds = time.perf_counter() - start
    return rec


def run_all(quick: bool = False, only: list[str] | None = None, progress: bool = True,
            resume_dir=None) -> list[Record]:
    """Run the checks in order. With resume_dir, each finished record is saved there as ID.json and a
    record already saved by the same package version and mode is reused (a killed run picks up)."""
    import json
    from pathlib import Path

    import mmcl_theory

    records = []
    for cid in only or list(CHECKS):
        saved = Path(resume_dir) / f"{cid}.json" if resume_dir else None
        if saved is not None and saved.is_file():
            try:
                data = json.loads(saved.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = {}  # a torn save: rerun the check
            if data.get("version") == mmcl_theory.__version__ and data.get("quick") == quick:
                rec = Record(**data["record"])
                if progress:
                    print(f"[paper_checks] {cid}: {rec.verdict} (reused from {saved})", file=sys.stderr, flush=True)
                records.append(rec)
                continue
        if progress:
            print(f"[paper_checks] {cid} ...", file=sys.stderr, flush=True)
        rec = run_one(cid, quick)
        if saved is not None:
            atomic_write_json(saved, {"version": mmcl_theory.__version__, "quick": quick, "record": rec.as_dict()})
        if progress:
            print(f"[paper_checks] {cid}: {rec.verdict} ({rec.seconds:.1f} s) - {rec.why}", file=sys.stderr, flush=True)
        records.append(rec)
    return records


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(records: list[Record], quick: bool, seconds: float) -> str:
    import jax
    import numpy
    import scipy

    import mmcl_theory

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = {v: sum(r.verdict == v for r in records) for v in ("pass", "fail", "not run", "crashed")}
    out = [
        "# Paper checks: report",
        "",
        f"- mmcl-theory {mmcl_theory.__version__}; jax {jax.__version__}, numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}; Python {platform.python_version()} on {platform.machine()} "
        f"({jax.default_backend()})",
        f"- Date: {date}. Mode: {'QUICK (CI: smaller n, fewer seeds)' if quick else 'full'}. "
        f"Time: {sum(r.seconds for r in records):.0f} s summed over the checks ({seconds:.0f} s in this invocation; "
        "the machine is a shared 2-core CPU, so timings are noisy).",
        f"- Command: `python -m paper_checks{' --quick' if quick else ''}`",
        f"- Verdicts: {counts['pass']} pass, {counts['fail']} fail, {counts['not run']} not run, "
        f"{counts['crashed']} crashed.",
        "",
        "Sources: *paper claim* = a claim of Xue et al. (ICLR 2024) as stated in docs/claims.md; "
        "*package derivation* = a number or identity of this package's own models M1/M2 "
        "(docs/theory.md), standing in for the paper's unavailable constants; "
        "*published: Sagawa et al. 2020* = their Theorem 1, restated in M1's parameters. "
        "Every expectation is independent of the code it checks: a closed form written out in the check, "
        "a second method, or the reference tables of docs/theory.md (which came from an independent NumPy simulation). "
        "Tolerances are 3 standard errors of the seed mean, plus the rounding of quoted numbers; "
        "the quick mode's tolerances are wider only because its standard errors are.",
        "",
        "| id | claim | source | expected | measured | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        out.append(f"| {r.id} | {_cell(r.claim)} | {_cell(r.source)} | {_cell(r.expected)} | {_cell(r.measured)} | "
                   f"**{r.verdict}** |")
    out.append("")
    for r in records:
        out += [f"## {r.id}: {r.verdict}", "", f"**Claim.** {r.claim}", "", f"**Source.** {r.source}", "",
                f"**Expected.** {r.expected}", "", f"**Measured.** {r.measured}", "",
                f"**Verdict.** {r.verdict}: {r.why}", "", f"Time: {r.seconds:.1f} s.", ""]
        for line in r.details:
            out.append(line if line.startswith("|") or line.startswith("```") else f"- {line}")
        out.append("")
    return "\n".join(out)
