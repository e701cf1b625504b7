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
        return cls(**{k: data[k] for k in texts}, details=list(data["details"]), seconds=float(sec))


def json_kind(x: object) -> str:
    """The JSON type name of a decoded value (for messages)."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(x), type(x).__name__)


def fmt(mean: float, se: float | None = None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f} +- {se:.{digits}f}"


def verdict(ok: bool) -> str:
    return PASS if ok else FAIL


# ------------------------------------------------------------------ cached runs of the package


@functools.lru_cache(maxsize=None)
def evaluate(cfg, seeds: int, learners: tuple[str, ...], settings=None, route: str = "exact",
             prompt: str = "core") -> dict[str, np.ndarray]:
    """{learner: accuracies (seeds, 3) for aligned/independent/flipped}, via models.evaluate_grid.

    Seeds 0..seeds-1; zero-shot learners scored with `prompt`. Cached, so checks that share a
    configuration share its run.
    """
    from mmcl_theory.learners import ZERO_SHOT
    from mmcl_theory.models import evaluate_grid, model_of
    from mmcl_theory.results import seed_accuracies

    rows = evaluate_grid([cfg], list(range(seeds)), learners, settings, route)[0]
    return {l.name: seed_accuracies(rows, l.name, prompt if l.kind == ZERO_SHOT else "")
            for l in model_of(cfg).records(learners)}


TEST_INDEX = {test: i for i, test in enumerate(TESTS)}
