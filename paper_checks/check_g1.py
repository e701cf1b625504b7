"""Check G1: the paper's semi-synthetic MNIST experiment (App. G.1, Fig. 2), from the sweep paper_mnist.

The experiment (mmcl_theory/paper_mnist.py, docs/models.md, section 9) trains a LeNet for 100
epochs on 60,000 images per point and seed (about 35 min a point of 3 seeds on one core of the project's
2-core VM, 2026-12-07), so the check does not rerun it: it reads the rows of the full run that `python -m mmcl_theory.figures --only
paper_mnist` wrote to figures/paper_mnist.csv, and is 'not run' when they are absent or come from
the quick variant. The paper's values are its Fig. 2 (paper_mnist.PAPER_FIG2); the verdict is on its
three qualitative claims, with tolerances of Z standard errors of the seed mean of paired differences
(every point of a seed shares its images, shades and initialisation), never on matching its numbers:

  (1) rich captions beat SL:  OOD(pi_core = 1) - OOD(SL) > Z s.e.
  (2) pi_core matters:        D_core = OOD(pi_core = 1) - OOD(pi_core = 0) > Z s.e.
  (3) pi_spu barely matters:  |D_spu| + Z s.e.(D_spu) < D_core - Z s.e.(D_core),
                              D_spu = OOD(pi_spu = 1) - OOD(pi_spu = 0) at pi_core = 1
      (the paper's own numbers: |D_spu| = 4.06 points against D_core = 17.27).

A seed whose training diverged (a non-finite loss; its row says so in `converged`) is left out of every curve
and every paired difference (paper_mnist.fig2_curves), and the check lists it: it is a failed run, scored
before the protocol's epochs, not a measurement of the trained learner. The paper reports no such run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .common import FAIL, NOT_RUN, PASS, Z, Record, mean_se

RESULTS = Path(__file__).resolve().parents[1] / "figures" / "paper_mnist.csv"
SOURCE = "paper experiment: Xue et al. 2024, App. G.1, Fig. 2"
CLAIM = ("The paper's semi-synthetic MNIST experiment (digits 0-4 vs 5-9 on blue/red shades, 99.5% aligned in "
         "training, uniform at test; 200-d vector captions): with rich captions (high pi_core) MMCL is more robust "
         "than SL; reducing pi_core significantly hurts robustness; pi_spu has minimal effect.")
FULL_N_TRAIN, MIN_SEEDS = 60000, 3
COMMAND = "python -m mmcl_theory.sweep paper_mnist && python -m mmcl_theory.figures --only paper_mnist"


def paired(a: dict[int, float], b: dict[int, float]) -> np.ndarray:
    """Per-seed differences a - b over the seeds both hold, in percentage points: (seeds,)."""
    seeds = sorted(set(a) & set(b))
    return 100 * np.array([a[s] - b[s] for s in seeds])


def assess(rows: list[dict]) -> tuple[str, str, str, list[str]]:
    """(verdict, measured, why, details) of the three claims from the sweep's rows (see the module doc)."""
    from mmcl_theory.figures import SWEEP_FIGURES
    from mmcl_theory.paper_mnist import PAPER_FIG2, PAPER_FIG5, diverged_runs, fig2_curves

    ood, iid = fig2_curves(rows, "independent"), fig2_curves(rows, "aligned")
    core, spu, sl = ood["pi_core"], ood["pi_spu"], ood["supervised"]
    if any(x not in core for x in (0.0, 1.0)) or not sl:
        return NOT_RUN, "the rows lack pi_core 0 or 1 (at pi_spu = 1) or SL", "incomplete results", []
    beat, beat_se = mean_se(paired(core[1.0], sl))
    d_core, d_core_se = mean_se(paired(core[1.0], core[0.0]))
    checks = {"rich pi_core beats SL": beat - Z * beat_se > 0,
              "reducing pi_core hurts": d_core - Z * d_core_se > 0}
    has_spu = 0.0 in spu and 1.0 in spu
    if has_spu:  # claim (3) needs the pi_spu = 0 point; without it the verdict is at most 'not run'
        d_spu_by_seed = paired(spu[1.0], spu[0.0])
        d_spu, d_spu_se = mean_se(d_spu_by_seed)
        checks["pi_spu has a smaller effect than pi_core"] = abs(d_spu) + Z * d_spu_se < d_core - Z * d_core_se
    pct = lambda by_seed: mean_se(100 * np.array(list(by_seed.values())))
    seeds = len(sl)
    spu_text = (f"pi_spu 0 -> 1: {pct(spu[0.0])[0]:.2f} -> {pct(spu[1.0])[0]:.2f}" if has_spu else
                "pi_spu 0 -> 1: not run")
    measured = (f"OOD %: pi_core 0 -> 1: {pct(core[0.0])[0]:.2f} -> {pct(core[1.0])[0]:.2f} (paper "
                f"{PAPER_FIG2['pi_core'][0.0]} -> {PAPER_FIG2['pi_core'][1.0]}); {spu_text} (paper "
                f"{PAPER_FIG2['pi_spu'][0.0]} -> {PAPER_FIG2['pi_spu'][1.0]}); SL "
                f"{pct(sl)[0]:.2f} (paper {PAPER_FIG2['supervised']}); {seeds} seed{'s' * (seeds != 1)}")
    why = "; ".join(f"{name}: {'holds' if ok else 'FAILS'}" for name, ok in checks.items())
    if not has_spu:
        why += "; pi_spu has a smaller effect than pi_core: not run (no pi_spu = 0 point)"
    id_means = [pct(by_seed)[0] for curve in ("pi_core", "pi_spu") for by_seed in iid[curve].values()]
    why += (f" (MMCL - SL {beat:+.2f} +- {beat_se:.2f} points; D_core {d_core:+.2f} +- {d_core_se:.2f}; "
            + (f"D_spu {d_spu:+.2f} +- {d_spu_se:.2f} over {len(d_spu_by_seed)} seeds; " if has_spu else "") + f"paired by seed, tolerance {Z:g} s.e.; ID accuracy MMCL "
            f"{min(id_means):.1f}-{max(id_means):.1f}%, SL {pct(iid['supervised'])[0]:.1f}%)")
    failed = diverged_runs(rows)
    if failed:
        why += f"; {len(failed)} diverged run{'s' * (len(failed) != 1)} left out: " + "; ".join(failed)
    off = fig2_curves(rows, "flipped")  # the off-colour images: P*'s images whose shade is the other family's
    table = ["| point | paper OOD % (Fig. 2) | ours OOD % (mean +- s.e.) | paper ID % (Fig. 5) | ours ID % | "
             "ours off-colour % |", "| --- | --- | --- | --- | --- | --- |"]
    cell = lambda curve, x: "%.2f +- %.2f" % pct(curve[x]) if x in curve else "-"
    for name, label in (("pi_core", "pi_spu = 1, pi_core = {x:g}"), ("pi_spu", "pi_core = 1, pi_spu = {x:g}")):
        for x in sorted(set(PAPER_FIG2[name]) | set(ood[name])):
            table.append(f"| {label.format(x=x)} | {PAPER_FIG2[name].get(x, '-')} | {cell(ood[name], x)} | "
                         f"{PAPER_FIG5[name].get(x, '-')} | {cell(iid[name], x)} | {cell(off[name], x)} |")
    table.append(f"| SL | {PAPER_FIG2['supervised']} | {'%.2f +- %.2f' % pct(sl)} | {PAPER_FIG5['supervised']} | "
                 f"{'%.2f +- %.2f' % pct(iid['supervised'])} | "
                 f"{'%.2f +- %.2f' % pct(off['supervised']) if off['supervised'] else '-'} |")
    details = ["Ours: the sweep paper_mnist (figures/paper_mnist.csv): the 60,000 MNIST training images train, the "
               "10,000 test images recoloured per test test; the choices the paper leaves open (Fig. 4's shade RGB, "
               "Fig. 1's white digit, colours drawn once, temperature 1) as docs/models.md, section 9, gives them. "
               "Paper: Fig. 2 (OOD) and Fig. 5 (ID), read from the PDF's vector paths, axis-calibrated. Off-colour: the "
               "flipped test (every shade of the other family), the law of P*'s off-colour images.",
               f"Run settings of the committed figure (mmcl_theory/figures.py): {SWEEP_FIGURES['paper_mnist'][2]}.",
               *table]
    verdict_ = FAIL if not all(checks.values()) else PASS if has_spu else NOT_RUN
    return verdict_, measured, why, details


def read_rows(path: Path) -> list[dict]:
    """The result-contract rows of a sweep CSV."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_G1(quick: bool) -> Record:
    """The paper's App. G.1 claims on the stored full run of the sweep paper_mnist (the same in quick mode:
    the check reads results, it does not train)."""
    expected = ("the paper's Fig. 2 (OOD %): pi_core 0, 0.25, 0.5, 0.75, 1 at pi_spu = 1: 58.94, 72.36, 74.99, "
                "75.88, 76.21; pi_spu 0, 0.5, 1 at pi_core = 1: 72.15, 75.43, 76.21; SL 68.98. Claims, paired by "
                f"seed with {Z:g} s.e.: MMCL(pi_core = 1) > SL; OOD(pi_core = 1) > OOD(pi_core = 0); "
                "|pi_spu effect| < pi_core effect")
    if not RESULTS.is_file():
        return Record("G1", CLAIM, SOURCE, expected, "no results", NOT_RUN,
                      f"{RESULTS.name} not found: run `{COMMAND}` (about 35 min a point on one core; 8 points)")
    rows = read_rows(RESULTS)
    seeds = {int(r["seed"]) for r in rows}
    n_train = {int(r["n"]) for r in rows}
    if n_train != {FULL_N_TRAIN} or len(seeds) < MIN_SEEDS:
        return Record("G1", CLAIM, SOURCE, expected, f"n {sorted(n_train)}, {len(seeds)} seed(s)", NOT_RUN,
                      f"{RESULTS.name} holds a quick or partial run (n_train {sorted(n_train)}, {len(seeds)} seeds; "
                      f"the check needs n_train {FULL_N_TRAIN} and >= {MIN_SEEDS} seeds): run `{COMMAND}`")
    verdict_, measured, why, details = assess(rows)
    return Record("G1", CLAIM, SOURCE, expected, measured, verdict_, why, details)
