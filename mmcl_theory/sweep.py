"""`python -m mmcl_theory.sweep NAME`: run a named sweep (synthetic/NAME.toml), resumable.

A sweep varies one or more parameters (`param`, a name or a list of names swept one at a time)
over `values`, optionally for each value of a second parameter (`series`). Every point runs all
seeds and learners; points sharing static shapes are jit-compiled once and vmapped over seeds and
sweep values (sharded over local devices). Finished points are appended to points.jsonl as they
complete, so a killed sweep rerun with the same --out skips them. At the end it writes
results.csv / results.json (the results contract) and a figure, and prints a table.

Results contract, one row per accuracy:
    sweep, model, param, value, series, learner, test, seed, n, accuracy
`series` is "name=value" for two-axis sweeps and "" otherwise; theory rows have seed -1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import os
import sys
import time
import tomllib
from pathlib import Path

from . import __version__

SWEEP_DIR = Path(__file__).resolve().parent / "sweeps"
CONTRACT = ("sweep", "model", "param", "value", "series", "learner", "test", "seed", "n", "accuracy")


class SweepError(ValueError):
    """A bad sweep name, key, value or output directory: reported as one line, exit code 2."""


# ------------------------------------------------------------------ sweep definitions


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


def load_definition(name: str) -> dict:
    path = SWEEP_DIR / f"{name}.toml"
    if not path.is_file():
        raise SweepError(f"unknown sweep {name!r}: known sweeps are {', '.join(available_sweeps())}")
    with open(path, "rb") as f:
        return tomllib.load(f)


def _parse_value(text: str):
    """A --set value: TOML scalar or list (1, 0.5, true, [0, 1]); anything else is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _model_api(model: str):
    """(config class, valid config keys, settings class or None) for a sweep's model."""
    if model in ("M1", "M2"):
        from .datamodel import PRESETS
        from .learners import LearnerSettings

        cls = PRESETS[model]
        return cls, [f.name for f in dataclasses.fields(cls)], LearnerSettings
    if model == "digits":
        from .digits import DigitsConfig

        return DigitsConfig, [f.name for f in dataclasses.fields(DigitsConfig)], None
    raise SweepError(f"unknown model {model!r} in sweep definition: allowed M1, M2, digits")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved sweep: the points to run and everything that identifies the run."""

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
    description: str = ""

    def points(self) -> list[dict]:
        """One dict per point: {param, value, series, config overrides}."""
        out = []
        for param in self.params:
            for s in (self.series_values if self.series else [None]):
                for v in self.values:
                    overrides = dict(self.base)
                    if self.series:
                        overrides[self.series] = s
                    overrides[param] = v
                    out.append({"param": param, "value": v,
                                "series": f"{self.series}={s}" if self.series else "", "overrides": overrides})
        return out

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("description")
        return json.loads(json.dumps(d))


def make_plan(name: str, quick: bool = False, seeds: int | None = None, learners: list[str] | None = None,
              overrides: dict | None = None) -> Plan:
    """Resolve a sweep definition with --quick, --seeds, --learners and --set overrides."""
    spec = load_definition(name)
    model = spec["model"]
    config_cls, config_keys, settings_cls = _model_api(model)
    quick_table = dict(spec.get("quick", {})) if quick else {}
    pick = lambda key, default=None: quick_table.pop(key) if key in quick_table else spec.get(key, default)
    values, series_values = pick("values"), pick("series_values", [])
    n_seeds = seeds if seeds is not None else pick("seeds", 3)
    base = {**spec.get("base", {}), **quick_table}
    settings = dict(spec.get("settings", {}))
    settings_keys = [f.name for f in dataclasses.fields(settings_cls)] if settings_cls else []
    for key, value in (overrides or {}).items():
        if key in config_keys:
            base[key] = value
        elif key in settings_keys:
            settings[key] = value
        else:
            raise SweepError(f"unknown --set key {key!r} for model {model}: valid keys are "
                             f"{', '.join(config_keys + settings_keys)}")
    params = spec["param"] if isinstance(spec["param"], list) else [spec["param"]]
    swept = [k for k in (overrides or {}) if k in params or k == spec.get("series")]
    if swept:
        raise SweepError(f"--set {swept[0]} would be overwritten: sweep {name!r} varies {swept[0]!r} itself")
    for p in params + ([spec["series"]] if spec.get("series") else []):
        if p not in config_keys:
            raise SweepError(f"sweep {name!r} varies {p!r}, which is not a {model} parameter")
    known = _known_learners(model)
    chosen = learners or spec.get("learners", list(known))
    bad = [l for l in chosen if l not in known]
    if bad:
        raise SweepError(f"unknown learner(s) {', '.join(bad)} for model {model}: valid learners are {', '.join(known)}")
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise SweepError(f"--seeds = {n_seeds!r} is out of range: allowed integers >= 1")
    plan = Plan(name, model, tuple(params), tuple(values), spec.get("series"), tuple(series_values),
                tuple(range(n_seeds)), tuple(chosen), base, settings, spec.get("description", ""))
    for point in plan.points():  # validate every config before any work starts
        config_cls(**point["overrides"])
    if settings_cls:
        settings_cls(**settings)
    return plan


def _known_learners(model: str) -> tuple[str, ...]:
    if model == "digits":
        from .digits import LEARNERS

        return tuple(LEARNERS)
    from .evaluate import LEARNERS, THEORY_LEARNERS

    return THEORY_LEARNERS + LEARNERS


# ------------------------------------------------------------------ running points


def _theory_rows(cfg, learners, rank: int) -> list[dict]:
    from .datamodel import TESTS
    from .theory import bayes_core_accuracy, population_zero_shot_accuracy

    rows = []
    for test in TESTS:
        if "theory_mmcl" in learners:
            acc = population_zero_shot_accuracy(cfg, test, rank=rank or None)
            rows.append({"learner": "theory_mmcl", "test": test, "seed": -1, "accuracy": acc})
        if "bayes_core" in learners:
            rows.append({"learner": "bayes_core", "test": test, "seed": -1, "accuracy": bayes_core_accuracy(cfg)})
    return rows


def _run_synthetic_chunk(plan: Plan, chunk: list[dict], size: int) -> list[list[dict]]:
    """Run points sharing static shapes in one jit-compiled call, vmapped over values and seeds.

    The chunk is padded to `size` points (repeating its last one) so that every chunk of a sweep
    reuses one compilation; the padding's results are dropped.
    """
    import jax
    import jax.numpy as jnp

    from .datamodel import TESTS, make_config
    from .evaluate import LEARNERS, evaluate_point
    from .learners import LearnerSettings

    settings = LearnerSettings(**plan.settings)
    configs = [make_config(plan.model, **p["overrides"]) for p in chunk]
    sampled = tuple(l for l in plan.learners if l in LEARNERS)
    results = [_theory_rows(c, plan.learners, settings.rank) for c in configs]
    if sampled:
        padded = configs + configs[-1:] * (size - len(configs))
        stacked = jax.tree.map(lambda *xs: jnp.asarray(xs, jnp.float32), *padded)
        keys = jax.vmap(jax.random.key)(jnp.asarray(plan.seeds))
        stacked, keys = _shard(stacked, keys)
        run = _compiled_point(sampled, settings)
        acc = jax.device_get(run(keys, stacked))  # {learner: (points, seeds, tests)}
        for i, cfg in enumerate(configs):
            for learner in sampled:
                for s_idx, seed in enumerate(plan.seeds):
                    for t_idx, test in enumerate(TESTS):
                        results[i].append({"learner": learner, "test": test, "seed": seed,
                                           "accuracy": float(acc[learner][i, s_idx, t_idx])})
    for cfg, rows in zip(configs, results):
        for r in rows:
            r["n"] = cfg.n
    return results


_COMPILED = {}


def _compiled_point(learners, settings):
    """jit(vmap over values (vmap over seeds (evaluate_point))), cached per learners and settings."""
    import jax

    from .evaluate import evaluate_point

    key = (learners, settings)
    if key not in _COMPILED:
        per_seed = jax.vmap(lambda k, c: evaluate_point(k, c, settings, learners), in_axes=(0, None))
        _COMPILED[key] = jax.jit(jax.vmap(per_seed, in_axes=(None, 0)))
    return _COMPILED[key]


def _shard(stacked, keys):
    """Spread the sweep-value axis over all local accelerators when it divides evenly.

    CPU runs are not sharded: with 2 forced host devices (--xla_force_host_platform_device_count=2)
    the sharded program deadlocked in XLA on this 2-core machine (jax 0.10.2 always, 0.9.2 under load).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    n_points = jax.tree.leaves(stacked)[0].shape[0]
    if len(devices) == 1 or n_points % len(devices) or devices[0].platform == "cpu":
        return stacked, keys
    mesh = Mesh(devices, ("points",))
    stacked = jax.device_put(stacked, NamedSharding(mesh, PartitionSpec("points")))
    return stacked, jax.device_put(keys, NamedSharding(mesh, PartitionSpec()))


def _run_digits_point(plan: Plan, point: dict) -> list[dict]:
    from .digits import DigitsConfig, run_point

    return run_point(DigitsConfig(**point["overrides"]), list(plan.seeds), plan.learners)


def _static_signature(plan: Plan, point: dict):
    """Points with equal static (shape) fields share one compiled call."""
    if plan.model == "digits":
        return id(point)
    from .datamodel import make_config

    cfg = make_config(plan.model, **point["overrides"])
    return tuple(getattr(cfg, f) for f in ("n", "d", "n_test", "K") if hasattr(cfg, f))


# ------------------------------------------------------------------ storage


def _point_id(point: dict) -> str:
    return json.dumps([point["param"], point["value"], point["series"]])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_done(points_file: Path) -> dict[str, list[dict]]:
    """Completed points from points.jsonl; a line cut by a kill is ignored (that point reruns)."""
    done = {}
    if points_file.exists():
        for line in points_file.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["point"]] = rec["rows"]
    return done


def _prepare_out(out: Path, plan: Plan) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"cannot write to --out {out}: {e.strerror or e}") from None
    ident_file = out / "sweep.json"
    ident = plan.identity()
    if ident_file.exists():
        previous = json.loads(ident_file.read_text())
        if previous != ident:
            raise SweepError(f"{out} holds results of a different sweep configuration; "
                             "use another --out or delete it")
    else:
        _atomic_write(ident_file, json.dumps(ident, indent=1))


def run_sweep(plan: Plan, out: Path, chunk_size: int = 6, progress: bool = True) -> list[dict]:
    """Run every unfinished point of `plan`, appending to out/points.jsonl; return all contract rows."""
    from tqdm import tqdm

    _prepare_out(out, plan)
    points_file = out / "points.jsonl"
    done = _read_done(points_file)
    todo = [p for p in plan.points() if _point_id(p) not in done]
    groups: dict = {}
    for p in todo:
        groups.setdefault(_static_signature(plan, p), []).append(p)
    chunks = [(g[i:i + chunk_size], min(chunk_size, len(g))) for g in groups.values()
              for i in range(0, len(g), chunk_size)]
    bar = tqdm(total=len(plan.points()), initial=len(plan.points()) - len(todo), unit="point",
               desc=plan.name, disable=not progress, file=sys.stderr)
    with open(points_file, "a") as f:
        for chunk, size in chunks:
            if plan.model == "digits":
                results = [_run_digits_point(plan, p) for p in chunk]
            else:
                results = _run_synthetic_chunk(plan, chunk, size)
            for p, rows in zip(chunk, results):
                f.write(json.dumps({"point": _point_id(p), "rows": rows}) + "\n")
                done[_point_id(p)] = rows
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    bar.close()
    rows = []
    for p in plan.points():
        for r in done[_point_id(p)]:
            rows.append({"sweep": plan.name, "model": plan.model, "param": p["param"], "value": p["value"],
                         "series": p["series"], **r})
    return [{k: r[k] for k in CONTRACT} for r in rows]


def write_results(rows: list[dict], plan: Plan, out: Path, seconds: float) -> None:
    """results.csv (the contract) and results.json (rows + full config + package version)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CONTRACT)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out / "results.csv", buf.getvalue())
    meta = {"sweep": plan.name, "description": plan.description, "package_version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2), "plan": plan.identity(), "rows": rows}
    _atomic_write(out / "results.json", json.dumps(meta, indent=1))


def format_table(rows: list[dict]) -> str:
    """Per test distribution: value (and series) against theory and each learner, mean +- s.e. over seeds."""
    from .plotting import TESTS, summarise

    stats = summarise(rows)
    learners = list(dict.fromkeys(r["learner"] for r in rows))
    lines = []
    for test in TESTS:
        lines.append(f"\n== {test} test: accuracy, mean +- s.e. over seeds ==")
        header = f"{'param':>10} {'value':>8} {'series':>12} " + " ".join(f"{l:>20}" for l in learners)
        lines.append(header)
        for key in sorted({k[:3] for k in stats}, key=lambda k: (k[0], k[1], k[2])):
            cells = []
            for l in learners:
                m = stats.get((*key, l, test))
                cells.append(f"{'-':>20}" if m is None else
                             f"{m[0]:>12.3f}" + (f" +-{m[1]:.3f}" if m[2] > 1 else " " * 7) + " ")
            lines.append(f"{key[0]:>10} {key[2]:>8.4g} {key[1]:>12} " + " ".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mmcl_theory.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", help="sweep name (see --list)")
    ap.add_argument("--list", action="store_true", help="list the named sweeps and exit")
    ap.add_argument("--quick", action="store_true", help="fewer values, seeds and samples (seconds, not minutes)")
    ap.add_argument("--seeds", type=int, help="number of seeds (default: the sweep's)")
    ap.add_argument("--out", type=Path, help="output directory (default: runs/NAME[-quick])")
    ap.add_argument("--learners", help="comma-separated learners to run (default: the sweep's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model or learner parameter (repeatable)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="JAX backend (default cpu)")
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
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise SweepError(f"--set {item!r} must look like KEY=VALUE")
            key, value = item.split("=", 1)
            overrides[key.strip()] = _parse_value(value.strip())
        import jax

        jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
        if args.device == "gpu":
            try:
                jax.devices("gpu")
            except RuntimeError:
                raise SweepError("--device gpu was asked for, but JAX finds no GPU (install jax[cuda])") from None
        learners = args.learners.split(",") if args.learners else None
        plan = make_plan(args.name, args.quick, args.seeds, learners, overrides)
        out = args.out or Path("runs") / (args.name + ("-quick" if args.quick else ""))
        start = time.perf_counter()
        rows = run_sweep(plan, out, progress=not args.no_progress)
        seconds = time.perf_counter() - start
        write_results(rows, plan, out, seconds)
        from .plotting import plot_sweep

        plot_sweep(rows, out / f"{plan.name}.png", f"sweep {plan.name} ({plan.model})", plan.description)
        print(format_table(rows))
        print(f"\n{len(rows)} rows in {seconds:.1f} s; wrote {out / 'results.csv'}, {out / 'results.json'}, "
              f"{out / (plan.name + '.png')}")
        return 0
    except (SweepError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
