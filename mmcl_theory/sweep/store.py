"""Storage of a sweep run: the output folder, resume from points.jsonl, results, and parts with their merge."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path

from ..io import (CorruptFileError, append_jsonl, atomic_write_csv, atomic_write_json, atomic_write_text, read_jsonl,
                  remove_stale_temps, run_header, temp_path)
from ..results import CONTRACT, ROW_KEYS, SUMMARY_WIDTH, format_summary, format_table
from .memory import check_memory
from .plan import Plan, Point, SweepError, make_plan

# ------------------------------------------------------------------ storage and resume


def prepare_out(out: Path, plan: Plan) -> None:
    """Make `out` (or check it) for `plan`: writable, temporary files of killed writers removed, sweep.json of this
    plan (written here, or refused when it names another plan)."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file: give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = temp_path(out / ".write_test")  # one per process: parts probe the same folder at once
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"cannot write to --out {out}: {e.strerror or e}") from None
    remove_stale_temps(out)
    ident_file = out / "sweep.json"
    if ident_file.exists():
        try:
            previous = json.loads(ident_file.read_text()).get("hash")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            previous = None
        if not isinstance(previous, str):
            raise SweepError(f"{ident_file} is corrupt: delete it (points.jsonl keeps the finished points)")
        if previous != plan.hash:
            raise SweepError(f"{out} holds results of a different sweep configuration (plan {previous}, this run "
                             f"{plan.hash}); use another --out or delete it")
    else:
        atomic_write_json(ident_file, {"hash": plan.hash, "plan": plan.identity()})


def read_done(points_file: Path, plan: Plan) -> dict[str, list[dict]]:
    """Finished points of this plan from points.jsonl (io.read_jsonl's torn-tail policy).

    A line of another plan, or of the wrong shape, is refused with one line naming the file.
    """
    try:
        records = read_jsonl(points_file)
    except CorruptFileError as e:
        raise SweepError(str(e)) from None
    ids = {p.id for p in plan.points}
    done = {}
    for i, rec in enumerate(records, 1):
        rows = rec.get("rows")
        if rec.get("plan") != plan.hash:
            raise SweepError(f"{points_file}, line {i}: a point of another sweep plan ({rec.get('plan')!r}, "
                             f"this run {plan.hash}); use another --out or delete the file")
        if rec.get("point") not in ids or not isinstance(rows, list) or not all(map(_is_row, rows)):
            raise SweepError(f"{points_file}, line {i}: not a point of this plan with rows {list(ROW_KEYS)} (accuracy "
                             "a number in [0, 1], seed and n integers); delete the file to start afresh")
        done[rec["point"]] = rows
    return done


def _is_row(row) -> bool:
    """A result row as run_point writes it: the ROW_KEYS, the accuracy a number in [0, 1], seed and n integers."""
    return (isinstance(row, dict) and set(ROW_KEYS) <= set(row) and type(row["seed"]) is int and type(row["n"]) is int
            and type(row["accuracy"]) in (int, float) and 0 <= row["accuracy"] <= 1
            and all(isinstance(row[k], str) for k in ("learner", "prompt", "test", "route")))


def run_sweep(plan: Plan, out: Path, progress: bool = True, points_name: str = "points.jsonl") -> list[dict]:
    """Run every unfinished point of `plan`, appending to out/points.jsonl (or out/`points_name`);
    return all contract rows.

    Points sharing learner settings go to models.evaluate_grid in one call (so SL learners are
    trained once per caption-free config); each finished point is appended at once.
    """
    import jax
    from tqdm import tqdm

    from ..models import evaluate_grid

    check_memory(plan.points, plan.route, "gpu" if jax.default_backend() == "gpu" else "cpu")
    prepare_out(out, plan)
    points_file = out / points_name
    done = read_done(points_file, plan)
    todo = [p for p in plan.points if p.id not in done]
    bar = tqdm(total=len(plan.points), initial=len(plan.points) - len(todo), unit="point", desc=plan.name,
               disable=not progress, file=sys.stderr, smoothing=0.3)
    groups: dict = {}
    for p in todo:
        groups.setdefault((p.settings, p.learners), []).append(p)
    for (settings, learners), group in groups.items():
        def finished(i, rows, group=group):
            append_jsonl(points_file, {"plan": plan.hash, "point": group[i].id, "rows": rows})
            done[group[i].id] = rows
            bar.update(1)

        evaluate_grid([p.config for p in group], plan.seeds, learners, settings, plan.route, finished)
    bar.close()
    return contract_rows(plan, done)


def contract_rows(plan: Plan, done: dict[str, list[dict]]) -> list[dict]:
    """The contract rows of every point of `plan`, in plan order, from {point id: rows}; a row's 'curve'
    (accuracy every few epochs, paper_mnist) is kept for results.json, not results.csv."""
    return [{"sweep": plan.name, "model": plan.model, "param": p.param, "value": p.value, "series": p.series,
             **{k: r[k] for k in ROW_KEYS}, **({"curve": r["curve"]} if "curve" in r else {})}
            for p in plan.points for r in done[p.id]]


def write_results(rows: list[dict], plan: Plan, out: Path, seconds: float) -> list[Path]:
    """results.csv (the contract) and results.json (run header, plan, rows, seconds); returns the paths."""
    atomic_write_csv(out / "results.csv", [{k: r[k] for k in CONTRACT} for r in rows], CONTRACT)
    atomic_write_json(out / "results.json", {**run_header(plan.identity()), "sweep": plan.name,
                                             "description": plan.description, "plan_hash": plan.hash,
                                             "seconds": round(seconds, 2), "rows": rows})
    return [out / "results.csv", out / "results.json"]


# ------------------------------------------------------------------ parts and merge
#
# A sweep split over processes or machines: part k of N (1 <= k <= N) runs the points with index
# i = k - 1 (mod N) of the same plan, appends them to OUT/points.part-k-of-N.jsonl (resuming from it
# like a whole sweep) and records itself in OUT/part-k-of-N.json (plan hash, make_plan arguments,
# its points, whether it finished). `merge` rebuilds the plan from those arguments, checks every part
# against it, and writes the usual results.csv / results.json / figure.


def parse_part(text: str) -> tuple[int, int]:
    """'k/N' -> (k, N) with 1 <= k <= N; anything else is a SweepError."""
    k_text, sep, n_text = text.partition("/")
    if sep and k_text.strip().isdecimal() and n_text.strip().isdecimal():
        k, n = int(k_text), int(n_text)
        if 1 <= k <= n:
            return k, n
    raise SweepError(f"--part {text!r} is not allowed: K/N with integers 1 <= K <= N (e.g. --part 1/4)")


def part_label(k: int, n: int) -> str:
    """'part-k-of-N': the stem of a part's record (part-k-of-N.json) and points file (points.part-k-of-N.jsonl)."""
    return f"part-{k}-of-{n}"


def part_points(plan: Plan, k: int, n: int) -> tuple[Point, ...]:
    """The points of part k of n: plan.points[i] for i = k - 1, k - 1 + n, ... (round robin by index)."""
    if n > len(plan.points):
        raise SweepError(f"{n} parts asked for, but sweep {plan.name!r} has only {len(plan.points)} points: "
                         f"use at most {len(plan.points)} parts")
    return plan.points[k - 1::n]


def run_part(plan_args: dict, k: int, n: int, out: Path, progress: bool = True) -> tuple[Plan, list[dict], float]:
    """Run (or resume) part k of n of the plan make_plan(**plan_args) into out; return (plan, rows, seconds).

    Writes out/part-k-of-N.json before starting and again, with "finished" and "seconds", at the end.
    """
    import jax

    start = time.perf_counter()
    plan = make_plan(**plan_args)
    points = part_points(plan, k, n)
    check_memory(points, plan.route, "gpu" if jax.default_backend() == "gpu" else "cpu")
    prepare_out(out, plan)
    record = {"plan": plan.hash, "part": [k, n], "make_plan": plan_args, "points": [p.id for p in points],
              "finished": False, "seconds": None}
    atomic_write_json(out / f"{part_label(k, n)}.json", record)
    rows = run_sweep(dataclasses.replace(plan, points=points), out, progress, f"points.{part_label(k, n)}.jsonl")
    seconds = time.perf_counter() - start
    atomic_write_json(out / f"{part_label(k, n)}.json", {**record, "finished": True, "seconds": round(seconds, 2)})
    return plan, rows, seconds


PART_RECORD_KEYS = ("plan", "part", "make_plan", "points", "finished", "seconds")  # what run_part writes
PLAN_ARG_KEYS = ("name", "quick", "seeds", "learners", "overrides", "route")  # make_plan's arguments, as recorded


def _part_record_problem(record) -> str | None:
    """What is wrong with a parsed part record, in a few words, or None (the keys and kinds run_part writes)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for what, keys, table in (("", PART_RECORD_KEYS, record), ("make_plan ", PLAN_ARG_KEYS, record.get("make_plan"))):
        if not isinstance(table, dict):
            return f"{what.strip() or 'record'} is not a JSON object"
        missing, extra = [k for k in keys if k not in table], sorted(set(table) - set(keys))
        if missing or extra:
            return "; ".join(([f"{what}key(s) {', '.join(missing)} missing"] if missing else [])
                             + ([f"unexpected {what}key(s) {', '.join(extra)}"] if extra else []))
    part, args = record["part"], record["make_plan"]
    if not (isinstance(part, list) and len(part) == 2 and all(type(x) is int for x in part) and 1 <= part[0] <= part[1]):
        return f"part = {part!r} is not [K, N] with 1 <= K <= N"
    checks = [(isinstance(record["plan"], str), "plan"),
              (isinstance(record["points"], list) and all(isinstance(p, str) for p in record["points"]), "points"),
              (isinstance(record["finished"], bool), "finished"),
              (record["seconds"] is None or type(record["seconds"]) in (int, float), "seconds"),
              (isinstance(args["name"], str), "make_plan.name"), (isinstance(args["quick"], bool), "make_plan.quick"),
              (isinstance(args["overrides"], list) and all(isinstance(o, str) for o in args["overrides"]),
               "make_plan.overrides")]
    bad = [name for good, name in checks if not good]
    return f"{', '.join(bad)} of the wrong kind" if bad else None


def _read_part_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
        problem = "not JSON"
    else:
        problem = _part_record_problem(record)
    if problem:
        raise SweepError(f"merge: {path} is not a sweep part record (written by --part K/N): {problem}; delete it "
                         "or rerun that part")
    return record


def merge_parts(outs: list[Path]) -> tuple[Plan, list[dict], float]:
    """Combine the parts found in the folders `outs` into (plan, contract rows in plan order, seconds).

    Refused with one line (SweepError): a folder that is missing or holds no parts, parts of different
    plans, a plan that no longer resolves to the recorded hash, a point in two parts, a missing point.
    seconds is the sum of the parts' run times.
    """
    found = []
    for out in outs:
        if not out.is_dir():
            raise SweepError(f"merge: {out} is not a folder (give the --out folders of the sweep's parts)")
        paths = sorted(out.glob("part-*-of-*.json"))
        if not paths:
            raise SweepError(f"merge: {out} holds no sweep parts (part-K-of-N.json); run the sweep with "
                             f"--part K/N --out {out} first")
        found += [(out, path, _read_part_record(path)) for path in paths]
    first_path, first = found[0][1], found[0][2]
    for _, path, record in found:
        if record["plan"] != first["plan"]:
            raise SweepError(f"merge: parts of different sweep plans: {first_path} is plan {first['plan']}, "
                             f"{path} is plan {record['plan']}")
    plan = make_plan(**first["make_plan"])
    if plan.hash != first["plan"]:
        raise SweepError(f"merge: {first_path} was run as plan {first['plan']}, but its options now resolve to "
                         f"plan {plan.hash} (the sweep definition changed); rerun the parts")
    done: dict[str, list[dict]] = {}
    source: dict[str, Path] = {}
    unfinished = []
    for out, _, record in found:
        k, n = record["part"]
        points_file = out / f"points.{part_label(k, n)}.jsonl"
        part_done = read_done(points_file, plan)
        for point_id, rows in part_done.items():
            if point_id in source:
                raise SweepError(f"merge: overlapping parts: point {point_id} is in {source[point_id]} and in "
                                 f"{points_file}; merge each part once")
            done[point_id], source[point_id] = rows, points_file
        if len(part_done) < len(record["points"]):
            unfinished.append(f"part {k}/{n} in {out} has {len(part_done)} of {len(record['points'])} points")
    missing = [p.id for p in plan.points if p.id not in done]
    if missing:
        given = {tuple(r["part"]) for _, _, r in found}
        absent = [f"part {k}/{n}" for n in sorted({n for _, n in given}) for k in range(1, n + 1)
                  if (k, n) not in given]
        why = "; ".join(unfinished + ([f"not given: {', '.join(absent)}"] if absent else []))
        raise SweepError(f"merge: {len(missing)} of {len(plan.points)} points missing (first {missing[0]}): {why} "
                         "(rerun an unfinished part's command to resume it)")
    seconds = sum(r["seconds"] or 0.0 for _, _, r in found)
    return plan, contract_rows(plan, done), seconds


def finish(rows: list[dict], plan: Plan, out: Path, seconds: float, also: tuple[Path, ...] = ()) -> None:
    """Write results.csv, results.json, the full table (table.txt: every test, learner and value) and the
    figure of a whole sweep, and print its summary (results.format_summary, at most 100 columns) and the
    files written (then `also`)."""
    from ..plotting import plot_sweep

    written = write_results(rows, plan, out, seconds)
    table = out / "table.txt"
    atomic_write_text(table, f"sweep {plan.name} ({plan.model}): {plan.description}\n{format_table(rows)}\n")
    figure = out / f"{plan.name}.png"
    plot_sweep(rows, figure, f"sweep {plan.name} ({plan.model})", plan.description)
    print(format_summary(rows, table=str(table), figure=str(figure)))
    paths = [*written, table, figure, *also]
    names = ", ".join(p.name if p.parent == out else str(p) for p in paths)
    print("\n".join(textwrap.wrap(f"{len(rows)} rows in {seconds:.1f} s; wrote {names} in {out}", SUMMARY_WIDTH,
                                   break_long_words=False, break_on_hyphens=False)))
