"""Shared pieces of the paper checks: the record, statistics, and cached runs of the package's learners.

Every check returns a `Record`. Statistics are over seeds: each seed draws its own dictionaries,
training set and test sets, so the standard error of the seed mean carries every source of
sampling error (training sample and test sample). Tolerances are built from these standard
errors (3 s.e.) plus, where the expectation is a rounded number quoted in docs/theory.md's reference tables, its rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from mmcl_theory.results import TESTS, mean_se  # noqa: F401  (re-exported for the checks)

PAPER = "paper claim"
DERIVED = "package derivation (this package's own models and formulas)"
SAGAWA = "published: Sagawa et al. 2020"

PASS, FAIL, NOT_RUN, CRASHED = "pass", "fail", "not run", "crashed"
VERDICTS = (PASS, FAIL, NOT_RUN, CRASHED)
Z = 3.0  # tolerances are Z standard errors of the seed mean
RATIO_CAP = 999.0  # a margin ratio of an effect with the wrong sign (infinite) is recorded as this


# ------------------------------------------------------------------ the seed set

_SEED_OFFSET = [0]  # set once per run by set_seed_offset (the CLI's --seed-offset); 0 is the committed report's set


def set_seed_offset(offset: int) -> None:
    """Make every check draw seeds offset, offset + 1, ... instead of 0, 1, ... (ValueError unless 0 <= offset <=
    1e6). Seeds of sampling the population for a prediction (TAU's sample-average samples) move with them, and
    fixed single seeds (Q3, Q4, Q5) become offset + their seed: a disjoint draw of every random input."""
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 1_000_000:
        raise ValueError(f"seed offset {offset!r} is not allowed: an integer in [0, 1000000]")
    _SEED_OFFSET[0] = offset


def seed_offset() -> int:
    return _SEED_OFFSET[0]


def seed_list(count: int) -> list[int]:
    """The seeds of a check that uses `count` of them: offset, ..., offset + count - 1."""
    return list(range(_SEED_OFFSET[0], _SEED_OFFSET[0] + count))


def seed(i: int) -> int:
    """A check's fixed seed i, moved by the offset."""
    return _SEED_OFFSET[0] + i


# ------------------------------------------------------------------ margin ratios


class Margins:
    """The judged comparisons of one check as ratios that are <= 1 exactly when the comparison passes, and the
    largest of them (how near the verdict sits to flipping; 1 is the boundary):

    - equal(diff, tol): |diff| / tol (an equality within a tolerance);
    - effect(x, tol): tol / x (an effect x that must exceed tol, e.g. 3 s.e.; x <= 0 gives RATIO_CAP);
    - at_most(x, c) / at_least(x, c): x / c and c / x (a bound; c > 0, x > 0);
    - holds(ok): 0 or RATIO_CAP (a comparison with no scale, e.g. an exact identity or a count).
    """

    def __init__(self):
        self.items: list[tuple[float, str]] = []

    def add(self, ratio: float, label: str) -> None:
        """A ratio computed by the check (negative values, a comparison passed by a wide margin, count as 0)."""
        ratio = float(ratio)
        self.items.append((RATIO_CAP if not math.isfinite(ratio) or ratio > RATIO_CAP else max(ratio, 0.0), label))

    def equal(self, diff: float, tol: float, label: str) -> None:
        self.add(0.0 if diff == 0 else abs(diff) / tol if tol > 0 else math.inf, label)

    def effect(self, x: float, tol: float, label: str) -> None:
        self.add(tol / x if x > 0 else math.inf, label)

    def at_most(self, x: float, c: float, label: str) -> None:
        self.add(x / c if c > 0 else math.inf, label)

    def at_least(self, x: float, c: float, label: str) -> None:
        self.add(c / x if x > 0 else math.inf, label)

    def holds(self, ok: bool, label: str) -> None:
        self.add(0.0 if ok else math.inf, label)

    def worst(self) -> tuple[float | None, str]:
        """(the largest ratio, its label), or (None, '') when nothing was judged."""
        if not self.items:
            return None, ""
        ratio, label = max(self.items, key=lambda t: t[0])
        return round(ratio, 4), label

    def stamp(self, rec: "Record") -> "Record":
        """rec with ratio and ratio_at set from the largest ratio."""
        rec.ratio, rec.ratio_at = self.worst()
        return rec


@dataclasses.dataclass
class Record:
    """One check's result, as written to REPORT.md."""

    id: str
    claim: str
    source: str
    expected: str
    measured: str
    verdict: str
    why: str
    details: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    ratio: float | None = None  # the largest margin ratio of its judged comparisons (Margins); None: none judged
    ratio_at: str = ""  # which comparison gives it

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> "Record":
        """The Record of ``as_dict``'s output, checked field by field: ValueError saying what is wrong (not a JSON
        object, a key missing or added, a value of the wrong type, a verdict that is not one of VERDICTS)."""
        if not isinstance(data, dict):
            raise ValueError(f"the record is a JSON {json_kind(data)}, not an object")
        names = [f.name for f in dataclasses.fields(cls)]
        texts = [f.name for f in dataclasses.fields(cls) if f.type == "str"]
        missing, added = [k for k in names if k not in data], [k for k in data if k not in names]
        if missing or added:
            raise ValueError("; ".join([f"missing key(s) {', '.join(map(repr, missing))}"] * bool(missing) +
                                       [f"unknown key(s) {', '.join(map(repr, added))}"] * bool(added)))
        for k in texts:
            if not isinstance(data[k], str):
                raise ValueError(f"{k!r} is a JSON {json_kind(data[k])}, not a string")
        if not isinstance(data["details"], list) or not all(isinstance(x, str) for x in data["details"]):
            raise ValueError("'details' is not a list of strings")
        sec = data["seconds"]
        if isinstance(sec, bool) or not isinstance(sec, (int, float)) or not math.isfinite(sec) or sec < 0:
            raise ValueError(f"'seconds' = {sec!r} is not a finite number >= 0")
        if data["verdict"] not in VERDICTS:
            raise ValueError(f"'verdict' = {data['verdict']!r} is not a verdict (allowed: {', '.join(VERDICTS)})")
        ratio = data["ratio"]
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not math.isfinite(ratio) or ratio < 0):
            raise ValueError(f"'ratio' = {ratio!r} is not null or a finite number >= 0")
        return cls(**{k: data[k] for k in texts}, details=list(data["details"]), seconds=float(sec),
                   ratio=None if ratio is None else float(ratio))


def json_kind(x: object) -> str:
    """The JSON type name of a decoded value (for messages)."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(x), type(x).__name__)


def fmt(mean: float, se: float | None = None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f} +- {se:.{digits}f}"


def verdict(ok: bool) -> str:
    return PASS if ok else FAIL


# ------------------------------------------------------------------ cached runs of the package


def evaluate(cfg, seeds: int, learners: tuple[str, ...], settings=None, route: str = "exact",
             prompt: str = "core") -> dict[str, np.ndarray]:
    """{learner: accuracies (seeds, 3) for aligned/independent/flipped}, via models.evaluate_grid.

    Seeds seed_list(seeds) (0..seeds-1 unless --seed-offset moves them); zero-shot learners scored with `prompt`.
    Cached, so checks that share a configuration share its run.
    """
    return _evaluate(cfg, seed_offset(), seeds, learners, settings, route, prompt)


@functools.lru_cache(maxsize=None)
def _evaluate(cfg, offset: int, seeds: int, learners, settings, route, prompt) -> dict[str, np.ndarray]:
    from mmcl_theory.learners import ZERO_SHOT
    from mmcl_theory.models import evaluate_grid, model_of
    from mmcl_theory.results import seed_accuracies

    rows = evaluate_grid([cfg], list(range(offset, offset + seeds)), learners, settings, route)[0]
    return {l.name: seed_accuracies(rows, l.name, prompt if l.kind == ZERO_SHOT else "")
            for l in model_of(cfg).records(learners)}


TEST_INDEX = {test: i for i, test in enumerate(TESTS)}
