"""The registry of models a sweep can run: M1, M2 (synthetic, datamodel.py), digits (M3, digits.py) and
paper_mnist (the paper's App. G.1 experiment, paper_mnist.py).

Each entry says which config class describes one point, which settings class its learners take,
which learners it knows, and how to run a list of points:

    run(configs, seeds, learners, settings, route, on_point) -> per config a list of rows
    row: {learner, prompt, test, seed, n, accuracy, route}

The sweep reads only this table, so it has no per-model branches (docs/models.md describes the models).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Model:
    """One registered model: its config and settings classes, learners, and its runner."""

    name: str
    config_cls: type
    settings_cls: type
    learners: tuple[str, ...]
    run: Callable[..., list[list[dict]]]
    routes: tuple[str, ...] = ("exact", "sampled")


def _synthetic(name: str) -> Model:
    from . import evaluate
    from .datamodel import PRESETS
    from .learners import LearnerSettings

    return Model(name, PRESETS[name], LearnerSettings, evaluate.THEORY_LEARNERS + evaluate.LEARNERS,
                 evaluate.evaluate_grid)


def _digits() -> Model:
    from . import digits, digits_learners

    return Model("digits", digits.DigitsConfig, digits_learners.DigitsLearnerSettings,
                 tuple(digits_learners.LEARNERS), digits_learners.evaluate_grid, routes=("sampled",))


def _paper_mnist() -> Model:
    from . import paper_mnist

    return Model("paper_mnist", paper_mnist.PaperMnistConfig, paper_mnist.PaperMnistSettings, paper_mnist.LEARNERS,
                 paper_mnist.evaluate_grid, routes=("sampled",))


_BUILDERS: dict[str, Callable[[], Model]] = {"M1": lambda: _synthetic("M1"), "M2": lambda: _synthetic("M2"),
                                              "digits": _digits, "paper_mnist": _paper_mnist}
MODEL_NAMES = tuple(_BUILDERS)


def get_model(name: str) -> Model:
    """The registry entry of `name`; an unknown name is a ValueError listing the known ones."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}: allowed {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name]()


def run_points(model: Model, configs: Sequence, seeds: Sequence[int], learners: Sequence[str], settings,
               route: str, on_point: Callable[[int, list[dict]], None] | None = None) -> list[list[dict]]:
    """model.run with the route checked against the model's routes."""
    if route not in model.routes:
        raise ValueError(f"evaluation route {route!r} is not available for model {model.name}: "
                         f"allowed {', '.join(model.routes)}")
    return model.run(configs, list(seeds), tuple(learners), settings, route, on_point)
