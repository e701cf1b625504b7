"""The eleven checks of docs/claims.md: claims C1-C6 and quantitative checks Q1-Q5.

Each check is a function `check_XX(quick: bool) -> Record`. It runs what it needs through the
package's public API and compares with an expectation that does not come from the code under
test: a closed form written out here, a second method, or the reference tables of docs/theory.md
(which came from an independent NumPy simulation). `quick` uses smaller n and fewer seeds; the
tolerances then widen by themselves, because they are multiples of the computed standard error.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from .common import (DERIVED, FAIL, NOT_RUN, PAPER, PASS, SAGAWA, TEST_INDEX, TESTS, Z, Margins, Record, evaluate, fmt,
                     mean_se, seed, seed_list, verdict)

from .check_g1 import check_G1
from .temperature import check_T1
from .theorems import CHECKS as THEOREM_CHECKS

ROOT = Path(__file__).resolve().parents[1]

# docs/theory.md#m1-reference table, defaults (sigma_core 1, sigma_spu 0.05, p 0.95, sigma_xi 1, d 2000).
M1_REFERENCE_TABLE = {  # caption richness r -> (aligned, independent, flipped), rounded to 3 decimals
    1.0: (0.926, 0.818, 0.709),
    0.5: (0.945, 0.800, 0.655),
    0.0: (0.971, 0.755, 0.540),
}
M1_REFERENCE_SL = (1.000, 0.501, 0.001)  # SL min-norm, simulated at the defaults (n = 200)
REFERENCE_ROUNDING = 0.0005  # the reference numbers are rounded to 3 decimals
Q1_TOLERANCE = 0.02  # "M1 numbers above within +-0.02"
# docs/theory.md#m2-reference, K=5, p=0.9, sigma_core=1, r=1, d=3000, flipped test, n=500 (3 seeds)
M2_REFERENCE_N500 = {(0.2, 0.0): 0.69, (0.2, 1.0): 0.78, (0.4, 0.0): 0.66, (0.4, 1.0): 0.81}
M2_REFERENCE_SL_N500 = {0.2: 0.00, 0.4: 0.00}


def _phi_m1(cfg, q: float) -> float:
    """The M1 closed form (docs/theory.md#m1-closed-form), written out here independently of theory.py (full rank, core prompts)."""
    w, m = 1 + cfg.r * cfg.sigma_core**2, 2 * cfg.p - 1
    e = cfg.sigma_xi**2 / cfg.d
    tau = math.sqrt(w**2 * (cfg.sigma_core**2 + e) + m**2 * (cfg.sigma_spu**2 + e))
    return q * stats.norm.cdf((w + m) / tau) + (1 - q) * stats.norm.cdf((w - m) / tau)


# ================================================================== C1


def _sagawa_minority_accuracy(cfg, seeds: int) -> dict[str, np.ndarray]:
    """Minority-group accuracy (the flipped test, exact) of min-norm SL, ERM and group-balanced, per seed."""
    import jax
    import jax.numpy as jnp

    from mmcl_theory.datamodel import dictionaries, sample_dataset
    from mmcl_theory.datamodel import test_groups
    from mmcl_theory.grid import linear_test_accuracy
    from mmcl_theory.learners import sl_min_norm

    out = {"erm": [], "balanced": []}
    for s in seed_list(seeds):
        k_dict, k_train, k_test = jax.random.split(jax.random.key(s), 3)
        dicts = dictionaries(k_dict, cfg)
        train = sample_dataset(k_train, cfg, dicts, cfg.n)
        group = 2 * train.label + train.spurious
        counts = jnp.bincount(group, length=4)
        balance = (cfg.n / 4) / counts[group]  # each (y, a) group weighs the same in the loss
        for name, w in (("erm", None), ("balanced", balance)):
            weights = sl_min_norm(train.x_image, train.label, 2, weights=w)
            out[name].append(float(linear_test_accuracy(k_test, test_groups(cfg, "flipped"), dicts[0],
                                                        cfg.sigma_xi**2 / cfg.d, weights, jnp.zeros(2))))
    return {k: np.asarray(v) for k, v in out.items()}


def check_C1(quick: bool) -> Record:
    """Sagawa et al. (2020)'s toy setting: with group-balanced weights, the minimum-norm (max-margin) SL
    classifier's minority-group accuracy falls as the number of noise features d grows past n."""
    from mmcl_theory.datamodel import make_config

    n, dims, seeds = (300, (30, 300, 1000), 3) if quick else (3000, (300, 3000, 10000), 3)
    acc, theory = {}, {}
    for d in dims:
        cfg = make_config("sagawa_toy", n=n, d=d)
        acc[d] = _sagawa_minority_accuracy(cfg, seeds)
        acc[d]["mmcl"] = evaluate(cfg, seeds, ("mmcl_closed_form",))["mmcl_closed_form"][:, TEST_INDEX["flipped"]]
        theory[d] = _phi_m1(cfg, 0.0)
    lo, hi = dims[0], dims[-1]
    (m_lo, se_lo), (m_hi, se_hi) = mean_se(acc[lo]["balanced"]), mean_se(acc[hi]["balanced"])
    drop, drop_se = m_lo - m_hi, math.hypot(se_lo, se_hi)
    ok = drop > Z * drop_se
    margins = Margins()
    margins.effect(drop, Z * drop_se, f"drop d {lo} -> {hi}")
    table = ["| d | d / n | SL min-norm, group-balanced | SL min-norm, ERM | MMCL closed form (r = 1) | MMCL theory |",
             "| --- | --- | --- | --- | --- | --- |"]
    for d in dims:
        table.append(f"| {d} | {d / n:.2f} | {fmt(*mean_se(acc[d]['balanced']))} | {fmt(*mean_se(acc[d]['erm']))} | "
                     f"{fmt(*mean_se(acc[d]['mmcl']))} | {theory[d]:.3f} |")
    return margins.stamp(Record(
        "C1", "In Sagawa et al. (2020)'s toy setting (n = 3000, p = 0.9, core ~ N(y, 1), spurious ~ N(a, 0.01), "
              "noise features of variance 1/d each), upweighting the minority groups helps the SL classifier only "
              "while d < n: past n the minimum-norm (max-margin) interpolator ignores the weights and its "
              "minority-group accuracy falls.",
        SAGAWA,
        f"group-balanced minority-group accuracy at d = {lo} minus at d = {hi} > 3 s.e. of the difference",
        f"{fmt(m_lo, se_lo)} at d={lo} -> {fmt(m_hi, se_hi)} at d={hi} (drop {fmt(drop, drop_se)}; {seeds} seeds, "
        f"n={n}, exact test-distribution accuracy)",
        verdict(ok),
        f"drop {drop:.3f} {'>' if ok else '<='} 3 s.e. = {Z * drop_se:.3f}",
        ["Preset datamodel 'sagawa_toy' (M1 with sigma_core 1, sigma_spu 0.1, p 0.9, sigma_xi 1, n 3000): "
         "x = D z + xi with D orthonormal, so the d - 2 directions orthogonal to D carry noise of variance 1/d each, "
         "Sagawa et al.'s noise features up to a rotation. The training minority groups (a != y) hold 10% of n.",
         "SL: learners.sl_min_norm with per-point weights 1/(its group's share) (group-balanced), the squared-loss "
         "stand-in for their upweighted logistic regression, and without weights (ERM). For d > n both interpolate, "
         "so they coincide: the minimum-norm interpolator is the max-margin direction when every point is a support "
         "vector. Accuracy on the flipped test = the mean of the two minority groups (y, a = -y), an upper bound on "
         "the worst group; computed exactly from the weights (grid.linear_test_accuracy).",
         "MMCL in the same setting: closed form on rich captions (r = 1); its theory column is the population "
         "closed form written out in this check.",
         *table,
         "Quick mode: n = 300, d in (30, 300, 1000)." if quick else "Quick mode uses n = 300, d in (30, 300, 1000)."]))


# ================================================================== C2


def check_C2(quick: bool) -> Record:
    """M1 defaults, rich captions: closed-form MMCL flipped accuracy = population closed form; beats SL by >= 0.3."""
    from mmcl_theory.datamodel import make_config

    seeds, n_test = (6, 1000) if quick else (20, 2000)
    cfg = make_config("M1", r=1.0, n_test=n_test)
    acc = evaluate(cfg, seeds, ("mmcl_closed_form", "sl_min_norm"))
    mm = acc["mmcl_closed_form"][:, TEST_INDEX["flipped"]]
    sl = acc["sl_min_norm"][:, TEST_INDEX["flipped"]]
    m, se = mean_se(mm)
    pop = _phi_m1(cfg, 0.0)
    diff, diff_se = mean_se(mm - sl)
    match = abs(m - pop) <= Z * se
    beats = diff - Z * diff_se >= 0.3
    margins = Margins()
    margins.equal(m - pop, Z * se, "MMCL - theory")
    margins.at_least(diff, 0.3 + Z * diff_se, "MMCL - SL >= 0.3 + 3 s.e.")
    return margins.stamp(Record(
        "C2", "With rich captions (r=1) at the M1 defaults, MMCL's flipped-test accuracy matches the population "
              "closed form within sampling error and exceeds SL's by at least 0.3.",
        PAPER,
        f"population closed form (docs/theory.md#m1-closed-form, written out in the check) {pop:.4f} +- 3 s.e.; "
        f"MMCL - SL >= 0.3",
        f"MMCL closed form {fmt(m, se, 4)}; SL min-norm {fmt(*mean_se(sl), 4)}; paired difference "
        f"{fmt(diff, diff_se)} ({seeds} seeds, n={cfg.n}, d={cfg.d}, n_test={n_test})",
        verdict(match and beats),
        (f"|MMCL - theory| = {abs(m - pop):.4f} {'<=' if match else '>'} 3 s.e. = {Z * se:.4f}; "
         f"difference - 3 s.e. = {diff - Z * diff_se:.3f} {'>=' if beats else '<'} 0.3"),
        ["Learners: models.evaluate_grid with mmcl_closed_form (full rank, rho=1) and sl_min_norm, "
         f"seeds {seed(0)}..{seed(seeds - 1)}; each seed draws new dictionaries, training and test sets.",
         "The population value is the n -> infinity limit; at n=200 the reference 5-seed simulation (docs/theory.md#m1-reference) gave "
         "0.702 against 0.709, so a small finite-sample bias is possible and would show up here as a failure."]))


# ================================================================== C3


def _c3_spreads(sc: float, n: int, seeds: int, n_test: int, on_data: bool):
    """Per seed, lists of: MMCL spread on test data, SL spread on test data, MMCL exact spread given its direction.

    The exact spread given a learned unit direction v is sqrt(sum_k (D_I^T v)_k^2 Var(z_k | class) + e), the
    expectation over the aligned test distribution (no test-sample noise); on_data=False skips the test data.
    """
    import jax

    from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
    from mmcl_theory.evaluate import projection_spread
    from mmcl_theory.learners import mmcl_closed_form, sl_min_norm

    spread = lambda x, label, v: float(projection_spread(x, label, v, 2))
    cfg = make_config("M1", sigma_core=sc, r=1.0, n=n, n_test=n_test)
    var = np.array([cfg.sigma_core**2, cfg.sigma_spu**2])
    e = cfg.sigma_xi**2 / cfg.d
    mmcl, sl, exact = [], [], []
    for s in seed_list(seeds):
        k_dict, k_train, k_test = jax.random.split(jax.random.key(1000 + s), 3)
        dicts = dictionaries(k_dict, cfg)
        train = sample_dataset(k_train, cfg, dicts, cfg.n)
        prompts = np.asarray(prompt_latents(cfg) @ dicts[1].T, np.float64)
        w_i, w_t = (np.asarray(w, np.float64) for w in mmcl_closed_form(train.x_image, train.x_text, 2, 1.0))
        v_mmcl = w_i.T @ (w_t @ (prompts[1] - prompts[0]))  # A (t_+ - t_-), A = W_I^T W_T
        lat = np.asarray(dicts[0], np.float64).T @ (v_mmcl / np.linalg.norm(v_mmcl))
        exact.append(float(np.sqrt(lat**2 @ var + e)))
        if on_data:
            test = sample_dataset(k_test, cfg, dicts, n_test, "aligned")  # majority groups only (a = y)
            x, label = np.asarray(test.x_image, np.float64), np.asarray(test.label)
            mmcl.append(spread(x, label, v_mmcl))
            w_sl = np.asarray(sl_min_norm(train.x_image, train.label, 2), np.float64)
            sl.append(spread(x, label, w_sl[:, 1] - w_sl[:, 0]))
    return mmcl, sl, exact


def _c3_population(sc: float) -> tuple[float, float, float]:
    """(MMCL spread, spurious-only spread, core-only spread) in the population, M1 defaults otherwise, r = 1."""
    from mmcl_theory.datamodel import make_config

    cfg = make_config("M1", sigma_core=sc, r=1.0)
    e = cfg.sigma_xi**2 / cfg.d
    w, m = 1 + cfg.r * sc**2, 2 * cfg.p - 1
    mmcl = math.sqrt((w**2 * sc**2 + m**2 * cfg.sigma_spu**2) / (w**2 + m**2) + e)
    return mmcl, math.sqrt(cfg.sigma_spu**2 + e), math.sqrt(sc**2 + e)


def check_C3(quick: bool) -> Record:
    """Non-collapse: MMCL's within-class spread along its learned core direction grows with sigma_core; SL's stays
    at sigma_spu scale."""
    if quick:
        seeds, n_test, sigmas, n_large, large_seeds = 3, 1000, (0.25, 1.0, 2.0), None, 0
    else:
        seeds, n_test, sigmas, n_large, large_seeds = 5, 2000, (0.25, 0.5, 1.0, 2.0), 2000, 4
    rows = []
    for sc in sigmas:
        mmcl, sl, small_exact = _c3_spreads(sc, 200, seeds, n_test, True)
        _, _, big = _c3_spreads(sc, n_large, large_seeds, n_test, False) if n_large else ([math.nan], [], [math.nan])
        pop, spu_only, core_only = _c3_population(sc)
        (mm, mm_se), (s, s_se), (b, b_se) = mean_se(mmcl), mean_se(sl), mean_se(big)
        near_spu = abs(math.log(s / spu_only)) < abs(math.log(s / core_only))
        rows.append(dict(sc=sc, mm=mm, mm_se=mm_se, pop=pop, s=s, s_se=s_se, spu=spu_only, core=core_only,
                         big=b, big_se=b_se, small=float(np.mean(small_exact)), near=near_spu))
    grows = all(b["mm"] - Z * b["mm_se"] > a["mm"] + Z * a["mm_se"] for a, b in zip(rows, rows[1:]))
    sl_near = all(r["near"] for r in rows)
    margins = Margins()
    for a, b in zip(rows, rows[1:]):
        margins.effect(b["mm"] - a["mm"], Z * (a["mm_se"] + b["mm_se"]), f"MMCL spread sigma_core {a['sc']} -> {b['sc']}")
    for r in rows:  # SL nearer (log ratio) the spurious-only scale than the core-only scale
        margins.at_most(abs(math.log(r["s"] / r["spu"])), abs(math.log(r["s"] / r["core"])),
                        f"SL spread nearer spurious scale, sigma_core {r['sc']}")
    table = ["| sigma_core | MMCL spread, n=200 | MMCL exact spread given its direction, n=200 / n=" + str(n_large) +
             " | MMCL closed form (n -> inf) | "
             "SL spread, n=200 | spurious-only sqrt(sigma_spu^2+e) | core-only sqrt(sigma_core^2+e) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {r['sc']} | {fmt(r['mm'], r['mm_se'])} | {r['small']:.3f} / {fmt(r['big'], r['big_se'], 4)} | {r['pop']:.4f} | "
              f"{fmt(r['s'], r['s_se'])} | {r['spu']:.3f} | {r['core']:.3f} |" for r in rows]
    measured = "; ".join(f"sigma_core={r['sc']}: MMCL {r['mm']:.3f}, SL {r['s']:.3f}" for r in rows)
    bias = ", ".join(f"{r['sc']}: {100 * (r['small'] / r['pop'] - 1):+.1f}%" for r in rows)
    why = ["MMCL spread increases with sigma_core beyond 3 s.e." if grows else
           "MMCL spread does NOT increase significantly at every step",
           "SL spread nearer the spurious-only than the core-only scale at every sigma_core" if sl_near else
           "SL spread nearer the core-only scale at some sigma_core"]
    return margins.stamp(Record(
        "C3", "Non-collapse: the within-class spread of MMCL image representations along the learned core "
              "direction grows with sigma_core, while SL's projection of the majority group stays at sigma_spu scale.",
        PAPER,
        "MMCL: increasing in sigma_core, population value sqrt((w^2 sigma_core^2 + m^2 sigma_spu^2)/(w^2 + m^2) + e) "
        "(w = 1 + r sigma_core^2, m = 2p-1, e = sigma_xi^2/d); SL: nearer sqrt(sigma_spu^2 + e) than "
        "sqrt(sigma_core^2 + e)",
        f"{measured} ({seeds} seeds each, n=200, d=2000, n_test={n_test})",
        verdict(grows and sl_near), "; ".join(why),
        ["Measure (precise): on the aligned test set (only the majority groups a = y), project each image x onto the "
         "unit-norm direction in image space that the learner's class score reads, and take the within-class "
         "standard deviation, averaged over the two classes. MMCL (closed form, rank 2 = the latent dimension, "
         "rho=1): v = A (t_+ - t_-), A = W_I^T W_T, t_k the observed core prompts, so v/|v| is the learned core "
         "direction as read through the class-name captions. SL (min-norm): v = W[:,1] - W[:,0]. Both are in the "
         "same units (image space, unit-norm direction) and include the test image noise (variance e along any "
         "unit direction).",
         "Pass when: consecutive MMCL spreads (n=200) rise by more than 3 s.e. each side, and SL's spread is "
         "nearer (in log ratio) the spurious-only scale than the core-only scale, at every sigma_core.",
         "Beside the verdict (information): MMCL's exact spread given its learned direction v, i.e. the "
         "test-distribution expectation sqrt(sum_k (D_I^T v)_k^2 Var(z_k | class) + e), free of test-sample noise, "
         "against the population closed form"
         + (f", at n=200 and at n={n_large} ({large_seeds} seeds)." if n_large else " (n=200 only in quick mode)."),
         *table,
         f"Finding: at n=200 MMCL's exact spread sits above its n -> infinity closed form ({bias}); "
         + (f"at n={n_large}: " + ", ".join(f"{r['sc']}: {100 * (r['big'] / r['pop'] - 1):+.2f}%" for r in rows)
            + (f" ({'all' if all(abs(r['big'] - r['pop']) <= Z * r['big_se'] for r in rows) else 'not all'} within "
               "3 s.e. of the closed form). " ) if n_large else "") +
         "A finite-sample effect: the noise in S attenuates the weaker, spurious-leaning singular direction more "
         "than the core one, tilting the learned direction towards the core; it shrinks as n grows. A first version "
         "of this check required a 3 s.e. match with the closed form at n=200 and failed on this bias; the closed "
         "form is an n -> infinity limit, so it is reported here beside the verdict rather than used as the "
         "expectation at finite n. The claim itself (growth; SL at spurious scale) does not depend on it.",
         "SL's spread is small because its min-norm direction is mostly spent memorising noise and, within the "
         "latent plane, mostly spurious; it does not grow with sigma_core, while MMCL's grows roughly as sigma_core."]))


# ================================================================== C4


def check_C4(quick: bool) -> Record:
    """Flipped accuracy rises monotonically in r (theory and closed form); r=0 is label-only behaviour."""
    from mmcl_theory.datamodel import make_config
    from mmcl_theory.theory import population_zero_shot_accuracy

    seeds, n_test = (4, 1000) if quick else (10, 2000)
    grid = np.linspace(0, 1, 101)
    theory_curve = [_phi_m1(make_config("M1", r=float(r)), 0.0) for r in grid]
    theory_mono = bool(np.all(np.diff(theory_curve) > 0))
    rs = (0.0, 0.25, 0.5, 0.75, 1.0)
    acc = {r: evaluate(make_config("M1", r=r, n_test=n_test), seeds, ("mmcl_closed_form",))["mmcl_closed_form"]
           for r in rs}
    flipped = {r: acc[r][:, TEST_INDEX["flipped"]] for r in rs}
    steps = []
    for a, b in zip(rs, rs[1:]):
        d, d_se = mean_se(flipped[b] - flipped[a])  # paired by seed (same key: same latents except captions)
        steps.append((a, b, d, d_se))
    no_drop = all(d > -Z * d_se for *_, d, d_se in steps)
    rise, rise_se = mean_se(flipped[1.0] - flipped[0.0])
    rises = rise > Z * rise_se
    # r = 0: captions carry the label only (z_T,core = y); expected = the reference label-only row
    r0 = [mean_se(acc[0.0][:, i]) for i in range(3)]
    label_only = all(abs(m - ref) <= Z * se + REFERENCE_ROUNDING for (m, se), ref in zip(r0, M1_REFERENCE_TABLE[0.0]))
    pop_r0 = [population_zero_shot_accuracy(make_config("M1", r=0.0), t) for t in TESTS]
    ok = theory_mono and no_drop and rises and label_only
    margins = Margins()
    margins.holds(theory_mono, "closed form increasing in r")
    for a, b, d, d_se in steps:  # no step down beyond 3 s.e.: -d <= 3 s.e.
        margins.add(-d / (Z * d_se) if d_se > 0 else (0.0 if d >= 0 else math.inf), f"no step down r {a} -> {b}")
    margins.effect(rise, Z * rise_se, "rise r 0 -> 1")
    for (m_, se_), ref, test in zip(r0, M1_REFERENCE_TABLE[0.0], TESTS):
        margins.equal(m_ - ref, Z * se_ + REFERENCE_ROUNDING, f"r = 0 {test} vs label-only row")
    meas = ", ".join(f"r={r}: {fmt(*mean_se(flipped[r]))}" for r in rs)
    return margins.stamp(Record(
        "C4", "Richer captions help: flipped accuracy rises monotonically in caption richness r, and at r=0 "
              "MMCL falls to label-only behaviour.",
        PAPER,
        f"closed form strictly increasing in r on a 101-point grid ({theory_curve[0]:.3f} -> {theory_curve[-1]:.3f}); "
        f"measured: no step down beyond "
        f"3 s.e. and r=0 -> 1 rise > 3 s.e.; r=0 = reference label-only row {M1_REFERENCE_TABLE[0.0]} +- (3 s.e. + 0.0005)",
        f"flipped: {meas} ({seeds} seeds, n=200, d=2000, n_test={n_test}); r=0 aligned/indep/flipped "
        f"{', '.join(fmt(*x) for x in r0)}",
        verdict(ok),
        "; ".join([
            "theory strictly increasing" if theory_mono else "theory NOT monotone",
            "no significant step down" if no_drop else "a significant step down",
            f"rise {rise:.3f} +- {rise_se:.3f} {'>' if rises else '<='} 3 s.e.",
            "r=0 matches the label-only row" if label_only else "r=0 differs from the label-only row"]),
        ["Steps (paired differences by seed): " + "; ".join(f"{a}->{b}: {d:+.3f} +- {s:.3f}" for a, b, d, s in steps),
         "Closed form (flipped) at r = 0, 0.25, 0.5, 0.75, 1: "
         + ", ".join(f"{theory_curve[round(r * 100)]:.4f}" for r in rs),
         f"Population (theory.population_zero_shot_accuracy, exact Gaussian) at r=0: "
         f"{', '.join(f'{x:.4f}' for x in pop_r0)}; the reference label-only row is the expectation used.",
         "At r=0 every caption states the class only (z_T,core = y), so r=0 *is* the label-only caption model; "
         "the check is that its accuracy is the reference label-only row."]))


# ================================================================== C5


def check_C5(quick: bool) -> Record:
    """M2: annotated details raise MMCL's shifted accuracy above unannotated MMCL and above SL."""
    from mmcl_theory.datamodel import make_config
    from mmcl_theory.theory import population_zero_shot_accuracy

    seeds, n_test, betas = (3, 500, (0.4,)) if quick else (6, 2000, (0.2, 0.4))
    ok = True
    lines, meas, why = [], [], []
    margins = Margins()
    for beta in betas:
        res = {}
        for ann in (0.0, 1.0):
            cfg = make_config("M2", sigma_core=1.0, beta=beta, annotate=ann, n_test=n_test)
            res[ann] = evaluate(cfg, seeds, ("mmcl_closed_form", "sl_min_norm"))
        f = TEST_INDEX["flipped"]
        ann_acc, un_acc = res[1.0]["mmcl_closed_form"][:, f], res[0.0]["mmcl_closed_form"][:, f]
        sl_acc = res[1.0]["sl_min_norm"][:, f]  # SL sees images and labels only: annotation does not change it
        d1, d1_se = mean_se(ann_acc - un_acc)
        d2, d2_se = mean_se(ann_acc - sl_acc)
        good = d1 > Z * d1_se and d2 > Z * d2_se
        ok &= good
        margins.effect(d1, Z * d1_se, f"beta {beta}: annotated - unannotated")
        margins.effect(d2, Z * d2_se, f"beta {beta}: annotated - SL")
        pops = {a: population_zero_shot_accuracy(make_config("M2", sigma_core=1.0, beta=beta, annotate=a), "flipped")
                for a in (0.0, 1.0)}
        meas.append(f"beta={beta}: annotated {fmt(*mean_se(ann_acc))}, unannotated {fmt(*mean_se(un_acc))}, "
                    f"SL {fmt(*mean_se(sl_acc))}")
        why.append(f"beta={beta}: annotated - unannotated {d1:+.3f} +- {d1_se:.3f}, annotated - SL {d2:+.3f} +- "
                   f"{d2_se:.3f}")
        lines.append(f"beta={beta}: population closed form {pops[0.0]:.3f} (unannotated) / {pops[1.0]:.3f} "
                     f"(annotated); reference n=500 {M2_REFERENCE_N500[(beta, 0.0)]:.2f} / {M2_REFERENCE_N500[(beta, 1.0)]:.2f}, "
                     f"SL {M2_REFERENCE_SL_N500[beta]:.2f}")
    return margins.stamp(Record(
        "C5", "In M2, annotating the other classes' objects that appear in an image (inter-class feature sharing) "
              "raises MMCL's shifted-test accuracy above MMCL without those annotations and above SL.",
        PAPER,
        "annotated > unannotated and annotated > SL by more than 3 s.e. of the paired difference "
        "(reference n=500: 0.78 vs 0.69 vs 0.00 at beta=0.2; 0.81 vs 0.66 vs 0.00 at beta=0.4)",
        "; ".join(meas) + f" ({seeds} seeds, K=5, p=0.9, sigma_core=1, n=500, d=3000, n_test={n_test}, flipped test)",
        verdict(ok), "; ".join(why),
        ["Learners: mmcl_closed_form (full rank) and sl_min_norm through models.evaluate_grid; the shifted test "
         "has a != y always and no details (docs/models.md#m2). Differences are paired by seed.", *lines]))


# ================================================================== C6


def _find_real_data() -> list[Path]:
    pats = ["figures/real_data_*.csv", "real_data/results/**/*.csv", "real_data/results/**/*.json",
            "real_data/results/**/er_summary.txt"]
    found = []
    for p in pats:
        found += [Path(f) for f in glob.glob(str(ROOT / p), recursive=True)]
    return sorted(set(found))


def _series_points(path: Path) -> dict[str, list[tuple[float, float]]] | None:
    """A robustness series CSV (series, step, id_acc, ood_acc) -> {series: [(id, ood), ...]}; None if not one."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"series", "id_acc", "ood_acc"} <= set(rows[0]):
        return None
    out: dict[str, list] = {}
    for r in rows:
        try:
            out.setdefault(r["series"], []).append((float(r["id_acc"]), float(r["ood_acc"])))
        except (TypeError, ValueError):
            continue
    return out


def _mean_er_bootstrap_se(label_pts: np.ndarray, cap_pts: np.ndarray, samples: int = 2000) -> float:
    """Standard deviation of the mean ER (points) over bootstrap refits of the label trend (logit axes).

    The trend's uncertainty is shared by every checkpoint, so averaging checkpoints does not reduce it.
    """
    from mmcl_theory.clip.robustness import bootstrap_er_samples

    er = bootstrap_er_samples(label_pts[:, 0], label_pts[:, 1], cap_pts[:, 0], cap_pts[:, 1], "logit", samples, seed(0))
    return float(np.std(er.mean(axis=1), ddof=1))


def check_C6(quick: bool) -> Record:
    """Real data: caption-trained models above label-trained ones in the OOD-vs-ID plane (higher ER)."""
    claim = ("On real images, models trained with captions lie above models trained with labels in the OOD-vs-ID "
             "plane (higher effective robustness).")
    expected = ("effective robustness (ER) of the caption ('rich') checkpoints > 0 against the logit-linear trend of "
                "the label checkpoints: mean ER - 3 s.e. > 0, the s.e. combining the spread over checkpoints and "
                "the trend's own uncertainty (bootstrap over the label checkpoints)")
    files = _find_real_data()
    for path in files:
        pts = _series_points(path) if path.suffix == ".csv" else None
        if not pts:
            continue
        label = next((k for k in pts if "label" in k.lower()), None)
        caps = [k for k in pts if k != label and any(w in k.lower() for w in ("rich", "caption"))]
        if label is None or not caps or len(pts[label]) < 2:
            continue
        from mmcl_theory.clip.robustness import read_series_csv, series_effective_robustness

        series = read_series_csv(path)
        rep = series_effective_robustness(series, [label])  # bootstrap CIs over the label checkpoints
        lab = np.array(pts[label])
        ok, texts, details = True, [], []
        margins = Margins()
        for k in caps:
            cks = rep["series"][k]["checkpoints"]
            er = np.array([c["er"] for c in cks])  # percentage points
            m, se_ck = mean_se(er)
            se_fit = _mean_er_bootstrap_se(lab, np.array(pts[k]))
            se = math.hypot(se_ck, se_fit)
            above = sum(c["ci"][0] > 0 for c in cks)
            ok &= m - Z * se > 0
            margins.effect(m, Z * se, f"{k}: mean ER > 3 s.e.")
            ids = np.array(pts[k])[:, 0]
            texts.append(f"{k}: mean ER {m:+.2f} +- {se:.2f} points over {len(er)} checkpoints (s.e. from "
                         f"checkpoints {se_ck:.2f} and from the trend fit {se_fit:.2f}; {above} of {len(er)} "
                         "checkpoints with 95% bootstrap CI above 0)")
            details.append(f"{k} per checkpoint (step: ER [95% CI]): " + "; ".join(
                f"{c['step']}: {c['er']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]" for c in cks))
            details.append(f"{k} ID accuracy range {ids.min():.3f}-{ids.max():.3f} vs label {lab[:, 0].min():.3f}-"
                           f"{lab[:, 0].max():.3f}: the label trend is extrapolated below its range where they do not "
                           "overlap.")
        summary = [f for f in _find_real_data() if f.name == "er_summary.txt"]
        return margins.stamp(Record("C6", claim, PAPER, expected,
                      "; ".join(texts) + f"; baseline: {len(lab)} label checkpoints (file {path.relative_to(ROOT)})",
                      verdict(ok), ("caption series above the label trend by > 3 s.e." if ok else
                                    "not confirmed: the caption series' mean ER is not above 0 by 3 s.e. (with a "
                                    "positive mean this is inconclusive rather than a refutation)"),
                      [f"Read {path.relative_to(ROOT)} (columns series, step, id_acc, ood_acc), written by the "
                       "real-data track (Tiny ImageNet, label vs rich captions); ER computed with "
                       "mmcl_theory.clip.robustness.series_effective_robustness (logit axes, trend over the label "
                       "checkpoints, bootstrap over them).",
                       *details,
                       "Caveats: one training seed per variant; checkpoints of one run are correlated, so the s.e. "
                       "over checkpoints understates the uncertainty; accuracies are low (ID 9-17%), far below the "
                       "regime of the paper's CLIP models."
                       + (f" Per-shift ERs: see {summary[0].relative_to(ROOT)}." if summary else "")]))
    looked = "figures/real_data_*.csv, real_data/results/**/*.csv|json"
    reason = (f"no real-data series results found (looked for {looked}; found "
              f"{', '.join(str(p.relative_to(ROOT)) for p in files) or 'nothing'}): the real-data track "
              "(Tiny ImageNet label vs rich captions) has not produced a series CSV with columns "
              "series, id_acc, ood_acc yet")
    return Record("C6", claim, PAPER, expected, "nothing measured", NOT_RUN, reason,
                  ["Run the real-data experiment (real_data/tiny_imagenet_experiment.py) and its robustness series "
                   "step; this check reads the resulting CSV without running anything."])


# ================================================================== C7


def check_C7(quick: bool) -> Record:
    """Digits (M3): closed-form MMCL's flipped accuracy follows its exact expectation and rises with r."""
    from mmcl_theory.digits import DigitsConfig
    from mmcl_theory.models import evaluate_grid

    seeds = 3 if quick else 5
    base = dict(p=0.99, spurious="tint", spurious_strength=0.5, spurious_sigma=0.01, caption="class_weight",
                detail="class_axis", detail_scale=2.0, n_train=600 if quick else 1200, n_test=500)
    res = {}
    for r in (0.0, 1.0):
        rows = evaluate_grid([DigitsConfig(r=r, **base)], seed_list(seeds), ("theory_mmcl", "mmcl_closed_form", "sl_mlp"))[0]
        pick = lambda l, p: np.array([x["accuracy"] for x in rows if x["learner"] == l and x["prompt"] == p
                                      and x["test"] == "flipped"])
        res[r] = {"theory": pick("theory_mmcl", "word"), "closed": pick("mmcl_closed_form", "word"),
                  "sl": pick("sl_mlp", "")}
    match = all(abs(mean_se(res[r]["closed"] - res[r]["theory"])[0]) <= Z * mean_se(res[r]["closed"] - res[r]["theory"])[1]
                + 0.005 for r in res)
    rise, rise_se = mean_se(res[1.0]["closed"] - res[0.0]["closed"])
    ok = match and rise > Z * rise_se
    margins = Margins()
    for r in res:
        d, d_se = mean_se(res[r]["closed"] - res[r]["theory"])
        margins.equal(d, Z * d_se + 0.005, f"r = {r}: closed form - E[S]")
    margins.effect(rise, Z * rise_se, "rise r 0 -> 1")
    lines = [f"r = {r}: theory (E[S]) {fmt(*mean_se(v['theory']))}, closed form (sampled S) {fmt(*mean_se(v['closed']))}, "
             f"SL MLP {fmt(*mean_se(v['sl']))}" for r, v in res.items()]
    return margins.stamp(Record(
        "C7", "On real digits with a spurious colour under which same-backbone SL fails, captions whose per-image "
              "detail reaches the prompt raise closed-form MMCL's flipped accuracy with r, as the closed form on the "
              "same design predicts.",
        DERIVED,
        "closed form (sampled S) = exact expectation E[S] within 3 s.e. + 0.005 at r = 0 and 1 (paired by seed), "
        "and its rise from r = 0 to 1 > 3 s.e.",
        f"flipped: closed form {fmt(*mean_se(res[0.0]['closed']))} -> {fmt(*mean_se(res[1.0]['closed']))}; "
        f"rise {fmt(rise, rise_se)} ({seeds} seeds, sklearn digits, n {base['n_train']})",
        verdict(ok),
        ("closed form on its expectation at both r, and the rise is significant" if ok else
         "closed form off its expectation" if not match else "rise within 3 s.e."),
        ["Design: docs/models.md#m3 (tint 0.5, sigma 0.01, p 0.99, class-axis detail, kappa 2, bare-word prompt).",
         "Independent expectation: theory_mmcl, E[S] computed exactly over the colour and caption draws for the "
         "same training images (digits.expected_cross_covariance); the closed form uses the sampled S.",
         *lines]))


# ================================================================== C8


def check_C8(quick: bool) -> Record:
    """Real images aimed at the two mechanisms (real_data/mechanisms_experiment.py): the sign per arm."""
    path = Path(__file__).resolve().parents[1] / "real_data" / "results" / "mechanisms" / "er_report.json"
    claim = ("On real images, per-image detail inside a class (coarse + fine class name) and naming every object "
             "of a mosaic raise effective robustness against their baselines' trends, and SL on the same images "
             "sits below both.")
    expected = ("ER > 0 for coarse_fine and mosaic_all (95% t-interval over >= 3 seeds above 0); SL arms below 0 "
                "and below their treatment's ER")
    if not path.is_file():
        return Record("C8", claim, PAPER, expected, "no results", NOT_RUN,
                      f"{path.name} not found: run real_data/mechanisms_experiment.py (real_data/README.md)")
    from mmcl_theory.io import load_module_from_path

    analysis = load_module_from_path(ROOT / "real_data" / "mechanisms_analysis.py", "mechanisms_analysis")
    report = json.loads(path.read_text())
    c = analysis.c6_assessment(report["mechanisms"])
    verdict_ = {"pass": PASS, "fail": FAIL}.get(c["verdict"], NOT_RUN)
    measured = "; ".join(c["lines"]) or "no arm with >= 3 seeds"
    why = (f"arms without >= 3 seeds: {', '.join(c['missing'])}" if c["missing"] else
           "every present arm on its predicted side" if verdict_ == PASS else "an arm off its predicted side")
    if c["missing"] and verdict_ == NOT_RUN:
        why = "a treatment arm lacks 3 seeds (" + ", ".join(c["missing"]) + "); measured so far: " + measured
    return Record("C8", claim, PAPER, expected, measured, verdict_, why,
                  [f"Source: {path.relative_to(path.parents[3])} (written by real_data/mechanisms_experiment.py "
                   "--analyse-only); the rule is c6_assessment in real_data/mechanisms_analysis.py.",
                   *c["lines"]])


# ================================================================== Q1


def check_Q1(quick: bool) -> Record:
    """The M1 reference table (docs/theory.md#m1-reference) within +-0.02 at large n: closed-form MMCL rows, SL min-norm row at the defaults."""
    from mmcl_theory.datamodel import make_config
    from mmcl_theory.theory import population_zero_shot_accuracy

    n, n_test, seeds = (500, 1000, 3) if quick else (2000, 4000, 5)
    sl_seeds, sl_n_test = (6, 1000) if quick else (20, 2000)
    ok = True
    worst_gap = 0.0
    table = ["| row | test | reference | measured (mean +- s.e.) | |diff| | tolerance 0.02 + 3 s.e. | exact theory |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    theory_ok = True
    margins = Margins()
    for r, ref in M1_REFERENCE_TABLE.items():
        cfg = make_config("M1", r=r, n=n, n_test=n_test)
        acc = evaluate(cfg, seeds, ("mmcl_closed_form",))["mmcl_closed_form"]
        for i, test in enumerate(TESTS):
            m, se = mean_se(acc[:, i])
            tol = Q1_TOLERANCE + Z * se
            exact = population_zero_shot_accuracy(make_config("M1", r=r), test)
            theory_ok &= abs(exact - ref[i]) <= REFERENCE_ROUNDING + 1e-9
            ok &= abs(m - ref[i]) <= tol
            margins.equal(m - ref[i], tol, f"MMCL r = {r} {test}")
            worst_gap = max(worst_gap, abs(m - ref[i]))
            table.append(f"| MMCL r={r} | {test} | {ref[i]:.3f} | {fmt(m, se, 4)} | {abs(m - ref[i]):.4f} | "
                         f"{tol:.4f} | {exact:.4f} |")
    cfg = make_config("M1", n_test=sl_n_test)
    sl = evaluate(cfg, sl_seeds, ("mmcl_closed_form", "sl_min_norm"))["sl_min_norm"]
    for i, test in enumerate(TESTS):
        m, se = mean_se(sl[:, i])
        tol = Q1_TOLERANCE + Z * se
        ok &= abs(m - M1_REFERENCE_SL[i]) <= tol
        margins.equal(m - M1_REFERENCE_SL[i], tol, f"SL min-norm {test}")
        worst_gap = max(worst_gap, abs(m - M1_REFERENCE_SL[i]))
        table.append(f"| SL min-norm (n=200) | {test} | {M1_REFERENCE_SL[i]:.3f} | {fmt(m, se, 4)} | "
                     f"{abs(m - M1_REFERENCE_SL[i]):.4f} | {tol:.4f} | - |")
    ok &= theory_ok
    margins.holds(theory_ok, "exact theory = reference within rounding")
    return margins.stamp(Record(
        "Q1", "The M1 reference table (docs/theory.md#m1-reference) is reproduced within +-0.02 (n large enough).",
        DERIVED,
        "reference table (independent NumPy simulation/closed form), +-0.02 + 3 s.e.",
        f"largest |measured - reference| = {worst_gap:.4f} over 12 cells (MMCL: {seeds} seeds, n={n}, n_test={n_test}; "
        f"SL: {sl_seeds} seeds at the defaults n=200, n_test={sl_n_test})",
        verdict(ok),
        ("every cell within tolerance; exact theory within 0.0005 of every reference MMCL cell" if ok else
         "some cell outside tolerance" + ("" if theory_ok else " (exact theory differs from the reference beyond rounding)")),
        ["MMCL rows: closed form (full rank) at d=2000 and large n; SL row: min-norm at the defaults (n=200, where "
         "the reference simulated it; min-norm needs d >> n).", *table]))


# ================================================================== Q2


def check_Q2(quick: bool) -> Record:
    """SL min-norm flipped accuracy < 0.10 at p = 0.95 (M1 defaults)."""
    from mmcl_theory.datamodel import make_config

    seeds, n_test = (6, 1000) if quick else (20, 2000)
    cfg = make_config("M1", n_test=n_test)
    sl = evaluate(cfg, seeds, ("mmcl_closed_form", "sl_min_norm"))["sl_min_norm"][:, TEST_INDEX["flipped"]]
    m, se = mean_se(sl)
    ok = m + Z * se < 0.10
    margins = Margins()
    margins.at_most(m + Z * se, 0.10, "SL flipped mean + 3 s.e. < 0.10")
    return margins.stamp(Record(
        "Q2", "SL (min-norm interpolator) flipped-test accuracy is below 0.10 at p = 0.95 in M1.",
        DERIVED, "< 0.10 (reference simulation: 0.001)",
        f"{fmt(m, se, 4)} (max over seeds {sl.max():.3f}; {seeds} seeds, n=200, d=2000, n_test={n_test})",
        verdict(ok), f"mean + 3 s.e. = {m + Z * se:.4f} {'<' if ok else '>='} 0.10",
        ["SL min-norm W = X^+ Y (learners.sl_min_norm), flipped test (a != y for every point)."]))


# ================================================================== Q3


def check_Q3(quick: bool) -> Record:
    """Closed form A* equals the limit of gradient descent on the linear loss (relative Frobenius error < 1e-3)."""
    import jax

    from mmcl_theory.datamodel import dictionaries, make_config, sample_dataset
    from mmcl_theory.learners import mmcl_linear_gd
    from mmcl_theory.theory import closed_form_minimiser, contrastive_cross_covariance

    d, steps = (200, 1500) if quick else (2000, 3000)
    cfg = make_config("M1", d=d)
    k_dict, k_train, k_gd = jax.random.split(jax.random.key(seed(7)), 3)
    train = sample_dataset(k_train, cfg, dictionaries(k_dict, cfg), cfg.n)
    S = contrastive_cross_covariance(train.x_image, train.x_text)
    sv = np.linalg.svd(S, compute_uv=False)
    errs, lines = [], []
    for rank, rho in ((1, 1.0), (2, 1.0), (2, 0.5)):
        a_star = closed_form_minimiser(S, rank, rho)
        w_i, w_t = mmcl_linear_gd(k_gd, train.x_image, train.x_text, rank, rho, steps, 0.1)
        a_gd = np.asarray(w_i, np.float64).T @ np.asarray(w_t, np.float64)
        err = float(np.linalg.norm(a_gd - a_star) / np.linalg.norm(a_star))
        errs.append(err)
        lines.append(f"rank {rank}, rho {rho}: ||A_GD - A*||_F / ||A*||_F = {err:.2e}")
    ok = max(errs) < 1e-3
    margins = Margins()
    margins.at_most(max(errs), 1e-3, "relative error < 1e-3")
    return margins.stamp(Record(
        "Q3", "The closed-form minimiser A* of the linear contrastive loss equals the limit of gradient descent on "
              "that loss (same rank and rho).",
        DERIVED, "relative Frobenius error < 1e-3",
        f"max relative error {max(errs):.2e} over (rank, rho) in (1,1), (2,1), (2,0.5); M1 defaults n=200, d={d}, "
        f"{steps} GD steps (momentum 0.9, lr 0.1, float32), one seed ({seed(7)})",
        verdict(ok), f"{max(errs):.2e} {'<' if ok else '>='} 1e-3",
        [*lines, f"Top singular values of S: {', '.join(f'{s:.4f}' for s in sv[:4])} (the gap after the second "
                 "sets the GD convergence rate).",
         "A* from theory.closed_form_minimiser (float64 SVD of S); A_GD = W_I^T W_T from learners.mmcl_linear_gd."]))


# ================================================================== Q4


def check_Q4(quick: bool) -> Record:
    """S (pairwise form) equals n/(n-1) times the centred cross-covariance."""
    import jax

    from mmcl_theory.datamodel import dictionaries, make_config, sample_dataset
    from mmcl_theory.learners import mmcl_closed_form
    from mmcl_theory.theory import contrastive_cross_covariance

    errs, lines = [], []
    for i, (n, d) in enumerate(((5, 8), (40, 30), (200, 100))):
        cfg = make_config("M1", n=n, d=d)
        k_dict, k_train = jax.random.split(jax.random.key(seed(i)))
        ds = sample_dataset(k_train, cfg, dictionaries(k_dict, cfg), n)
        xi, xt = np.asarray(ds.x_image, np.float64), np.asarray(ds.x_text, np.float64)
        S = contrastive_cross_covariance(xi, xt)
        # second method: numpy's unbiased covariance, cross block = n/(n-1) * centred cross-covariance
        cov = np.cov(xi.T, xt.T)[:d, d:]
        # third method: the loss definition term by term (explicit sum over i != j)
        neg = np.zeros((d, d))
        for i in range(n):
            neg += np.outer(xi[i], xt.sum(0) - xt[i])
        brute = xi.T @ xt / n - neg / (n * (n - 1))
        e1 = float(np.abs(S - cov).max() / np.abs(cov).max())
        e2 = float(np.abs(S - brute).max() / np.abs(brute).max())
        w_i, w_t = mmcl_closed_form(ds.x_image, ds.x_text, 0, 1.0)
        e3 = float(np.abs(np.asarray(w_i, np.float64).T @ np.asarray(w_t, np.float64) - cov).max() / np.abs(cov).max())
        errs.append((e1, e2, e3))
        lines.append(f"n={n}, d={d}: vs np.cov {e1:.1e}; vs explicit pair sum {e2:.1e}; "
                     f"learners.mmcl_closed_form (float32) W_I^T W_T vs np.cov {e3:.1e}")
    e = np.array(errs)
    ok = e[:, :2].max() < 1e-10 and e[:, 2].max() < 1e-4
    margins = Margins()
    margins.at_most(e[:, :2].max(), 1e-10, "float64 identity < 1e-10")
    margins.at_most(e[:, 2].max(), 1e-4, "float32 factors < 1e-4")
    return margins.stamp(Record(
        "Q4", "The linear loss's S equals n/(n-1) times the centred cross-covariance of image and caption.",
        DERIVED, "max relative entry error < 1e-10 in float64 (< 1e-4 for the float32 learner's factors)",
        f"max {e[:, :2].max():.1e} (float64), {e[:, 2].max():.1e} (float32 factors); three (n, d) sizes",
        verdict(ok), "identity holds to rounding" if ok else "identity violated beyond rounding",
        [*lines, "theory.contrastive_cross_covariance computes the pairwise form; np.cov is an independent "
                 "implementation of the centred form with the 1/(n-1) normalisation."]))


# ================================================================== Q5


def check_Q5(quick: bool) -> Record:
    """Zero-shot accuracy is invariant to rho > 0 and to W_I -> R W_I, W_T -> R^{-T} W_T."""
    import jax

    from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
    from mmcl_theory.learners import mmcl_closed_form

    cfg = make_config("M1", n_test=1000 if quick else 2000)
    k_dict, k_train, k_test, k_r = jax.random.split(jax.random.key(seed(11)), 4)
    dicts = dictionaries(k_dict, cfg)
    train = sample_dataset(k_train, cfg, dicts, cfg.n)
    test = sample_dataset(k_test, cfg, dicts, cfg.n_test, "flipped")
    x = np.asarray(test.x_image, np.float64)
    label = np.asarray(test.label)
    prompts = np.asarray(prompt_latents(cfg) @ dicts[1].T, np.float64)
    rng = np.random.default_rng(seed(0))

    def logits(w_i, w_t):
        return (x @ w_i.T) @ (prompts @ w_t.T).T

    lines, ok = [], True
    margins = Margins()
    for rank in (2, 0):
        base = [np.asarray(w, np.float64) for w in mmcl_closed_form(train.x_image, train.x_text, rank, 1.0)]
        ref = logits(*base)
        ref_pred, ref_acc = ref.argmax(1), float(np.mean(ref.argmax(1) == label))
        margin = np.abs(ref[:, 1] - ref[:, 0])
        variants = {}
        for rho in (0.01, 10.0):
            variants[f"rho={rho}"] = [np.asarray(w, np.float64) for w in
                                      mmcl_closed_form(train.x_image, train.x_text, rank, rho)]
        p = base[0].shape[0]
        R = rng.normal(size=(p, p)) + 0.5 * p**0.5 * np.eye(p)
        variants[f"R (cond {np.linalg.cond(R):.0f})"] = [R @ base[0], np.linalg.inv(R).T @ base[1]]
        for name, (w_i, w_t) in variants.items():
            lg = logits(w_i, w_t)
            pred = lg.argmax(1)
            changed = pred != ref_pred
            # a flip is only allowed where the reference margin is at floating-point rounding level
            tiny = margin < 1e-9 * np.abs(ref).max()
            ok &= not np.any(changed & ~tiny)
            margins.holds(not np.any(changed & ~tiny), f"rank {rank}, {name}: no prediction changed")
            lines.append(f"embedding dim {'n (full rank)' if rank == 0 else rank}, {name}: accuracy "
                         f"{np.mean(pred == label):.4f} vs {ref_acc:.4f}; {int(changed.sum())} of {len(pred)} "
                         f"predictions changed")
    return margins.stamp(Record(
        "Q5", "Zero-shot accuracy is invariant to the regulariser rho > 0 and to W_I -> R W_I, W_T -> R^{-T} W_T.",
        DERIVED, "identical predictions (apart from points whose margin is at rounding level)",
        "; ".join(lines[:1] + lines[3:4]) + f" (one seed ({seed(11)}), M1 defaults, n_test={cfg.n_test}, flipped test)",
        verdict(ok), "no prediction changed" if ok else "some prediction changed beyond rounding",
        [*lines, "rho enters A* = S_p / rho as a positive scale, so every logit scales by 1/rho; R cancels in "
                 "W_I^T W_T = W_I^T R^T R^{-T} W_T. The check applies both to learners.mmcl_closed_form's factors."]))


CHECKS = {  # the paper's theorems first, then the package's claims on its own models
    **THEOREM_CHECKS,
    "G1": check_G1,
    "TAU": check_T1,
    "C1": check_C1, "C2": check_C2, "C3": check_C3, "C4": check_C4, "C5": check_C5, "C6": check_C6, "C7": check_C7,
    "C8": check_C8,
    "Q1": check_Q1, "Q2": check_Q2, "Q3": check_Q3, "Q4": check_Q4, "Q5": check_Q5,
}
