"""`python -m mmcl_theory.sweep NAME`: run a named sweep (synthetic/NAME.toml), resumable.

A sweep varies one or more parameters (`param`, a name or a list of names swept one at a time)
over `values`, optionally for each value of a second parameter (`series`), or for each of its named
`[variants.NAME]` tables (each with config or settings overrides, and optionally its own `values`
and `learners`; the series column reads "variant=NAME"). A swept parameter may be a model parameter
or a learner setting (e.g. `steps`). Every point runs all seeds and learners
through the model registry (models.py); for the synthetic models that is evaluate.evaluate_grid,
one compiled call per point, seeds mapped inside it. Finished points are appended to points.jsonl as
they complete, each line tagged with the plan's hash, so a killed sweep rerun with the same --out
skips them and lines of another plan are refused. At the end it writes results.csv / results.json
(the results contract) and a figure, and prints a table.

Results contract, one row per accuracy: results.CONTRACT (described in results.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
import tomllib
from pathlib import Path

from .config import ConfigError, field_types, option_type, parse_value, split_override
from .io import CorruptFileError, append_jsonl, atomic_write_csv, atomic_write_json, read_jsonl, run_header
from .results import CONTRACT, ROW_KEYS, format_table
from .runtime import default_cache_dir, error_exit, quiet_jax_logs, setup_jax

SWEEP_DIR = Path(__file__).resolve().parent / "sweeps"


class SweepError(ValueError):
    """A bad sweep name, key, value, output directory or resume state: one line, exit code 2."""


# ------------------------------------------------------------------ sweep definitions


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


# Top-level keys of a sweep definition (module doc): name -> what a value must be.
DEFINITION_KEYS = {
    "name": "a string", "model": "a model name string (required)", "description": "a string",
    "param": "a parameter name or a non-empty list of them (required)", "values": "a non-empty list (required)",
    "seeds": "an integer >= 1", "learners": "a non-empty list of learner names", "series": "a parameter name",
    "series_values": "a list", "base": "a table", "settings": "a table", "quick": "a table", "variants": "a table",
}


def _definition_problem(spec: dict) -> str | None:
    """What is wrong with a parsed sweep definition, in a few words, or None."""
    missing = [k for k in ("model", "param", "values") if k not in spec]
    if missing:
        return f"missing required key(s) {', '.join(missing)}" + (" (the file is empty)" if not spec else "")
    unknown = sorted(set(spec) - set(DEFINITION_KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}: allowed {', '.join(DEFINITION_KEYS)}"
    names = lambda v: isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
    ok = {"name": lambda v: isinstance(v, str), "model": lambda v: isinstance(v, str) and v,
          "description": lambda v: isinstance(v, str), "param": lambda v: (isinstance(v, str) and v) or names(v),
          "values": lambda v: isinstance(v, list) and v, "series": lambda v: isinstance(v, str) and v,
          "seeds": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "learners": names,
          "series_values": lambda v: isinstance(v, list)}
    for key, value in spec.items():
        good = ok.get(key, lambda v: isinstance(v, dict))(value)
        if not good:
            return f"{key} = {value!r} is not allowed: {DEFINITION_KEYS[key]}"
    return None


def load_definition(name: str) -> dict:
    """The parsed definition SWEEP_DIR/NAME.toml; an unknown name, a file that is not TOML, or one without the
    required keys (model, param, values) or with keys or values of the wrong kind is a SweepError (one line)."""
    path = SWEEP_DIR / f"{name}.toml"
    if not path.is_file():
        raise SweepError(f"unknown sweep {name!r}: known sweeps are {', '.join(available_sweeps())}")
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"sweep definition {path} is not valid TOML: {e}") from None
    problem = _definition_problem(spec)
    if problem:
        raise SweepError(f"sweep definition {path}: {problem}")
    return spec


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a sweep: the swept value, its series label, and the resolved config and settings."""

    param: str
    value: object
    series: str
    config: object
    settings: object
    learners: tuple[str, ...]

    @property
    def id(self) -> str:
        return json.dumps([self.param, self.value, self.series])


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved sweep: everything that identifies the run, and its points (configs built once)."""

    name: str
    model: str
    params: tuple[str, ...]
    values: tuple
    series: str | None
    series_values: tuple
    seeds: tuple[int, ...]
    learners: tuple[str, ...]
    base: dict
    settings: dict
    route: str
    description: str = ""
    points: tuple[Point, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def identity(self) -> dict:
        """The plan as JSON-ready data (no description, no built configs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("description", "points")}

    @property
    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the identity; tags every points.jsonl line."""
        text = json.dumps(self.identity(), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_plan(name: str, quick: bool = False, seeds: int | None = None, learners: list[str] | None = None,
              overrides: list[str] | dict | None = None, route: str | None = None) -> Plan:
    """Resolve a sweep definition with --quick, --seeds, --learners, --set KEY=VALUE and --route.

    Every point's config and settings are built (and so validated) here, before any work starts.
    """
    from .models import get_model

    spec = load_definition(name)
    model = get_model(spec["model"])
    config_types, settings_types = field_types(model.config_cls), field_types(model.settings_cls)
    quick_table = dict(spec.get("quick", {})) if quick else {}
    pick = lambda key, default=None: quick_table.pop(key, spec.get(key, default))
    values, series_values = pick("values"), pick("series_values", [])
    default_seeds = pick("seeds", 3)
    quick_settings = quick_table.pop("settings", {})
    n_seeds = default_seeds if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise SweepError(f"--seeds = {n_seeds!r} is out of range: allowed integers >= 1")
    base, settings = {**spec.get("base", {}), **quick_table}, {**spec.get("settings", {}), **quick_settings}
    params = spec["param"] if isinstance(spec["param"], list) else [spec["param"]]
    axes = params + ([spec["series"]] if spec.get("series") else [])
    items = overrides.items() if isinstance(overrides, dict) else (split_override(i) for i in overrides or [])
    for key, text in items:
        if key in axes:
            raise SweepError(f"--set {key} would be overwritten: sweep {name!r} varies {key!r} itself")
        if key in config_types:
            base[key] = parse_value(key, text, config_types[key]) if isinstance(text, str) else text
        elif key in settings_types:
            settings[key] = parse_value(key, text, settings_types[key]) if isinstance(text, str) else text
        else:
            raise SweepError(f"unknown --set key {key!r} for model {model.name}: valid keys are "
                             f"{', '.join(list(config_types) + list(settings_types))}")
    for p in axes:
        if p not in config_types and p not in settings_types:
            raise SweepError(f"sweep {name!r} varies {p!r}, which is neither a {model.name} parameter nor a learner setting")
    chosen = tuple(learners or spec.get("learners", model.learners))
    bad = [l for l in chosen if l not in model.learners]
    if bad:
        raise SweepError(f"unknown learner(s) {', '.join(bad)} for model {model.name}: valid learners are "
                         f"{', '.join(model.learners)}")
    route = route or model.routes[0]
    if route not in model.routes:
        raise SweepError(f"unknown evaluation route {route!r} for model {model.name}: allowed {', '.join(model.routes)}")
    # the second axis: a series parameter, or named variants (override tables), or nothing
    variants = spec.get("variants")
    if variants:
        axis = [(f"variant={v}", dict(t)) for v, t in variants.items()]
    elif spec.get("series"):
        axis = [(f"{spec['series']}={s}", {spec["series"]: s}) for s in series_values]
    else:
        axis = [("", {})]
    plan = Plan(name, model.name, tuple(params), tuple(values), spec.get("series"), tuple(series_values),
                tuple(range(n_seeds)), chosen, base, settings, route, spec.get("description", ""))
    points = []
    for param in params:
        for label, table in axis:
            table = dict(table)
            own_values = table.pop("values", values)
            own_values = [v for v in own_values if v in values] or own_values[:1] if quick else own_values
            own_learners = tuple(l for l in table.pop("learners", chosen) if l in chosen)
            if not own_learners:
                continue
            for v in own_values:
                swept = {**table, param: v}
                cfg_kw = {**base, **{k: x for k, x in swept.items() if k in config_types}}
                set_kw = {**settings, **{k: x for k, x in swept.items() if k not in config_types}}
                points.append(Point(param, v, label, model.config_cls(**cfg_kw), model.settings_cls(**set_kw),
                                    own_learners))
    return dataclasses.replace(plan, points=tuple(points))


# ------------------------------------------------------------------ memory, before any work starts
#
# A point of a synthetic model (M1, M2) allocates, per seed (seeds run one after another, lax.map), the training
# images and captions and their noise draws in n x d, working copies of the images (the centred images of the
# closed form, the transposes and QR factors of min-norm SL), an n x n or d x d Gram or R factor, the d-dimensional
# test sets of the sampled route, and for K > 2 classes on the exact route the score-space Monte Carlo of every
# test group (K^2 groups x MC_DRAWS draws x K scores). A point whose estimate exceeds the memory available is
# refused before anything is written, with the estimate and the limit, instead of failing out of memory mid-run.

ND_ARRAYS = 6  # n x d float32 arrays alive at once: images, captions, their two noise draws, two working copies
BYTES = 4  # float32


def point_memory(cfg, settings, learners, route: str) -> tuple[int, str]:
    """(bytes, how it was counted) of the largest arrays one point allocates per seed; 0 when it draws no data
    (theory rows only) or its config has no n and d (the digits models, whose data are fixed images)."""
    from .evaluate import LINEAR_LEARNERS, MC_DRAWS, THEORY_LEARNERS

    n, d, n_test = getattr(cfg, "n", None), getattr(cfg, "d", None), getattr(cfg, "n_test", 0)
    if not all(isinstance(x, int) for x in (n, d)) or all(l in THEORY_LEARNERS for l in learners):
        return 0, "no sampled data"
    terms = [(ND_ARRAYS * n * d, f"{ND_ARRAYS} arrays of n x d (n = {n}, d = {d})"),
             (2 * min(n, d) ** 2, "2 of min(n, d)^2")]
    if route == "sampled":
        terms.append((6 * n_test * d, f"6 test arrays of n_test x d (n_test = {n_test})"))
    K = getattr(cfg, "num_classes", 2)
    if route == "exact" and K > 2 and any(l in LINEAR_LEARNERS for l in learners):
        terms.append((K * K * (2 * MC_DRAWS * K + K * K), f"the score Monte Carlo of K^2 groups (K = {K})"))
    width = getattr(settings, "width", 0)
    if route == "exact" and any(l not in LINEAR_LEARNERS + THEORY_LEARNERS for l in learners):
        terms.append((4 * n_test * max(width, cfg.latent_dim), "4 test draws of n_test x width (MLP learners)"))
    return BYTES * sum(t for t, _ in terms), " + ".join(h for _, h in terms) + " float32"


def available_memory(device: str = "cpu") -> tuple[int | None, str]:
    """(bytes, where from) of memory a run may use: the accelerator's limit for device 'gpu' when JAX reports one,
    else the host's available memory (MemAvailable of /proc/meminfo, or sysconf's available pages); None if unknown."""
    if device == "gpu":
        try:
            import jax

            limit = jax.devices()[0].memory_stats().get("bytes_limit")
            if limit:
                return int(limit), "the GPU's memory limit"
        except Exception:  # no stats on this backend: fall back to the host's memory
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available pages (sysconf)"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def _gib(b: float) -> str:
    return f"{b / 2**30:.3g} GiB"


def check_memory(points, route: str, device: str = "cpu", at_once: int = 1) -> None:
    """SweepError (one line: the estimate, how it was counted, and the limit) when the largest point, times
    `at_once` points running together, needs more memory than available_memory(device)."""
    if not points:
        return
    (need, how), point = max(((point_memory(p.config, p.settings, p.learners, route), p) for p in points),
                             key=lambda x: x[0][0])
    limit, source = available_memory(device)
    if limit is None or need * at_once <= limit:
        return
    where = f"{point.param} = {point.value}" + (f", {point.series}" if point.series else "")
    times = f" x {at_once} parts at once" if at_once > 1 else ""
    raise SweepError(f"point {where} needs about {_gib(need)} of memory{times} ({how}), more than the "
                     f"{_gib(limit)} available here ({source}); lower n, d or n_test, or run it where there is more memory")


# ------------------------------------------------------------------ storage and resume


def _prepare_out(out: Path, plan: Plan) -> None:
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file: give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"cannot write to --out {out}: {e.strerror or e}") from None
    ident_file = out / "sweep.json"
    if ident_file.exists():
        try:
            previous = json.loads(ident_file.read_text()).get("hash")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise SweepError(f"{ident_file} is corrupt: delete it (points.jsonl keeps the finished points)") from None
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
        if rec.get("point") not in ids or not isinstance(rows, list) or not all(
                isinstance(r, dict) and set(ROW_KEYS) <= set(r) for r in rows):
            raise SweepError(f"{points_file}, line {i}: not a point of this plan with rows {list(ROW_KEYS)}; "
                             "delete the file to start afresh")
        done[rec["point"]] = rows
    return done


def run_sweep(plan: Plan, out: Path, progress: bool = True, points_name: str = "points.jsonl") -> list[dict]:
    """Run every unfinished point of `plan`, appending to out/points.jsonl (or out/`points_name`);
    return all contract rows.

    Points sharing learner settings go to the model's runner in one call (so SL learners are
    trained once per caption-free config); each finished point is appended at once.
    """
    from tqdm import tqdm

    import jax

    from .models import get_model, run_points

    check_memory(plan.points, plan.route, "gpu" if jax.default_backend() == "gpu" else "cpu")
    _prepare_out(out, plan)
    points_file = out / points_name
    done = read_done(points_file, plan)
    todo = [p for p in plan.points if p.id not in done]
    model = get_model(plan.model)
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

        run_points(model, [p.config for p in group], plan.seeds, learners, settings, plan.route, finished)
    bar.close()
    return contract_rows(plan, done)


def contract_rows(plan: Plan, done: dict[str, list[dict]]) -> list[dict]:
    """The contract rows of every point of `plan`, in plan order, from {point id: rows}."""
    return [{"sweep": plan.name, "model": plan.model, "param": p.param, "value": p.value, "series": p.series,
             **{k: r[k] for k in ROW_KEYS}} for p in plan.points for r in done[p.id]]


def write_results(rows: list[dict], plan: Plan, out: Path, seconds: float) -> list[Path]:
    """results.csv (the contract) and results.json (run header, plan, rows, seconds); returns the paths."""
    atomic_write_csv(out / "results.csv", rows, CONTRACT)
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
    _prepare_out(out, plan)
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


def run_part_job(plan_args: dict, n: int, out: str, device: str, compile_cache: bool, k: int) -> int:
    """Part k of n in a process of its own (a submitit task): set up JAX, run or resume the part; its row count."""
    setup_jax(device, compile_cache)
    _, rows, _ = run_part(plan_args, k, n, Path(out), progress=False)
    return len(rows)


def part_command(plan_args: dict, k: int, n: int, out: Path, device: str = "cpu",
                 compile_cache: bool = True) -> list[str]:
    """The command line that runs part k of n of make_plan(**plan_args) into out."""
    argv = [sys.executable, "-m", "mmcl_theory.sweep", plan_args["name"], "--part", f"{k}/{n}", "--out", str(out),
            "--device", device, "--no-progress"]
    argv += ["--quick"] if plan_args["quick"] else []
    argv += ["--route", plan_args["route"]] if plan_args["route"] is not None else []
    argv += ["--seeds", str(plan_args["seeds"])] if plan_args["seeds"] is not None else []
    argv += ["--learners", ",".join(plan_args["learners"])] if plan_args["learners"] is not None else []
    for item in plan_args["overrides"]:
        argv += ["--set", item]
    return argv + ([] if compile_cache else ["--no-compile-cache"])


def _remove_created(existed: dict[Path, bool]) -> None:
    """Remove each path of `existed` (folder or file) that did not exist before; the deepest first."""
    import shutil

    for path in sorted(existed, key=lambda p: len(p.parts), reverse=True):
        if not existed[path] and path.exists():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


def launch_parts(plan: Plan, plan_args: dict, out: Path, options, executor=None) -> int:
    """Run all options.parts parts with cluster.py's launcher (or on `executor`, a submitit executor),
    wait, and merge them into out. options: cluster.LaunchOptions. Returns the exit code: 0 when merged
    (or submitted, without wait), 1 when a part failed (rerunning the command resumes it)."""
    import functools

    from . import sweep as importable  # this module by its import name, not __main__: submitit pickles by reference
    from .cluster import LaunchError, PartJob, run_array, run_local, slurm_executor, wait_with_progress

    n = options.parts
    part_points(plan, 1, n)  # n <= number of points, or one line
    if executor is None and options.launcher == "slurm":
        executor = slurm_executor(out / "submitit", f"mmcl-{plan.name}", options)  # or one line, before any write
    if executor is None:  # local parts run here, up to run_local's parallelism at once (SLURM nodes check their own)
        check_memory(plan.points, plan.route, options.device, min(options.parallelism or os.cpu_count() or 1, n))
    before = {p: p.exists() for p in (out, out / "sweep.json", out / "submitit")}
    _prepare_out(out, plan)  # sweep.json once, before the parts start at the same time
    files = [out / f"points.{part_label(k, n)}.jsonl" for k in range(1, n + 1)]
    count = lambda: sum(f.read_bytes().count(b"\n") for f in files if f.is_file())
    wait = functools.partial(wait_with_progress, count=count, total=len(plan.points), desc=f"{plan.name} ({n} parts)",
                             progress=options.progress)
    if executor is None:  # local processes
        commands = [part_command(plan_args, k, n, out, options.device, options.compile_cache) for k in range(1, n + 1)]
        failed = run_local(commands, [out / "logs" / f"{part_label(k, n)}.log" for k in range(1, n + 1)],
                           options.parallelism, wait)
    else:
        job = PartJob(functools.partial(importable.run_part_job, plan_args, n, str(out), options.device,
                                        options.compile_cache))
        try:
            failed = run_array(executor, job, n, wait if options.wait else None)
        except LaunchError:  # nothing was submitted: leave out as it was, so the corrected command starts afresh
            _remove_created(before)
            raise
        if failed is None:
            print(f"logs in {out / 'submitit'}; when every part is done: python -m mmcl_theory.sweep merge {out}")
            return 0
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(failed)} of {n} parts failed; rerun the same command to resume them "
              "(finished points are kept)", file=sys.stderr)
        return 1
    merged, rows, seconds = merge_parts([out])
    finish(rows, merged, out, seconds)
    return 0


# ------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    from .config import ArgumentParser

    ap = ArgumentParser(prog="python -m mmcl_theory.sweep", description=__doc__.split("\n")[0],
                        epilog="Models, learners and claims: docs/models.md, docs/learners.md, docs/claims.md.")
    ap.add_argument("name", nargs="?", help="sweep name (see --list)")
    ap.add_argument("--list", action="store_true", help="list the named sweeps and exit")
    ap.add_argument("--quick", action="store_true",
                    help="the sweep's [quick] variant: fewer values, seeds and test points (timings in BENCHMARKS.md)")
    ap.add_argument("--seeds", type=int, help="number of seeds (default: the sweep's)")
    ap.add_argument("--out", type=Path, help="output directory (default: runs/NAME, or runs/NAME-quick)")
    ap.add_argument("--learners", help="comma-separated learners to run (default: the sweep's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model parameter or learner setting (repeatable; typed by the field)")
    ap.add_argument("--route", help="evaluation route: exact (test-distribution accuracy; the synthetic models' "
                                     "default) or sampled (test sets drawn; the digits model's only route)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="JAX backend (default cpu)")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help=f"do not use jax's persistent compilation cache (default folder {default_cache_dir()})")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cl = ap.add_argument_group("parts and launchers (README, 'On a cluster')")
    cl.add_argument("--part", metavar="K/N",
                    help="run only part K of N (points K-1, K-1+N, ...) into OUT/points.part-K-of-N.jsonl; "
                         "combine the parts with `python -m mmcl_theory.sweep merge OUT...`")
    cl.add_argument("--launcher", choices=("local", "slurm"),
                    help="run --parts N parts as local processes, or as one SLURM job array (submitit, extra "
                         "[cluster]), then merge them into OUT")
    cl.add_argument("--parts", type=option_type("--parts", int, 1, 10**6), metavar="N", help="number of parts for --launcher")
    cl.add_argument("--array-parallelism", type=option_type("--array-parallelism", int, 1, 10**6), metavar="M",
                    help="most parts running at once (default: all; local: at most the number of CPU cores)")
    cl.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition (default: the cluster's)")
    cl.add_argument("--time-min", type=option_type("--time-min", int, 1, 10**6), default=60, metavar="MINUTES",
                    help="time limit of each SLURM part in minutes (default 60); a part stopped at the limit "
                         "or preempted is requeued and resumes from its points file")
    cl.add_argument("--gpus-per-task", type=option_type("--gpus-per-task", int, 0, 64), default=0, metavar="G",
                    help="GPUs of each SLURM part (default 0; >0 needs --device gpu)")
    cl.add_argument("--cpus-per-task", type=option_type("--cpus-per-task", int, 1, 1024), metavar="C",
                    help="CPU cores of each SLURM part (default: the cluster's)")
    cl.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. account=proj or qos=long (repeatable)")
    cl.add_argument("--no-wait", action="store_true",
                    help="with --launcher slurm: submit, print the job ids and the merge command, and exit")
    return ap


def _merge_parser() -> argparse.ArgumentParser:
    from .config import ArgumentParser

    ap = ArgumentParser(prog="python -m mmcl_theory.sweep merge",
                        description="Combine the parts of a sweep (--part K/N) into results.csv, results.json and "
                                    "the figure.")
    ap.add_argument("outs", nargs="+", type=Path, metavar="OUT", help="folders holding the parts")
    ap.add_argument("--out", type=Path, help="where to write the merged results (default: the first OUT)")
    return ap


def finish(rows: list[dict], plan: Plan, out: Path, seconds: float, also: tuple[Path, ...] = ()) -> None:
    """Write results.csv, results.json and the figure of a whole sweep, and print its table (and the
    paths written, then `also`)."""
    from .plotting import plot_sweep

    written = write_results(rows, plan, out, seconds)
    figure = out / f"{plan.name}.png"
    plot_sweep(rows, figure, f"sweep {plan.name} ({plan.model})", plan.description)
    print(format_table(rows))
    print(f"\n{len(rows)} rows in {seconds:.1f} s; wrote " + ", ".join(str(p) for p in [*written, figure, *also]))


def merge_main(argv) -> int:
    """`python -m mmcl_theory.sweep merge OUT... [--out DIR]`."""
    args = _merge_parser().parse_args(argv)
    try:
        plan, rows, seconds = merge_parts(args.outs)
        out = args.out or args.outs[0]
        _prepare_out(out, plan)
        finish(rows, plan, out, seconds)
        return 0
    except (ConfigError, SweepError, ValueError, FileNotFoundError) as e:
        return error_exit(e)


def main(argv=None) -> int:
    quiet_jax_logs()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.list:
            for name in available_sweeps():
                try:
                    about = load_definition(name).get("description", "")
                except SweepError as e:
                    about = f"(not usable: {e})"
                print(f"{name:20s} {about}")
            return 0
        if not args.name:
            raise SweepError(f"give a sweep name: one of {', '.join(available_sweeps())}")
        learners = [l.strip() for l in args.learners.split(",")] if args.learners is not None else None
        part = parse_part(args.part) if args.part else None
        plan_args = dict(name=args.name, quick=args.quick, seeds=args.seeds, learners=learners,
                         overrides=list(args.set), route=args.route)
        plan = make_plan(**plan_args)
        out = args.out or Path("runs") / (args.name + ("-quick" if args.quick else ""))
        if args.launcher or args.parts:
            from .cluster import options_from_args

            return launch_parts(plan, plan_args, out, options_from_args(args))
        setup_jax(args.device, not args.no_compile_cache)
        if part:
            plan, rows, seconds = run_part(plan_args, *part, out, progress=not args.no_progress)
            print(f"part {part[0]}/{part[1]} of sweep {plan.name} (plan {plan.hash}): {len(rows)} rows in "
                  f"{seconds:.1f} s; wrote {out / f'points.{part_label(*part)}.jsonl'}; when every part is done: "
                  f"python -m mmcl_theory.sweep merge {out}")
            return 0
        start = time.perf_counter()
        rows = run_sweep(plan, out, progress=not args.no_progress)
        finish(rows, plan, out, time.perf_counter() - start, (out / "points.jsonl", out / "sweep.json"))
        return 0
    except (ConfigError, SweepError, ValueError, FileNotFoundError) as e:
        return error_exit(e)


if __name__ == "__main__":
    sys.exit(main())
