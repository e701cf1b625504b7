"""The memory a sweep point needs, checked against what the machine has before any work starts."""

from __future__ import annotations

import os

from .plan import SweepError

# ------------------------------------------------------------------ memory, before any work starts
#
# A point of a synthetic model (M1, M2) allocates, per seed (seeds run one after another, lax.map), the training
# images and captions and their noise draws in n x d, working copies of the images (the centred images of the
# closed form, the transposes and QR factors of min-norm SL), an n x n or d x d Gram or R factor, the d-dimensional
# test sets of the sampled route, and for K > 2 classes on the exact route the score-space Monte Carlo of every
# test group (K^2 groups x MC_DRAWS draws x K scores). Its theory rows come first, one population record after
# another, each holding the float64 arrays its record's `memory` counts (theory.py: Cov(z_I, z_T) and the test
# groups, the population InfoNCE batches); a point needs the larger of the two. A point whose estimate exceeds the
# memory available is refused before anything is written, with the estimate and the limit, instead of failing out
# of memory (or running for hours) mid-run.

ND_ARRAYS = 6  # n x d float32 arrays alive at once: images, captions, their two noise draws, two working copies
BYTES = 4  # float32


def point_memory(cfg, settings, learners, route: str) -> tuple[int, str]:
    """(bytes, how it was counted) of the largest arrays one point holds at once: the larger of its theory rows'
    (the largest `memory` of its population records) and its fitted learners' per seed (0 when none is fitted, or
    its config has no n and d: the digits models, whose data are fixed images)."""
    from ..models import model_of

    records = model_of(cfg).records(learners)
    counts = [_fitted_memory(cfg, settings, [l for l in records if l.population is None], route)]
    for learner in records:
        if learner.memory is not None:
            need, how = learner.memory(cfg, settings)
            counts.append((need, f"{how}, theory rows of {learner.name}"))
    return max(counts, key=lambda c: c[0])


def _fitted_memory(cfg, settings, fitted, route: str) -> tuple[int, str]:
    """(bytes, how) of the arrays of the fitted learners `fitted` per seed (module comment)."""
    from ..evaluate import MC_DRAWS

    n, d, n_test = getattr(cfg, "n", None), getattr(cfg, "d", None), getattr(cfg, "n_test", 0)
    if not all(isinstance(x, int) for x in (n, d)) or not fitted:
        return 0, "no sampled data"
    terms = [(ND_ARRAYS * n * d, f"{ND_ARRAYS} arrays of n x d (n = {n}, d = {d})"),
             (2 * min(n, d) ** 2, "2 of min(n, d)^2")]
    if route == "sampled":
        terms.append((6 * n_test * d, f"6 test arrays of n_test x d (n_test = {n_test})"))
    K = getattr(cfg, "num_classes", 2)
    if route == "exact" and K > 2 and any(l.linear for l in fitted):
        terms.append((K * K * (2 * MC_DRAWS * K + K * K), f"the score Monte Carlo of K^2 groups (K = {K})"))
    width = getattr(settings, "width", 0)
    if route == "exact" and not all(l.linear for l in fitted):
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
                     f"{_gib(limit)} available here ({source}); lower the sizes it names, or run it where there is more memory")
