"""Mutation check of the fast suite: each hand-made mutant of the science code must fail the fast test named
beside it (a test that compares a value with an independent one). Not a test itself (pytest does not collect it).

    python tests/mutants.py        # copies the checkout to a temporary folder, applies each mutant there in turn

Prints one line per mutant: CAUGHT or NOT CAUGHT, its name, and pytest's summary; exit 1 if any is not caught.
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1]
MUTANTS = [  # (what the mutant does, file, original text, mutated text, the fast tests that must fail)
 ("InfoNCE temperature applied twice (losses.infonce_loss)", "mmcl_theory/losses.py",
  "logits = logit_scale * (emb_image @ emb_text.T)", "logits = logit_scale * logit_scale * (emb_image @ emb_text.T)",
  ["tests/test_learners.py::test_infonce_loss_hand_computed_and_its_gradient_is_softmax_minus_one_hot",
   "tests/test_learners.py::test_infonce_large_tau_expansion_is_log_n_plus_the_linear_loss"]),
 ("InfoNCE temperature applied twice (learners.mmcl_infonce)", "mmcl_theory/learners.py",
  "jnp.exp(jnp.minimum(log_scale, -math.log(MIN_TEMPERATURE)))", "jnp.exp(2 * jnp.minimum(log_scale, -math.log(MIN_TEMPERATURE)))",
  ["tests/test_learners.py::test_infonce_learner_shapes_and_its_loss_at_its_temperature"]),
 ("InfoNCE MLP hidden width = embedding dim", "mmcl_theory/learners.py",
  "k_i, k_t = jax.random.split(key)\n    middle = (settings.width,) if hidden else ()",
  "k_i, k_t = jax.random.split(key)\n    middle = (settings.embed_dim,) if hidden else ()",
  ["tests/test_learners.py::test_infonce_learner_shapes_and_its_loss_at_its_temperature"]),
 ("M2's r squared in the sampler", "mmcl_theory/datamodel.py",
  "jax.random.bernoulli(k_r, cfg.r, (n, K))", "jax.random.bernoulli(k_r, cfg.r ** 2, (n, K))",
  ["tests/test_datamodel.py::test_m2_caption_richness_enters_the_sampler_once"]),
 ("wrong closed form in C4 (the independent curve for the flipped one)", "paper_checks/checks.py",
  'theory_curve = [_phi_m1(make_config("M1", r=float(r)), 0.0) for r in grid]',
  'theory_curve = [_phi_m1(make_config("M1", r=float(r)), 0.5) for r in grid]',
  ["tests/test_paper_check_values.py::test_c4_expected_curve_is_the_flipped_closed_form_on_its_grid"]),
 ("exact route drops the linear InfoNCE bias (evaluate._score_infonce)", "mmcl_theory/evaluate.py",
  "affine=(w1 @ e.T, b1 @ e.T)", "affine=(w1 @ e.T, 0 * (b1 @ e.T))",
  ["tests/test_evaluate.py::test_exact_route_scores_are_the_sampled_route_scores"]),
 ("SL rows shared across image changes (models.evaluate_grid)", "mmcl_theory/models.py",
  "image_cfg = model.caption_free(cfg)", "image_cfg = model.caption_free(configs[0])",
  ["tests/test_evaluate.py::test_sl_rows_are_not_shared_across_image_changes"]),
 ("digits theory_mmcl scored with the sampled caption-mean prompt", "mmcl_theory/digits_learners.py",
  '"caption_mean": split.theory["caption_mean_prompts"]}', '"caption_mean": split.prompts["caption_mean"]}',
  ["tests/test_digits.py::test_theory_rows_score_the_expected_statistics_with_the_expected_caption_mean_prompt"]),
 ("digits learners' kind swapped (SL scored as zero-shot)", "mmcl_theory/digits_learners.py",
  'Learner("sl_min_norm", SUPERVISED,', 'Learner("sl_min_norm", ZERO_SHOT,',
  ["tests/test_models.py::test_each_learners_rows_carry_the_prompt_sets_of_its_kind"]),
 ("digits InfoNCE temperature inverted (tau where 1/tau belongs)", "mmcl_theory/digits_learners.py",
  "jnp.asarray(1.0 / temperature))", "jnp.asarray(temperature))",
  ["tests/test_digits.py::test_digits_infonce_loss_is_the_hand_computed_loss_at_its_temperature"]),
 ("exact route's test noise sigma_xi/d where sigma_xi^2/d belongs", "mmcl_theory/evaluate.py",
  "noise = (cfg.sigma_xi**2 / cfg.d) * (w.T @ w)", "noise = (cfg.sigma_xi / cfg.d) * (w.T @ w)",
  ["tests/test_evaluate.py::test_exact_route_accuracy_at_sigma_xi_2_and_sigma_core_2_is_a_numpy_monte_carlo"]),
 ("M1 spurious-detail mask drawn with the spurious feature's own key", "mmcl_theory/datamodel.py",
  "jax.random.bernoulli(jax.random.fold_in(key, 6), cfg.spurious_detail, (n,))",
  "jax.random.bernoulli(k_spu, cfg.spurious_detail, (n,))",
  ["tests/test_datamodel.py::test_m1_caption_masks_are_independent_of_the_features_they_mask"]),
 ("exact route's M2 core variance sigma_core where sigma_core^2 belongs", "mmcl_theory/evaluate.py",
  "eye[y] * cfg.sigma_core**2", "eye[y] * cfg.sigma_core",
  ["tests/test_evaluate.py::test_exact_route_accuracy_at_sigma_xi_2_and_sigma_core_2_is_a_numpy_monte_carlo[M2]"]),
 ("DM2 class-mean prompt without the masking probability pi", "mmcl_theory/datamodel.py",
  "spu = core * (cfg.pi * cfg.alpha)", "spu = core * cfg.alpha",
  ["tests/test_datamodel.py::test_class_mean_prompts_are_the_sampled_class_means_of_the_captions[DM2]"]),
 ("M2 class-mean prompt without spurious_annotation", "mmcl_theory/datamodel.py",
  "spurious = cfg.spurious_annotation * (eye * cfg.p + (1 - eye) * q)", "spurious = eye * cfg.p + (1 - eye) * q",
  ["tests/test_datamodel.py::test_class_mean_prompts_are_the_sampled_class_means_of_the_captions[M2]"]),
 ("linear-loss floor without rho (learners.loss_floor_linear)", "mmcl_theory/learners.py",
  "return -jnp.sum(sigma[: rank or sigma.shape[0]] ** 2) / (2 * rho)",
  "return -jnp.sum(sigma[: rank or sigma.shape[0]] ** 2) / 2",
  ["tests/test_learners.py::test_linear_loss_floor_at_rho_not_one_is_the_closed_form_minimum_by_hand"]),
]


def main() -> int:
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkout"
        shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("runs", ".git", ".venv", "*.egg-info", "__pycache__"))
        for name, f, old, new, tests in MUTANTS:
            path = root / f
            src = path.read_text()
            if src.count(old) != 1:
                raise SystemExit(f"mutant {name!r}: its original text is not found once in {f}; update tests/mutants.py")
            path.write_text(src.replace(old, new))
            try:  # cwd first on sys.path: the copy's package, not the installed one
                r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                   cwd=root, capture_output=True, text=True, timeout=900)
            finally:
                path.write_text(src)
            caught = r.returncode == 1
            missed += not caught
            summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
            print(f"{'CAUGHT' if caught else f'NOT CAUGHT (pytest exit {r.returncode})'} | {name} | {summary}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
