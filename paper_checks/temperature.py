"""Check TAU: the population InfoNCE optimum at finite temperature against trained linear InfoNCE (core prompt).

The prediction is theory.infonce_population_accuracy (docs/temperature.md#population-optimum): the optimum of
symmetric InfoNCE over linear encoders in the population (n -> infinity, the softmax over batches of n pairs),
which reads the two latent coordinates only. It is compared with the package's learner mmcl_infonce_linear
(full-batch Adam, embedding dimension 8) at three temperatures, in settings with the same population
(sigma_xi^2 / d = 1/2000):

- d = 10, n = 800 (sigma_xi = sqrt(10/2000)), 3000 steps: n >> d, the training noise cannot be memorised, and
  the finite-n residual of the aligned test is below the seeds' error (docs/temperature.md#where-the-theory-stops:
  gone at n = 800, 3000 steps); the claim is made here and the verdict rests on it. The prediction is the
  optimum for batches of n = 800 pairs;
- d = 10, n = 200, 5000 steps (the judged setting until 2026-12-07): reported, not judged. Its aligned cells sit
  0.005-0.02 below the prediction, a finite-n residual (the loss creeps below the population optimum's through
  the 8 noise directions), of the size of its tolerance, so a verdict there flipped with the seed draw
  (issue 30: 0.76 and 1.09 tolerances on two key assignments);
- the M1 defaults, d = 2000 = 10 n (sigma_xi = 1): the encoders can memorise the noise of every training
  pair (docs/temperature.md#memorisation); the same comparison is reported beside it, not judged, with the
  training loss against the population optimum's loss as the measure of memorisation.

Expectations come from theory.py (float64, an L-BFGS optimum of a sample-average approximation of the
population loss), not from the trained learner; its sampling error is the spread over independent samples
(full mode: three), added in quadrature to the seeds' standard error.
"""

from __future__ import annotations

import math

import numpy as np

from .common import DERIVED, TEST_INDEX, TESTS, Z, Margins, Record, fmt, mean_se, seed, seed_list, verdict

TAUS = (0.01, 0.1, 1.0)  # three temperatures, two of them <= 0.1 (CLIP trains at 0.01-0.07)
JUDGED = ("aligned", "flipped")  # independent is their mean (accuracy is linear in the agreement q)


def _prediction(cfg, tau: float, saa_seeds, samples: int) -> tuple[dict, float]:
    """({test: (mean, s.e. over SAA samples)}, population loss) of the population optimum at tau (core prompt),
    batches of cfg.n pairs, each sample `samples` latent pairs."""
    from mmcl_theory.theory import infonce_population_accuracy, infonce_population_optimum

    per_seed = np.array([[infonce_population_accuracy(cfg, t, tau, seed=s, samples=samples) for t in TESTS]
                         for s in saa_seeds])
    out = {t: mean_se(per_seed[:, i]) for i, t in enumerate(TESTS)}
    loss = float(np.mean([infonce_population_optimum(cfg, tau, seed=s, samples=samples)["loss"] for s in saa_seeds]))
    return out, loss


def _trained(cfg, tau: float, seeds: int, steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(accuracies (seeds, 3) with the core prompt, final training losses (seeds,), number converged)."""
    from mmcl_theory.models import evaluate_grid
    from mmcl_theory.results import seed_accuracies
    from mmcl_theory.learners import LearnerSettings

    settings = LearnerSettings(temperature=tau, steps=steps)
    rows = evaluate_grid([cfg], seed_list(seeds), ("mmcl_infonce_linear",), settings)[0]
    acc = seed_accuracies(rows, "mmcl_infonce_linear", "core")
    fits = {r["seed"]: (r["final_loss"], r["converged"]) for r in rows if r["learner"] == "mmcl_infonce_linear"}
    return acc, np.array([fits[s][0] for s in sorted(fits)]), sum(bool(fits[s][1]) for s in fits)


JUDGED_N, JUDGED_STEPS = 800, 3000  # the judged setting: docs/temperature.md measured the residual gone here
SAA_PAIRS = {200: 20_000, 800: 40_000}  # latent pairs per sample of the prediction (>= 25 batches of n)
# The prediction at batch 800 costs about 17x that at 200 (2.3 min of CPU per temperature and sample, idle-ish
# 2026-12-07): the quick mode judges tau 0.1 only, with two samples of 20,000 pairs (25 batches).
QUICK_TAUS, QUICK_SAA_PAIRS = (0.1,), 20_000


def check_T1(quick: bool) -> Record:
    """The population InfoNCE optimum predicts trained linear InfoNCE's zero-shot accuracy (core prompt) at
    tau = 0.01, 0.1, 1 where the encoders cannot memorise noise (d = 10 << n = 800) and the finite-n residual is
    below the seeds' error."""
    from mmcl_theory.datamodel import make_config

    seeds, long_steps, saa = (3, 2000, (0, 1)) if quick else (5, 5000, (0, 1, 2))
    saa = tuple(seed(s) for s in saa)
    taus = QUICK_TAUS if quick else TAUS
    pairs = (lambda n: QUICK_SAA_PAIRS) if quick else (lambda n: SAA_PAIRS.get(n, 20_000))
    sigma_xi = math.sqrt(10 / 2000)
    judged_cfg = make_config("M1", r=1.0, n=JUDGED_N, d=10, sigma_xi=sigma_xi)
    settings = [("judged", f"n {JUDGED_N}, d 10 (judged)", judged_cfg, JUDGED_STEPS)]
    if not quick:
        settings.append(("residual", "n 200, d 10 (reported)", make_config("M1", r=1.0, d=10, sigma_xi=sigma_xi),
                         long_steps))
    default_cfg = make_config("M1", r=1.0, n=40, d=400) if quick else make_config("M1", r=1.0)
    settings.append(("default", f"n {default_cfg.n}, d {default_cfg.d} (reported)", default_cfg, long_steps))
    table = ["| setting | tau | test | predicted (population, batch n) | trained, mean +- s.e. | diff | tolerance "
             "3 s.e. | final loss (population optimum's) | converged |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ok, margins, reported = True, Margins(), {"residual": [], "default": []}
    for kind, label, cfg, steps in settings:
        # the defaults have the n 200, d 10 population (sigma_xi^2 / d = 1/2000): the same prediction
        pred_cfg = settings[1][2] if kind == "default" and not quick else cfg
        for tau in taus:
            pred, pop_loss = _prediction(pred_cfg, tau, saa, pairs(pred_cfg.n))
            acc, losses, converged = _trained(cfg, tau, seeds, steps)
            for test in TESTS:
                (m, se), (p, p_se) = mean_se(acc[:, TEST_INDEX[test]]), pred[test]
                tol = Z * math.hypot(se, p_se)
                if test in JUDGED:
                    if kind == "judged":
                        ok &= abs(m - p) <= tol
                        margins.equal(m - p, tol, f"tau {tau:g} {test}")
                    else:
                        reported[kind].append((tau, test, m - p, tol))
                table.append(f"| {label} | {tau:g} | {test} | {fmt(p, p_se, 4)} | {fmt(m, se, 4)} | {m - p:+.4f} | "
                             f"{tol:.4f} | {losses.mean():.3f} ({pop_loss:.3f}) | {converged}/{seeds} |")
    worst, worst_at = margins.worst()

    def outside(cells):
        out = [f"tau {t:g} {test} {g:+.3f} (tol {tol:.3f})" for t, test, g, tol in cells if abs(g) > tol]
        return (f"{len(out)} of {len(cells)} cells outside: " + "; ".join(out)) if out else "all within 3 s.e."

    measured = (f"n {JUDGED_N}, d 10: every judged cell within 3 s.e. (largest |diff|/tolerance {worst:.2f}, {worst_at})"
                if ok else f"n {JUDGED_N}, d 10: some judged cell outside 3 s.e. (largest |diff|/tolerance {worst:.2f}, "
                           f"{worst_at})")
    if not quick:
        ratios = [abs(g) / tol for *_, g, tol in reported["residual"]]
        measured += (f"; n 200, d 10 (reported, finite-n residual): largest |diff|/tolerance {max(ratios):.2f}, "
                     + outside(reported["residual"]))
    measured += f"; defaults (d {default_cfg.d}, reported): " + outside(reported["default"])
    return margins.stamp(Record(
        "TAU",
        f"At finite temperature (tau = {', '.join(f'{t:g}' for t in taus)}), trained linear InfoNCE's zero-shot accuracy with the core prompt "
        "equals that of the population InfoNCE optimum over linear encoders (the softmax over batches of n pairs), "
        f"where the encoders cannot memorise the training noise and the finite-n residual is below the seeds' error "
        f"(M1, r = 1, n = {JUDGED_N}, d = 10 with sigma_xi^2/d = 1/2000 as at the defaults). At n = 200, d = 10 and "
        "at the defaults (d = 2000 = 10 n) the same comparison is reported, not judged.",
        DERIVED,
        "aligned and flipped accuracy of the trained learner (core prompt) within 3 s.e. (seeds, and the prediction's "
        f"sampling spread in quadrature) of theory.infonce_population_accuracy (batch {JUDGED_N}) at each tau, "
        f"n {JUDGED_N}, d 10",
        measured + f" ({seeds} seeds; {JUDGED_STEPS} full-batch Adam steps at n {JUDGED_N}, {long_steps} in the reported "
                   f"settings; lr 0.01, embedding dim 8; prediction: {len(saa)} samples of latent pairs, "
                   f"{pairs(JUDGED_N)} pairs each at n {JUDGED_N})",
        verdict(ok),
        ("the population optimum predicts the learner where it cannot memorise" if ok else
         "the learner departs from the population optimum beyond seed error even where it cannot memorise"),
        ["Prediction: theory.infonce_population_optimum minimises the population InfoNCE (batches of n pairs) "
         "over B_I, B_T in R^{2x2} (embeddings normalise(B z), z with its projected noise); the zero-shot weights "
         "B_I^T normalise(B_T t_k) give the accuracy exactly (Phi). Every setting has sigma_xi^2/d = 1/2000; the "
         "defaults are compared with the n 200, d 10 prediction (the same population and batch)"
         + (" (quick mode: the reported setting is n 40, d 400, its own prediction)." if quick else "."),
         f"Why n {JUDGED_N}: at n 200, d 10 the aligned cells sit 0.005-0.02 below the prediction (the training loss "
         "creeps below the population optimum's through the noise directions, docs/temperature.md section 9), a "
         "systematic error of the size of the 3 s.e. tolerance, so the verdict there flipped with the seed draw; at "
         f"n {JUDGED_N} the residual is gone (docs' measurement), so the verdict tests the prediction itself. The "
         "tolerance is not widened: it is 3 s.e. in every setting.",
         "A final training loss far below the population optimum's loss means the encoders fit the training sample "
         "better than any encoder of the latent can: memorisation of the noise (docs/temperature.md#memorisation).",
         *table]))
