"""`python -m mmcl_theory.sweep NAME`: run a named sweep (synthetic/NAME.toml), resumable.

A sweep varies one or more parameters (`param`, a name or a list of names swept one at a time)
over `values`, optionally for each value of a second parameter (`series`). A swept parameter may be
a model parameter or a learner setting (e.g. `steps`). Every point runs all seeds and learners
through the model registry (models.py); for the synthetic models that is evaluate.evaluate_grid,
one compiled call per point, vmapped over seeds. Finished points are appended to points.jsonl as
they complete, each line tagged with the plan's hash, so a killed sweep rerun with the same --out
skips them and lines of another plan are refused. At the end it writes results.csv / results.json
(the results contract) and a figure, and prints a table.

Results contract, one row per accuracy: CONTRACT below. `series` is "name=value" for two-axis
sweeps and "" otherwise; theory rows have seed -1; `prompt` is the zero-shot prompt ("core",
"class_mean"; "" for SL); `route` says how the accuracy was computed (evaluate.py); `final_loss`,
`loss_floor`, `converged` are a trained learner's final training loss, the floor of that loss and
whether it stopped moving (docs/learners.md#convergence), "" for theory rows and closed forms.
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

from .config import ConfigError, field_types, parse_value, split_override
from .io import CorruptFileError, append_jsonl, atomic_write_csv, atomic_write_json, read_jsonl, run_header

SWEEP_DIR = Path(__file__).resolve().parent / "sweeps"
CONTRACT = ("sweep", "model", "param", "value", "series", "learner", "prompt", "test", "seed", "n", "accuracy",
            "route", "final_loss", "loss_floor", "converged")
ROW_KEYS = ("learner", "prompt", "test", "seed", "n", "accuracy", "route", "final_loss", "loss_floor", "converged")


class SweepError(ValueError):
    """A bad sweep name, key, value, output directory or resume state: one line, exit code 2."""


# ------------------------------------------------------------------ sweep definitions


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


def load_definition(name: str) -> dict:
    path = SWEEP_DIR / f"{name}.toml"
    if not path.is_file():
        raise SweepError(f"unknown sweep {name!r}: known sweeps are {', '.join(available_sweeps())}")
    with open(path, "rb") as f:
        return tomllib.load(f)


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a sweep: the swept value, its series label, and the resolved config and settings."""

    param: str
    value: object
    series: str
    config: object
    settings: object

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
              overrides: list[str] | dict | None = None, route: str = "exact") -> Plan:
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
    n_seeds = default_seeds if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise SweepError(f"--seeds = {n_seeds!r} is out of range: allowed integers >= 1")
    base, settings = {**spec.get("base", {}), **quick_table}, dict(spec.get("settings", {}))
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
    if route not in model.routes:
        raise SweepError(f"unknown evaluation route {route!r} for model {model.name}: allowed {', '.join(model.routes)}")
    plan = Plan(name, model.name, tuple(params), tuple(values), spec.get("series"), tuple(series_values),
                tuple(range(n_seeds)), chosen, base, settings, route, spec.get("description", ""))
    points = []
    for param in params:
        for s in (series_values if plan.series else [None]):
            for v in values:
                swept = {param: v, **({plan.series: s} if plan.series else {})}
                cfg_kw = {**base, **{k: x for k, x in swept.items() if k in config_types}}
                set_kw = {**settings, **{k: x for k, x in swept.items() if k not in config_types}}
                points.append(Point(param, v, f"{plan.series}={s}" if plan.series else "",
                                    model.config_cls(**cfg_kw), model.settings_cls(**set_kw)))
    return dataclasses.replace(plan, points=tuple(points))


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


def run_sweep(plan: Plan, out: Path, progress: bool = True) -> list[dict]:
    """Run every unfinished point of `plan`, appending to out/points.jsonl; return all contract rows.

    Points sharing learner settings go to the model's runner in one call (so SL learners are
    trained once per caption-free config); each finished point is appended at once.
    """
    from tqdm import tqdm

    from .models import get_model, run_points

    _prepare_out(out, plan)
    points_file = out / "points.jsonl"
    done = read_done(points_file, plan)
    todo = [p for p in plan.points if p.id not in done]
    model = get_model(plan.model)
    bar = tqdm(total=len(plan.points), initial=len(plan.points) - len(todo), unit="point", desc=plan.name,
               disable=not progress, file=sys.stderr, smoothing=0.3)
    groups: dict = {}
    for p in todo:
        groups.setdefault(p.settings, []).append(p)
    for settings, group in groups.items():
        def finished(i, rows, group=group):
            append_jsonl(points_file, {"plan": plan.hash, "point": group[i].id, "rows": rows})
            done[group[i].id] = rows
            bar.update(1)

        run_points(model, [p.config for p in group], plan.seeds, plan.learners, settings, plan.route, finished)
    bar.close()
    return [{"sweep": plan.name, "model": plan.model, "param": p.param, "value": p.value, "series": p.series,
             **{k: r[k] for k in ROW_KEYS}} for p in plan.points for r in done[p.id]]


def write_results(rows: list[dict], plan: Plan, out: Path, seconds: float) -> list[Path]:
    """results.csv (the contract) and results.json (run header, plan, rows, seconds); returns the paths."""
    atomic_write_csv(out / "results.csv", rows, CONTRACT)
    atomic_write_json(out / "results.json", {**run_header(plan.identity()), "sweep": plan.name,
                                             "description": plan.description, "plan_hash": plan.hash,
                                             "seconds": round(seconds, 2), "rows": rows})
    return [out / "results.csv", out / "results.json"]


def format_table(rows: list[dict]) -> str:
    """Per test distribution: value (and series) against theory and each learner, mean +- s.e. over seeds."""
    from .plotting import TESTS, curve_label, summarise

    stats = summarise(rows)
    curves = list(dict.fromkeys((r["learner"], r["prompt"]) for r in rows))
    width = max(20, *(len(curve_label(*c, short=True)) + 1 for c in curves))
    lines = []
    for test in TESTS:
        lines.append(f"\n== {test} test: accuracy, mean +- s.e. over seeds ==")
        lines.append(f"{'param':>10} {'value':>8} {'series':>12} "
                     + " ".join(f"{curve_label(*c, short=True):>{width}}" for c in curves))
        for key in sorted({k[:3] for k in stats}, key=lambda k: (k[0], k[1], k[2])):
            cells = []
            for learner, prompt in curves:
                m = stats.get((*key, learner, prompt, test))
                cells.append(f"{'-':>{width}}" if m is None else
                             f"{m[0]:>{width - 8}.3f}" + (f" +-{m[1]:.3f}" if m[2] > 1 else " " * 7) + " ")
            lines.append(f"{key[0]:>10} {key[2]:>8.4g} {key[1]:>12} " + " ".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------ JAX setup


def default_cache_dir() -> Path:
    """The user cache folder for jax's persistent compilation cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmcl_theory" / "jax"


def setup_jax(device: str = "cpu", compile_cache: bool = True) -> None:
    """Choose the backend (one line if a GPU is asked for and missing) and turn on the compile cache."""
    import jax

    jax.config.update("jax_platforms", "cuda" if device == "gpu" else "cpu")
    if device == "gpu":
        try:
            jax.devices("gpu")
        except Exception:  # jax raises RuntimeError or backend-specific errors when CUDA is absent
            raise SweepError("--device gpu was asked for, but JAX finds no GPU (install jax[cuda12] on a GPU "
                             "machine, or use --device cpu)") from None
    if compile_cache and not os.environ.get("MMCL_NO_COMPILE_CACHE"):
        jax.config.update("jax_compilation_cache_dir", str(default_cache_dir()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
    ap.add_argument("--route", default="exact",
                    help="evaluation route: exact (test-distribution accuracy; default) or sampled (d-dim test sets)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="JAX backend (default cpu)")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help=f"do not use jax's persistent compilation cache (default folder {default_cache_dir()})")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list:
            for name in available_sweeps():
                print(f"{name:20s} {load_definition(name).get('description', '')}")
            return 0
        if not args.name:
            raise SweepError(f"give a sweep name: one of {', '.join(available_sweeps())}")
        learners = [l.strip() for l in args.learners.split(",")] if args.learners else None
        plan = make_plan(args.name, args.quick, args.seeds, learners, args.set, args.route)
        setup_jax(args.device, not args.no_compile_cache)
        out = args.out or Path("runs") / (args.name + ("-quick" if args.quick else ""))
        start = time.perf_counter()
        rows = run_sweep(plan, out, progress=not args.no_progress)
        seconds = time.perf_counter() - start
        written = write_results(rows, plan, out, seconds)
        from .plotting import plot_sweep

        figure = out / f"{plan.name}.png"
        plot_sweep(rows, figure, f"sweep {plan.name} ({plan.model})", plan.description)
        print(format_table(rows))
        print(f"\n{len(rows)} rows in {seconds:.1f} s; wrote "
              + ", ".join(str(p) for p in [*written, figure, out / "points.jsonl", out / "sweep.json"]))
        return 0
    except (ConfigError, SweepError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
