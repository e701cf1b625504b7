"""Shared pieces of the paper checks: the record, statistics, and cached runs of the package's learners.

Every check returns a `Record`. Statistics are over seeds: each seed draws its own dictionaries,
training set and test sets, so the standard error of the seed mean carries every source of
sampling error (training sample and test sample). Tolerances are built from these standard
errors (3 s.e.) plus, where the expectation is a rounded number quoted in SPEC.md, its rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

PAPER = "paper claim"
DERIVED = "package derivation (stands in for the paper's unavailable constants)"
SAGAWA = "published: Sagawa et al. 2020"

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"
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


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean over the first axis (0 s.e. for one value)."""
    v = np.asarray(values, np.float64)
    if v.shape[0] < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.shape[0]))


def fmt(mean: float, se: float | None = None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f} +- {se:.{digits}f}"


def verdict(ok: bool) -> str:
    return PASS if ok else FAIL


# ------------------------------------------------------------------ cached runs of the package


@functools.lru_cache(maxsize=None)
def _compiled(learners: tuple[str, ...], settings):
    import jax

    from mmcl_theory.evaluate import evaluate_point

    return jax.jit(jax.vmap(lambda k, c: evaluate_point(k, c, settings, learners), in_axes=(0, None)))


@functools.lru_cache(maxsize=None)
def evaluate(cfg, seeds: int, learners: tuple[str, ...], settings=None, chunk: int = 10) -> dict[str, np.ndarray]:
    """{learner: accuracies (seeds, 3) for aligned/independent/flipped}, via evaluate.evaluate_point.

    Seeds 0..seeds-1 (jax.random.key(seed)); jit-compiled once per static shape and vmapped over
    seeds in chunks (memory). Cached, so checks that share a configuration share its run.
    """
    import jax
    import jax.numpy as jnp

    from mmcl_theory.learners import LearnerSettings

    settings = settings or LearnerSettings()
    run = _compiled(tuple(learners), settings)
    parts = []
    for start in range(0, seeds, chunk):
        keys = jax.vmap(jax.random.key)(jnp.arange(start, min(seeds, start + chunk)))
        parts.append(jax.device_get(run(keys, cfg)))
    return {l: np.concatenate([np.asarray(p[l], np.float64) for p in parts]) for l in learners}


TEST_INDEX = {"aligned": 0, "independent": 1, "flipped": 2}
