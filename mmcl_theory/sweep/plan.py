"""Sweep definitions (mmcl_theory/sweeps/NAME.toml) and the plan of one run: its points, seeds, learners, route."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path

from ..config import field_types, parse_value, split_override

SWEEP_DIR = Path(__file__).resolve().parents[1] / "sweeps"


class SweepError(ValueError):
    """A bad sweep name, key, value, output directory or resume state: one line, exit code 2."""


# ------------------------------------------------------------------ sweep definitions


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.toml"))


# Top-level keys of a sweep definition (module doc): name -> what a value must be.
MAX_SEEDS = 10_000  # seeds of one sweep: every point keeps a row per seed, learner, prompt and test
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # a sweep's name: its figure's and default --out's file name
DEFINITION_KEYS = {
    "name": "a name of letters, digits, '_', '.' and '-' (default: the file's stem)",
    "model": "a model name string (required)", "description": "a string",
    "param": "a parameter name or a non-empty list of them (required)", "values": "a non-empty list (required)",
    "seeds": f"an integer in [1, {MAX_SEEDS}]", "learners": "a non-empty list of learner names",
    "series": "a parameter name", "series_values": "a list", "base": "a table", "settings": "a table",
    "quick": "a table", "variants": "a table",
}
_names = lambda v: isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
_GOOD = {"name": lambda v: isinstance(v, str) and re.fullmatch(NAME_PATTERN, v),
         "model": lambda v: isinstance(v, str) and v, "description": lambda v: isinstance(v, str),
         "param": lambda v: (isinstance(v, str) and v) or _names(v), "values": lambda v: isinstance(v, list) and v,
         "series": lambda v: isinstance(v, str) and v, "learners": _names, "series_values": lambda v: isinstance(v, list),
         "seeds": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SEEDS}  # the rest: tables


def _definition_problem(spec: dict) -> str | None:
    """What is wrong with a parsed sweep definition, in a few words, or None."""
    missing = [k for k in ("model", "param", "values") if k not in spec]
    if missing:
        return f"missing required key(s) {', '.join(missing)}" + (" (the file is empty)" if not spec else "")
    unknown = sorted(set(spec) - set(DEFINITION_KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}: allowed {', '.join(DEFINITION_KEYS)}"
    for key, value in spec.items():
        if not _GOOD.get(key, lambda v: isinstance(v, dict))(value):
            return f"{key} = {value!r} is not allowed: {DEFINITION_KEYS[key]}"
    quick = spec.get("quick", {})
    for where, table in [("quick", quick), *((f"variants.{v}", t) for v, t in spec.get("variants", {}).items())]:
        if not isinstance(table, dict):
            return f"{where} = {table!r} is not allowed: a table"
        for key in ("values", "series_values", "seeds", "learners", "settings"):
            if key in table and not _GOOD.get(key, lambda v: isinstance(v, dict))(table[key]):
                return f"{where}.{key} = {table[key]!r} is not allowed: {DEFINITION_KEYS[key].removesuffix(' (required)')}"
    return None


def _tables_problem(spec: dict, model) -> str | None:
    """What is wrong with the tables of a parsed definition for its model, or None: a key that is none of the
    model's parameters or learner settings (or not allowed in that table), a variant's learner the model lacks."""
    config, settings = list(field_types(model.config_cls)), list(field_types(model.settings_cls))
    quick = spec.get("quick", {})
    tables = [("base", spec.get("base", {}), config), ("settings", spec.get("settings", {}), settings),
              ("quick", quick, ["values", "series_values", "seeds", "settings", *config]),
              ("quick.settings", quick.get("settings", {}), settings),
              *((f"variants.{v}", t, ["values", "learners", *config, *settings]) for v, t in spec.get("variants", {}).items())]
    for where, table, allowed in tables:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            return f"unknown key(s) {', '.join(unknown)} in [{where}]: allowed {', '.join(allowed)}"
        bad = [l for l in table.get("learners", []) if where.startswith("variants.") and l not in model.learner_names]
        if bad:
            return (f"{where}.learners: unknown learner(s) {', '.join(bad)} for model {model.name}: valid learners are "
                    f"{', '.join(model.learner_names)}")
    return None


def definition_path(name: str) -> Path:
    """The file of a sweep given by NAME (SWEEP_DIR/NAME.toml) or by a path to a TOML file (one holding a '/' or
    ending in '.toml')."""
    if name.endswith(".toml") or "/" in name or os.sep in name:
        return Path(name)
    return SWEEP_DIR / f"{name}.toml"


def load_definition(name: str) -> dict:
    """The parsed definition of sweep NAME, or of the TOML file at a path (definition_path), with its "name" set
    (the file's own `name`, else the file's stem: a plain name, never a path). An unknown name or missing file, a
    file that is not TOML, or one without the required keys (model, param, values) or with keys or values of the
    wrong kind is a SweepError (one line)."""
    path = definition_path(name)
    if not path.is_file():
        if path.parent == SWEEP_DIR:
            raise SweepError(f"unknown sweep {name!r}: known sweeps are {', '.join(available_sweeps())}")
        raise SweepError(f"sweep definition {path} is not a file: give a named sweep ({', '.join(available_sweeps())}) "
                         "or the path of a TOML sweep definition")
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"sweep definition {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise SweepError(f"sweep definition {path} cannot be read: {e.strerror or e}") from None
    problem = _definition_problem(spec)
    if problem:
        raise SweepError(f"sweep definition {path}: {problem}")
    if "name" not in spec and not re.fullmatch(NAME_PATTERN, path.stem):
        raise SweepError(f"sweep definition {path}: its file name {path.stem!r} is not a sweep name (letters, digits, "
                         "'_', '.', '-'); give it a `name`")
    return {**spec, "name": spec.get("name", path.stem)}


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
    from ..models import get_model

    spec, path = load_definition(name), definition_path(name)
    name = spec["name"]  # the definition's name, also for a sweep given as a file path
    try:
        model = get_model(spec["model"])
    except ValueError as e:
        raise SweepError(f"sweep definition {path}: {e}") from None
    problem = _tables_problem(spec, model)
    if problem:
        raise SweepError(f"sweep definition {path}: {problem}")
    config_types, settings_types = field_types(model.config_cls), field_types(model.settings_cls)
    quick_table = dict(spec.get("quick", {})) if quick else {}
    pick = lambda key, default=None: quick_table.pop(key, spec.get(key, default))
    values, series_values = pick("values"), pick("series_values", [])
    default_seeds = pick("seeds", 3)
    quick_settings = quick_table.pop("settings", {})
    n_seeds = default_seeds if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 1 <= n_seeds <= MAX_SEEDS:
        raise SweepError(f"--seeds = {n_seeds!r} is out of range: allowed integers in [1, {MAX_SEEDS}]")
    base, settings = {**spec.get("base", {}), **quick_table}, {**spec.get("settings", {}), **quick_settings}
    params = spec["param"] if isinstance(spec["param"], list) else [spec["param"]]
    axes = params + ([spec["series"]] if spec.get("series") else [])
    variants = spec.get("variants") or {}
    items = overrides.items() if isinstance(overrides, dict) else (split_override(i) for i in overrides or [])
    for key, text in items:
        if key in axes:
            raise SweepError(f"--set {key} would be overwritten: sweep {name!r} varies {key!r} itself")
        setters = [v for v, table in variants.items() if key in table and key not in ("values", "learners")]
        if setters:
            raise SweepError(f"--set {key} would be overwritten: variant(s) {', '.join(setters)} of sweep {name!r} "
                             f"set {key} themselves")
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
    chosen = tuple(learners or spec.get("learners", model.learner_names))
    bad = [l for l in chosen if l not in model.learner_names]
    if bad:
        raise SweepError(f"unknown learner(s) {', '.join(bad)} for model {model.name}: valid learners are "
                         f"{', '.join(model.learner_names)}")
    try:
        model.records(chosen)  # the grid's own check of the list (a name given twice)
    except ValueError as e:
        raise SweepError(str(e)) from None
    try:
        route = model.route(route)  # the grid's own check of the route
    except ValueError as e:
        raise SweepError(str(e)) from None
    # the second axis: a series parameter, or named variants (override tables), or nothing
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
    if not points:
        raise SweepError(f"sweep definition {path}: no point to run: none of its variants runs any of the learners "
                         f"{', '.join(chosen)}")
    return dataclasses.replace(plan, points=tuple(points))
