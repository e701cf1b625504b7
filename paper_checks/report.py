"""Run the checks and render REPORT.md.

A finished check is saved (with --resume DIR, and always in paper_checks/records/ beside the committed report) as
ID.json: {version, quick, seed_offset, inputs, record}; inputs = {source_hash, files, state, date} from
paper_checks/inputs.py (the hash of the check's code and data, where the working tree stood against HEAD, when).
A saved check is reused only when its version, mode, seed offset and inputs hash are this run's.
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
import traceback

from mmcl_theory.io import atomic_write_json

from .checks import CHECKS
from .common import CRASHED, Record, json_kind, seed_offset


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


class SaveError(OSError):
    """A finished check's record cannot be saved in the --resume folder (its message names the file and why)."""


SAVED_KEYS = ("version", "quick", "seed_offset", "inputs", "record")
OLD_SAVED_KEYS = ("version", "quick", "record")  # saved before input hashes (2026-12-07): rerun, not damaged
INPUT_KEYS = ("source_hash", "files", "state", "date")


def _inputs_problem(inputs) -> str | None:
    if not isinstance(inputs, dict) or sorted(inputs) != sorted(INPUT_KEYS):
        return f"'inputs' is not an object with keys {', '.join(INPUT_KEYS)}"
    if not all(isinstance(inputs[k], str) for k in ("source_hash", "state", "date")):
        return "'inputs' has a source_hash, state or date that is not a string"
    if not isinstance(inputs["files"], dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in inputs["files"].items()):
        return "'inputs.files' is not an object of path -> hash strings"
    return None


def load_saved(path, check_id: str, quick: bool, inputs_now: dict | None = None,
               offset: int | None = None) -> tuple[Record | None, str, dict | None]:
    """A record saved by run_all: (record, '', inputs) when it can be reused (same check, package version, mode,
    seed offset and, when inputs_now is given, inputs hash); (None, '', None) when it belongs to another version,
    mode, seed offset or inputs, or was saved before input hashes (rerun); (None, what is wrong, None) when the
    file is damaged: unreadable, not JSON, not {version, quick, seed_offset, inputs, record} or a record that
    Record.from_dict refuses."""
    import json

    import mmcl_theory

    offset = seed_offset() if offset is None else offset
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})", None
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 at byte {e.start}", None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg}; a torn save?)", None
    except RecursionError:
        return None, "JSON nested too deeply", None
    if not isinstance(data, dict):
        return None, f"a JSON {json_kind(data)}, not an object with keys {', '.join(SAVED_KEYS)}", None
    if sorted(data) == sorted(OLD_SAVED_KEYS) and isinstance(data.get("record"), dict):
        return None, "", None  # a save from before input hashes: its inputs are unknown, so it is rerun
    if sorted(data) != sorted(SAVED_KEYS):
        return None, f"keys {', '.join(sorted(map(repr, data)))}, expected {', '.join(map(repr, SAVED_KEYS))}", None
    if not isinstance(data["version"], str) or not isinstance(data["quick"], bool):
        return None, "'version' is not a string or 'quick' not true/false", None
    off = data["seed_offset"]
    if isinstance(off, bool) or not isinstance(off, int) or off < 0:
        return None, f"'seed_offset' = {off!r} is not an integer >= 0", None
    problem = _inputs_problem(data["inputs"])
    if problem:
        return None, problem, None
    try:
        rec = Record.from_dict(data["record"])
    except ValueError as e:
        return None, str(e), None
    if rec.id != check_id:
        return None, f"holds the record of check {rec.id!r}, not {check_id!r}", None
    if data["version"] != mmcl_theory.__version__ or data["quick"] != quick or off != offset:
        return None, "", None
    if inputs_now is not None and data["inputs"]["source_hash"] != inputs_now["source_hash"]:
        return None, "", None
    return rec, "", data["inputs"]


def inputs_now(check_id: str, head=None) -> dict:
    """This run's inputs of a check: {source_hash, files, state (against HEAD), date}."""
    from .inputs import check_inputs, committed_state

    now = check_inputs(check_id)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {**now, "state": committed_state(check_id, now["files"], head), "date": date}


def save_record(folder, rec: Record, quick: bool, inputs: dict) -> None:
    """Save a finished check as FOLDER/ID.json (atomic); SaveError naming the file and why."""
    from pathlib import Path

    import mmcl_theory

    saved = Path(folder) / f"{rec.id}.json"
    try:
        atomic_write_json(saved, {"version": mmcl_theory.__version__, "quick": quick, "seed_offset": seed_offset(),
                                  "inputs": inputs, "record": rec.as_dict()})
    except OSError as e:
        raise SaveError(f"cannot save the record of {rec.id} to {saved}: {e.strerror or e}") from None


def _folders(first, more, skip=None) -> list:
    """The folders of first + more, each once (by resolved path), leaving out `skip`."""
    from pathlib import Path

    seen, out = {Path(skip).resolve()} if skip else set(), []
    for folder in [*first, *more]:
        if Path(folder).resolve() not in seen:
            seen.add(Path(folder).resolve())
            out.append(folder)
    return out


def run_all(quick: bool = False, only: list[str] | None = None, progress: bool = True,
            resume_dir=None, save_dirs=(), meta: dict | None = None) -> list[Record]:
    """Run the checks in order. With resume_dir, each finished record is saved there as ID.json and a
    record already saved by the same package version, mode and seed offset, with the same inputs hash
    (paper_checks/inputs.py), is reused (a killed run picks up, and a run after a code change reruns only the
    checks whose inputs changed), except a crashed one. A damaged saved record is reported in one stderr line and
    its check rerun; a record that cannot be saved raises SaveError (the records saved before it stay whole).
    Every record is also saved in each of save_dirs; meta, when given, gets {id: inputs} of every record."""
    from pathlib import Path

    from mmcl_theory.provenance import Tree, head_commit

    commit = head_commit()
    head = Tree(commit) if commit else None
    ids = only or list(CHECKS)
    # the inputs as this process imported them: a check whose input files change between now and its end ran
    # code that is not known (modules imported at the start, or lazily later), so its record is marked unknown
    at_start = {cid: inputs_now(cid, head)["source_hash"] for cid in ids}
    records = []
    for cid in ids:
        now = inputs_now(cid, head)
        saved = Path(resume_dir) / f"{cid}.json" if resume_dir else None
        if saved is not None and saved.is_file():
            rec, damage, inputs = load_saved(saved, cid, quick, now)
            if damage:
                print(f"[paper_checks] {saved}: damaged saved record, {' '.join(damage.split())}: not reused, "
                      f"{cid} is rerun", file=sys.stderr, flush=True)
            if rec is not None and rec.verdict == CRASHED:  # not a result: rerun (the cause may be fixed by now)
                if progress:
                    print(f"[paper_checks] {cid}: crashed in the saved run ({saved}): rerun", file=sys.stderr, flush=True)
            elif rec is not None:
                if progress:
                    print(f"[paper_checks] {cid}: {rec.verdict} (reused from {saved}: inputs {inputs['source_hash']} "
                          "unchanged)", file=sys.stderr, flush=True)
                records.append(rec)
                for folder in _folders([], save_dirs, skip=resume_dir):
                    save_record(folder, rec, quick, inputs)
                if meta is not None:
                    meta[cid] = inputs
                continue
        if progress:
            print(f"[paper_checks] {cid} ... (inputs {now['source_hash']})", file=sys.stderr, flush=True)
        rec = run_one(cid, quick)
        after = inputs_now(cid, head)
        if not after["source_hash"] == now["source_hash"] == at_start[cid]:  # an input changed since the start
            now = {**now, "source_hash": "changed-during-run",
                   "state": now["state"] + "; an input file changed after this run started, so the code that "
                                           "computed it is not known"}
        for folder in _folders([resume_dir] if resume_dir else [], save_dirs):
            save_record(folder, rec, quick, now)
        if meta is not None:
            meta[cid] = now
        if progress:
            print(f"[paper_checks] {cid}: {rec.verdict} ({rec.seconds:.1f} s) - {rec.why}", file=sys.stderr, flush=True)
        records.append(rec)
    return records


WHERE_THE_THEORY_STOPS = """## Where the theory stops

Measured regimes in which trained learners follow this package's linear-loss theory and where they
do not (the checks above test the closed forms; these rows test the trained encoders). Sources:
`python -m mmcl_theory.sweep temperature` (figures/temperature.csv: M1, r = 1, n 200, 5 seeds;
200 and 5000 Adam steps at d 2000, 5000 at d 10; embedding dim 8, exact test accuracy; the MLP rows
are from the earlier 3-seed, 200-step run, figures/temperature.csv at 6f708a1), the digits sweeps
(figures/digits*.csv), the paper_mnist sweep, the checks above, and docs/temperature.md.

| claim | follows the theory | parts from it |
| --- | --- | --- |
| TAU (InfoNCE at finite temperature) | the population InfoNCE optimum over linear encoders (theory.infonce_population_accuracy, batch n) predicts trained linear InfoNCE where it cannot memorise: n 200, d 10 (same sigma_xi^2/d), 5 seeds, 5000 steps, core prompt: flipped within 0.003 for tau 0.01-100 (0.973/0.976/0.975 vs 0.971/0.974/0.975 at tau 0.01/0.1/1); aligned 0.005-0.02 below for tau <= 30, a finite-n residual gone at n 800 | at the M1 defaults (d = 10 n) the encoders memorise the noise (loss 0.28 vs the optimum's 3.32 at tau 0.1; >99.9% of W off the latent) and drift at constant loss: 5000 steps give flipped 0.982/0.938/0.933, aligned 0.45/0.60/0.66; no prediction for that state. Class-mean prompt ill-conditioned (+-0.05), memorised learner -> sign(z_spu) (flipped 0.000-0.030 at tau <= 0.03). tau >~ 300: the optimum collapses, prediction undefined |
| C2/C4 with trained InfoNCE | the linear-loss theory describes it only early at large tau (200 steps, tau >= 30: flipped 0.67-0.72 vs 0.709; tau 1000 at 2000 steps: 0.703) | it is not the tau -> infinity limit of InfoNCE's optimum; trained longer the learner leaves it (tau 1000, 10000 steps: 0.966) |
| C2/C4 (earlier 200-step run, figures/temperature.csv at 6f708a1) | linear InfoNCE with the core prompt at large temperature: flipped 0.719 at tau = 30 against the theory's 0.709 and the closed form's 0.723 | tau <= 2: flipped 0.90-0.96 (core prompt), above the theory, with aligned accuracy falling to 0.57-0.76; with the class-mean caption prompt the large-tau limit is 0.553 against 0.640, and after long training at tau = 0.1 (loss 3.39 -> 0.31 from 200 to 1000 steps) its flipped accuracy collapses to 0.01-0.07 |
| C2/C4, MLP encoders | near tau = 30 only (0.693 flipped, core prompt) | below the theory beyond (0.572 at tau = 1000); aligned core-prompt accuracy near 0.5 for tau <= 2 (the core prompt, z_spu = 0, is unlike every training caption) |
| C1 (SL fails) | SL min-norm: minority-group accuracy falls as d grows past n (C1) | SL by plain gradient descent reaches only 0.291 flipped after 2000 steps at the M1 defaults (Adam 0.272, min-norm 0.031): the failure is a statement about the max-margin limit |
| C7 (digits, details reach the prompt) | the closed form on the sampled S equals its exact expectation (C7) | the closed form only reaches SL's level at r = 1 (sklearn 0.38 vs SL 0.28-0.33); linear InfoNCE rises more (0.32 -> 0.56) at a cost in aligned accuracy (0.999 -> 0.737); the MLP's rise depends on training length (0.31 -> 0.52 at 300 steps, 0.28 -> 0.19 at 1200) |
| T4.4/T5.2 (the paper's Data Model 1) | the closed form reaches the paper's formula as n grows (P* gap 0.0040 at n = 100 -> 0.0007 at n = 3000); pi_spu changes nothing at full rank, at every n | the formula is the population value, not a lower bound with slack: finite-n values sit on either side within the sampling error |
| T5.4 (the paper's Data Model 2) | "100% above pi~": the closed form reaches 1.000 at pi = 1 (n 200,000) | "<= 50% below pi~" is off by 2^-m: 0.5626 +- 0.0009 at m = 4 (exact 1/2 + 1/16); near pi~ the finite-n closed form needs n >> 20,000 (0.70 at 1.1 pi~, m = 20, n 20,000) |
| G1 (the paper's MNIST experiment) | at the paper's scale (60,000 images, 100 epochs) its OOD curves are reproduced within 3 points but at pi_core 0.25 (+4.5) (61.4 -> 75.8% over pi_core 0 -> 1 against 58.9 -> 76.2%; 71.4 -> 75.8% over pi_spu 0 -> 1 against 72.2 -> 76.2%); rich pi_core beats SL (+13.6 +- 1.0 points) and pi_core 0 -> 1 raises OOD (+14.3 +- 3.1) | SL reaches 62.1% against the paper's 69.0%, its off-colour accuracy still rising at epoch 40; MMCL's ID at pi_core = 0 is 95.1% against Fig. 5's 66.7%; pi_spu's effect (+4.2 +- 0.5 points, the paper's 4.1) is below pi_core's (+14.3 +- 3.1) but not by 3 s.e. at 3 seeds; at pi_spu = 0 one of 3 seeds diverged (unnormalised CLIP loss at tau 1: the logits grow to 133 in 5 epochs, then a gradient spike; bench/paper_mnist_divergence.py) |
| C6/C8 (real images) | - | not confirmed at the CPU size: coarse + fine names ER -0.78 [-1.17, -0.38] (3 seeds), all mosaic objects named -0.62 [-1.57, +0.33] (2 seeds); label vs rich (detail type (c)) +0.23 +- 0.21, one seed |

A finite-temperature prediction is derived for linear encoders in M1: the population InfoNCE optimum
(docs/temperature.md, sections 6-9). It holds where the encoders cannot memorise the training noise,
and fails by the amounts above at the M1 defaults, where they can.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def command_line(quick: bool = False, only: list[str] | None = None, resume=None, offset: int = 0) -> str:
    """The command of a run, as the report records it."""
    return ("python -m paper_checks" + (" --quick" if quick else "") + (f" --only {','.join(only)}" if only else "")
            + (f" --seed-offset {offset}" if offset else "") + (f" --resume {resume}" if resume else ""))


def _ratio(r: Record) -> str:
    return "-" if r.ratio is None else f"{r.ratio:.2f}"


OTHER_SEEDS = "records-offset-*"  # paper_checks/records-offset-K/: the same checks saved on another seed set


def seed_stability(records: list[Record], meta: dict, root=None) -> list[str]:
    """The 'Seed stability' section of the committed report: each check's verdict and ratio on this run's seeds
    beside those saved in paper_checks/records-offset-K/ (run with `--seed-offset K --resume` that folder). A saved
    check whose inputs hash is not this run's is marked stale; a missing one 'not run'. [] when no such folder."""
    import re
    from pathlib import Path

    root = Path(root) if root else Path(__file__).resolve().parent
    folders = sorted((p for p in root.glob(OTHER_SEEDS) if p.is_dir() and re.fullmatch(r"records-offset-\d+", p.name)),
                     key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not folders:
        return []
    offsets = [int(p.name.rsplit("-", 1)[1]) for p in folders]
    out = ["## Seed stability", "",
           "Each check on disjoint seed sets: this report's (seeds 0, 1, ...) and "
           + ", ".join(f"seeds {k}, {k + 1}, ... (`python -m paper_checks --seed-offset {k} --resume "
                       f"paper_checks/records-offset-{k}`)" for k in offsets)
           + ". Ratio: the largest over the check's judged comparisons of |diff| / tolerance, tolerance / effect, "
           "the distance past a bound in tolerances, or value / bound for a fixed threshold (<= 1 exactly when it "
           "passes; 'at' names the comparison). G1, C6 and C8 read stored "
           "results, so a seed set changes nothing there (C6's bootstrap aside).", "",
           "| id | seeds 0.. | ratio | at | " + " | ".join(f"seeds {k}.. | ratio | at" for k in offsets) + " |",
           "| --- | --- | --- | --- | " + " | ".join("--- | --- | ---" for _ in offsets) + " |"]
    for r in records:
        cells = [r.verdict, _ratio(r), _cell(r.ratio_at) or "-"]
        for folder, k in zip(folders, offsets):
            other, damage, inputs = load_saved(folder / f"{r.id}.json", r.id, False, None, k) \
                if (folder / f"{r.id}.json").is_file() else (None, "", None)
            if other is None:
                cells += ["not run" if not damage else "damaged record", "-", "-"]
            else:
                stale = meta.get(r.id) and inputs["source_hash"] != meta[r.id]["source_hash"]
                cells += [other.verdict + (" (stale: inputs changed)" if stale else ""), _ratio(other),
                          _cell(other.ratio_at) or "-"]
        out.append(f"| {r.id} | " + " | ".join(cells) + " |")
    return out + [""]


def render(records: list[Record], quick: bool, seconds: float, only: list[str] | None = None,
           meta: dict | None = None, command: str | None = None) -> str:
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
        f"- Command: `{command or command_line(quick, only, offset=seed_offset())}`",
        f"- Seeds: every check draws seeds {seed_offset()}, {seed_offset() + 1}, ... (seed offset {seed_offset()}"
        + ("; the committed report's set)." if seed_offset() == 0 else "; a second, disjoint seed set).")
        + (" Inputs: each check's section gives the source hash of its inputs (paper_checks/inputs.py: its module "
           "and what it imports, the models it runs, the files it reads; mmcl_theory/provenance.py); "
           "`python -m paper_checks --resume paper_checks/records` reruns only the checks whose inputs changed, "
           "and tests/test_provenance.py fails when a committed check's hash is not today's." if meta else ""),
        f"- Verdicts: {counts['pass']} pass, {counts['fail']} fail, {counts['not run']} not run, "
        f"{counts['crashed']} crashed.",
        "- The paper's errata, each with its test: [docs/paper_errata.md](../docs/paper_errata.md).",
        "",
        "Sources: *paper theorem* = a theorem or corollary of Xue et al. (ICLR 2024), its expectation written from "
        "the paper's own formula (docs/theory.md#the-papers-theorems); *paper experiment* = its App. G.1 experiment "
        "with the values of its Fig. 2; *paper claim* = a qualitative claim of the paper tested in this package's "
        "own models (docs/claims.md); *package derivation* = a number or identity of this package's own models "
        "M1/M2/M3 (docs/theory.md); "
        "*published: Sagawa et al. 2020* = their toy setting (Appendix A.4) and Theorem 1, restated in M1's parameters. "
        "Every expectation is independent of the code it checks: a closed form written out in the check, "
        "a second method, or the reference tables of docs/theory.md (which came from an independent NumPy simulation). "
        "Tolerances are 3 standard errors of the seed mean, plus the rounding of quoted numbers; "
        "the quick mode's tolerances are wider only because its standard errors are. "
        "*Ratio* = the largest, over the check's judged comparisons, of |diff| / tolerance (an equality), "
        "tolerance / effect (an effect that must exceed 3 s.e.), (value - bound) / tolerance past a bound that "
        "may be missed by 3 s.e. (T4.3, T4.4, T5.4; 0 inside it) or value / bound for a fixed threshold (Q2-Q4, "
        "C2, C3): the verdict is pass "
        "exactly when it is <= 1, and a ratio near 1 is a verdict that a seed draw can flip (common.Margins; "
        "'-' where nothing is judged).",
        "",
        "| id | claim | source | expected | measured | verdict | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        out.append(f"| {r.id} | {_cell(r.claim)} | {_cell(r.source)} | {_cell(r.expected)} | {_cell(r.measured)} | "
                   f"**{r.verdict}** | {_ratio(r)} |")
    out.append("")
    if meta and not quick and not only and seed_offset() == 0:
        out += seed_stability(records, meta)
    out += [WHERE_THE_THEORY_STOPS]
    for r in records:
        out += [f"## {r.id}: {r.verdict}", "", f"**Claim.** {r.claim}", "", f"**Source.** {r.source}", "",
                f"**Expected.** {r.expected}", "", f"**Measured.** {r.measured}", "",
                f"**Verdict.** {r.verdict}: {r.why}", "",
                f"Ratio: {_ratio(r)}" + (f" ({r.ratio_at})." if r.ratio_at else "."), "",
                f"Time: {r.seconds:.1f} s.", ""]
        if meta and r.id in meta:
            m = meta[r.id]
            out += [f"Inputs: source hash `{m['source_hash']}` over {len(m['files'])} files, run {m['date']}, "
                    f"{m['state']}.", ""]
        for line in r.details:
            out.append(line if line.startswith("|") or line.startswith("```") else f"- {line}")
        out.append("")
    return "\n".join(out)
