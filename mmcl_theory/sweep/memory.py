"""The memory a sweep point needs, checked against what the machine has before any work starts."""

from __future__ import annotations

import os

from .plan import SweepError

# ------------------------------------------------------------------ memory, before any work starts
#
# A point holds, per seed (seeds run one after another, or one learner's seeds at once for digits), the arrays its
# model's `memory` counts for the fitted learners (models.Model.memory: M1/M2's n x d training and test arrays, the
# digits images, paper_mnist's LeNet batches and coloured test images). Its theory rows come first, one population
# record after another, each holding the float64 arrays its record's `memory` counts (theory.py: Cov(z_I, z_T) and
# the test groups, the population InfoNCE batches); a point needs the larger of the two. A point whose estimate
# exceeds the memory available is refused before anything is written, with the estimate and the limit, instead of
# failing out of memory (or running for hours) mid-run.


def point_memory(cfg, settings, learners, route: str) -> tuple[int, str]:
    """(bytes, how it was counted) of the largest arrays one point holds at once: the larger of its theory rows'
    (the largest `memory` of its population records) and its fitted learners' (its model's estimate)."""
    from ..models import model_of

    model = model_of(cfg)
    records = model.records(learners)
    fitted = [l for l in records if l.population is None]
    counts = [model.memory(cfg, settings, fitted, route) if fitted else (0, "no fitted learner")]
    for learner in records:
        if learner.memory is not None:
            need, how = learner.memory(cfg, settings)
            counts.append((need, f"{how}, theory rows of {learner.name}"))
    return max(counts, key=lambda c: c[0])


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
                     f"{_gib(limit)} available here ({source}); lower the sizes it names, or run it where there is more memory")
