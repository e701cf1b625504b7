"""docs/temperature.md section 6.4: the population InfoNCE optimum at the M1 defaults, as a Markdown table.

Per tau: the spurious ratio M_21 / M_11 of the optimum (theory.infonce_population_optimum, batch N = n = 200,
20,000 latent pairs drawn by theory.m1_latent_pairs) and its exact zero-shot accuracy with the core and the
class-mean prompt (theory.infonce_population_accuracy), for the sample of --seed; with --spread K, the largest
difference over the samples of seeds 0..K-1 (the precision paragraph under the table).

    PYTHONPATH=. python docs/scripts/temperature_population_table.py [--seed 0] [--spread 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from mmcl_theory.datamodel import TESTS, make_config
from mmcl_theory.theory import INFONCE_COLLAPSED, infonce_population_accuracy, infonce_population_optimum

TAUS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
PROMPTS = ("core", "class_mean")


def row(cfg, tau: float, seed: int) -> tuple[float, np.ndarray] | None:
    """(spurious ratio, accuracies (2 prompts, 3 tests)) of the optimum at tau, or None where it collapses."""
    opt = infonce_population_optimum(cfg, tau, seed=seed)
    if opt["rank_ratio"] < INFONCE_COLLAPSED:
        return None
    acc = np.array([[infonce_population_accuracy(cfg, t, tau, prompt=p, seed=seed) for t in TESTS] for p in PROMPTS])
    return float(opt["M"][1, 0] / opt["M"][0, 0]), acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=int, default=0, help="also the largest difference over seeds 0..K-1")
    args = ap.parse_args()
    cfg = make_config("M1", r=1.0)
    print("| tau | spurious ratio | core prompt: aligned / independent / flipped | "
          "class-mean prompt: aligned / independent / flipped |\n| --- | --- | --- | --- |")
    for tau in TAUS:
        got = row(cfg, tau, args.seed)
        if got is None:
            print(f"| {tau:g} | collapsed | undefined | undefined |")
            continue
        ratio, acc = got
        cells = [" / ".join(f"{a:.3f}" for a in acc[p]) for p in range(len(PROMPTS))]
        print(f"| {tau:g} | {ratio:+.2f} | {cells[0]} | {cells[1]} |", flush=True)
    if args.spread:
        print("\n| tau | largest difference over seeds 0..%d: core aligned / core flipped / class-mean (any test) |"
              "\n| --- | --- |" % (args.spread - 1))
        for tau in TAUS:
            rows = [row(cfg, tau, s) for s in range(args.spread)]
            if any(r is None for r in rows):
                continue
            acc = np.stack([r[1] for r in rows])  # (seeds, prompts, tests)
            span = acc.max(0) - acc.min(0)
            print(f"| {tau:g} | {span[0, 0]:.3f} / {span[0, 2]:.3f} / {span[1].max():.3f} |", flush=True)


if __name__ == "__main__":
    main()
