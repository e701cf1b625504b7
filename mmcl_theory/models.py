"""The registry of models, and evaluate_grid: the entry through which every model's points reach the one grid.

Models (docs/models.md): M1, M2 and DM2 (synthetic, datamodel.py, sample and learners in evaluate.py), digits
(M3, digits.py, learners in digits_learners.py) and paper_mnist (the paper's App. G.1 experiment,
paper_mnist.py). Each registers a `Model`: the config class of one point, the settings class its learners
take, its learners as learners.Learner records (name, kind, fit, score), its sampler, its compile mode, its
prompt sets, its evaluation routes and its memory estimate. grid.run_point runs a point of any of them; a row
is results.make_row's {learner, prompt, test, seed, n, accuracy, route, final_loss, loss_floor, converged}.

`evaluate_grid` runs any model's configs: it checks the route and the learner names against the
model, runs each config, shares a supervised learner's rows between configs that differ only in their
captions (where the model says which those are), and orders the rows by learner and prompt set. The
sweep, paper_checks and bench reach every model through it, so none of them branches on a model.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Model:
    """One registered model.

    learners: its learners.Learner records, in the order a sweep lists them by default.
    sample: (config, seed) -> grid.Sample, one seed's train, tests and prompts (a JAX function of the seed in
        mode 'map', NumPy otherwise).
    mode: how the grid compiles its learners: 'map', 'vmap' or 'step' (grid.py).
    prompts: the prompt sets a zero-shot learner is scored with (rows in this order).
    train_size: config -> n, the rows' training-set size.
    memory: (config, settings, fitted learner records, route) -> (bytes, how they were counted) of the largest
        arrays one seed of the fitted learners holds (sweep/memory.py checks it before any work starts).
    check: (config, learner records, settings) -> None, raising ConfigError for a combination its fields
        cannot refuse alone (None: none).
    caption_free: config -> the config with every caption-only field at one fixed value (None: no such
        fields); supervised learners see no captions, so their rows are computed once per caption-free config.
    """

    name: str
    config_cls: type
    settings_cls: type
    learners: tuple
    sample: Callable
    mode: str
    prompts: tuple[str, ...]
    train_size: Callable
    memory: Callable
    routes: tuple[str, ...] = ("exact", "sampled")
    check: Callable | None = None
    caption_free: Callable | None = None

    @property
    def learner_names(self) -> tuple[str, ...]:
        return tuple(learner.name for learner in self.learners)

    def records(self, names: Sequence[str]) -> tuple:
        """The Learner records of `names`, in that order; an unknown name is a ValueError listing the known ones,
        a name given twice or a bare string (not a sequence of names) a ValueError."""
        if isinstance(names, str):
            raise ValueError(f"learners must be a sequence of names, not the string {names!r}")
        twice = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        if twice:
            raise ValueError(f"learner(s) {', '.join(twice)} listed more than once: each learner is run once per point")
        table = {learner.name: learner for learner in self.learners}
        unknown = [name for name in names if name not in table]
        if unknown:
            raise ValueError(f"unknown learner(s) {', '.join(unknown)} for model {self.name}: allowed "
                             f"{', '.join(self.learner_names)}")
        return tuple(table[name] for name in names)

    def route(self, route: str | None = None) -> str:
        """`route`, or the model's default (its first) when None; a route the model does not have is a ValueError
        listing the ones it has."""
        route = route or self.routes[0]
        if route not in self.routes:
            raise ValueError(f"evaluation route {route!r} is not available for model {self.name}: "
                             f"allowed {', '.join(self.routes)}")
        return route


def _synthetic(name: str) -> Model:
    from . import evaluate
    from .datamodel import PRESETS, caption_free
    from .learners import LearnerSettings

    learners = evaluate.LEARNERS + (evaluate.M1_LEARNERS if name == "M1" else ())
    # DM2's test latents are discrete: the exact route's Gaussian test groups do not describe them (docs/models.md)
    exact = name != "DM2"
    return Model(name, PRESETS[name], LearnerSettings, learners, functools.partial(evaluate.sample, exact=exact),
                 "map", evaluate.PROMPTS, lambda cfg: cfg.n, evaluate.memory,
                 routes=evaluate.ROUTES if exact else ("sampled",), caption_free=caption_free)


def _digits() -> Model:
    from . import digits, digits_learners as dl

    return Model("digits", digits.DigitsConfig, dl.DigitsLearnerSettings, dl.LEARNERS, dl.sample, "vmap",
                 digits.PROMPTS, lambda cfg: cfg.n_train, dl.memory, routes=("sampled",), check=dl.check)


def _paper_mnist() -> Model:
    from . import paper_mnist as pm

    return Model("paper_mnist", pm.PaperMnistConfig, pm.PaperMnistSettings, pm.LEARNERS, pm.sample, "step",
                 (pm.PROMPT,), lambda cfg: cfg.n_train, pm.memory, routes=("sampled",), check=pm.check)


_BUILDERS: dict[str, Callable[[], Model]] = {"M1": lambda: _synthetic("M1"), "M2": lambda: _synthetic("M2"),
                                              "DM2": lambda: _synthetic("DM2"), "digits": _digits,
                                              "paper_mnist": _paper_mnist}
MODEL_NAMES = tuple(_BUILDERS)


@functools.lru_cache(maxsize=None)
def get_model(name: str) -> Model:
    """The registry entry of `name`; an unknown name is a ValueError listing the known ones."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}: allowed {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name]()


def model_of(config) -> Model:
    """The registered model whose config class `config` is an instance of (exactly)."""
    for name in MODEL_NAMES:
        model = get_model(name)
        if type(config) is model.config_cls:
            return model
    raise ValueError(f"{type(config).__name__} is not the config of a registered model ({', '.join(MODEL_NAMES)})")


def evaluate_grid(configs: Sequence, seeds: Sequence[int], learners: Sequence[str], settings=None,
                  route: str | None = None, on_point: Callable[[int, list[dict]], None] | None = None) -> list[list[dict]]:
    """Rows for every config of one model (found from the configs' class): per config, every learner x prompt
    x seed x test, theory rows included, ordered by `learners` and then by the model's prompt sets.

    settings: the model's settings (default: its defaults); route: one of the model's routes (default its
    first). Supervised learners run once per distinct model.caption_free(config) and share their rows;
    on_point(i, rows) is called as each config finishes. A bad route, learner name, settings class or mixed
    configs is a ValueError.
    """
    from .grid import run_point

    configs = list(configs)
    if not configs:
        return []
    model = model_of(configs[0])
    mixed = {type(c).__name__ for c in configs if type(c) is not model.config_cls}
    if mixed:
        raise ValueError(f"configs of one grid must all be {model.config_cls.__name__}: got {', '.join(sorted(mixed))}")
    route = model.route(route)
    records = model.records(learners)
    settings = model.settings_cls() if settings is None else settings
    if type(settings) is not model.settings_cls:
        raise ValueError(f"settings for model {model.name} must be {model.settings_cls.__name__}: got "
                         f"{type(settings).__name__}")
    if route == "exact":
        no_form = [l.name for l in records if l.fit is not None and l.exact is None]
        if no_form:
            raise ValueError(f"learner(s) {', '.join(no_form)} of model {model.name} have no exact form "
                             "(Learner.exact): use the route sampled")
    seeds = [int(s) for s in seeds]
    shared = tuple(l for l in records if l.kind == "supervised") if model.caption_free else ()
    own = tuple(l for l in records if l not in shared)
    order = {l.name: i for i, l in enumerate(records)}
    prompt_order = {p: i for i, p in enumerate(model.prompts)}
    shared_rows: dict = {}
    out = []
    for i, cfg in enumerate(configs):
        rows = run_point(model, cfg, seeds, own, settings, route) if own else []
        if shared:
            image_cfg = model.caption_free(cfg)
            if image_cfg not in shared_rows:
                shared_rows[image_cfg] = run_point(model, image_cfg, seeds, shared, settings, route)
            rows = rows + shared_rows[image_cfg]
        rows.sort(key=lambda r: (order[r["learner"]], prompt_order.get(r["prompt"], -1)))
        out.append(rows)
        if on_point:
            on_point(i, rows)
    return out
