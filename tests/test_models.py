"""The model registry and its one grid: every model's learners are Learner records, the grid checks names and
routes against the model, a learner added as a record runs without touching the runner, and no runner branches
on a learner's name."""

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory import evaluate as E
from mmcl_theory.datamodel import TESTS, make_config
from mmcl_theory.grid import run_point
from mmcl_theory.learners import KINDS, SUPERVISED, ZERO_SHOT, Learner, LearnerSettings
from mmcl_theory.models import MODEL_NAMES, evaluate_grid, get_model, model_of
from mmcl_theory.results import ROW_KEYS

ROOT = Path(__file__).resolve().parents[1]
FAST = LearnerSettings(steps=20, gd_steps=20, sl_gd_steps=20, width=8, embed_dim=4)


def test_every_model_registers_learner_records_with_unique_names():
    assert MODEL_NAMES == ("M1", "M2", "DM2", "digits", "paper_mnist")
    for name in MODEL_NAMES:
        model = get_model(name)
        assert model.learners and all(isinstance(l, Learner) and l.kind in KINDS for l in model.learners), name
        assert len(set(model.learner_names)) == len(model.learners), name
        if name != "paper_mnist":  # its default config names MNIST files that CI may lack
            assert model_of(model.config_cls()) is model
    assert "theory_infonce" in get_model("M1").learner_names and "theory_infonce" not in get_model("M2").learner_names


def test_learner_record_refuses_a_bad_kind_and_a_fit_beside_a_population():
    with pytest.raises(ValueError, match="kind 'contrastive' is not one of zero_shot, supervised"):
        Learner("x", "contrastive", fit=lambda *a: None)
    with pytest.raises(ValueError, match="either fit and score, or population"):
        Learner("x", ZERO_SHOT, fit=lambda *a: None, score=lambda *a: None, population=lambda *a: 0.5, theory=True)
    with pytest.raises(ValueError, match="either fit and score"):
        Learner("x", ZERO_SHOT)
    with pytest.raises(ValueError, match="either fit and score"):
        Learner("x", ZERO_SHOT, fit=lambda *a: None)
    with pytest.raises(ValueError, match="population prediction is theory"):
        Learner("x", ZERO_SHOT, population=lambda *a: 0.5)


def test_grid_checks_learners_routes_and_configs_against_the_model():
    cfg = make_config("M1", n=40, d=80)
    with pytest.raises(ValueError, match="unknown learner.s. mmcl_lenet for model M1: allowed theory_mmcl, "):
        evaluate_grid([cfg], [0], ("mmcl_lenet",), FAST)
    with pytest.raises(ValueError, match="unknown learner.s. theory_infonce for model M2"):
        evaluate_grid([make_config("M2", n=40, d=80)], [0], ("theory_infonce",), FAST)
    with pytest.raises(ValueError, match="route 'exact' is not available for model digits: allowed sampled"):
        evaluate_grid([get_model("digits").config_cls()], [0], ("sl_min_norm",), route="exact")
    with pytest.raises(ValueError, match="configs of one grid must all be M1Config: got M2Config"):
        evaluate_grid([cfg, make_config("M2", n=40, d=80)], [0], ("mmcl_closed_form",), FAST)
    with pytest.raises(ValueError, match="not the config of a registered model"):
        evaluate_grid([object()], [0], ("mmcl_closed_form",))
    with pytest.raises(ValueError, match="learner.s. sl_min_norm listed more than once"):
        evaluate_grid([cfg], [0], ("sl_min_norm", "theory_mmcl", "sl_min_norm"), FAST)
    with pytest.raises(ValueError, match="learners must be a sequence of names, not the string 'sl_min_norm'"):
        evaluate_grid([cfg], [0], "sl_min_norm", FAST)
    digits_settings = get_model("digits").settings_cls()
    with pytest.raises(ValueError, match="settings for model M1 must be LearnerSettings: got DigitsLearnerSettings"):
        evaluate_grid([cfg], [0], ("sl_min_norm",), digits_settings)


def test_trained_learners_draw_from_keys_derived_from_their_names():
    """learner_key(key, name) = fold_in(key, crc32(name) mod 2^31) (docs/learners.md#plug-in): every trained
    learner of every model that uses it gets a distinct key, and the key depends only on the point key and the
    name, so it is the same whichever other learners run beside it."""
    import zlib

    from mmcl_theory.digits_learners import LEARNERS as DIGITS_LEARNERS
    from mmcl_theory.learners import learner_key

    key = jax.random.key(7)
    names = sorted({l.name for l in (*E.LEARNERS, *DIGITS_LEARNERS) if l.trained})
    draws = {name: tuple(np.asarray(jax.random.key_data(learner_key(key, name)))) for name in names}
    assert len(set(draws.values())) == len(names) == 6  # digits reuses five of the synthetic names
    expected = jax.random.fold_in(key, zlib.crc32(b"sl_mlp") % 2**31)
    assert draws["sl_mlp"] == tuple(np.asarray(jax.random.key_data(expected)))


def test_a_learners_rows_do_not_depend_on_the_learners_beside_it():
    """The runner hands each trained learner learner_key(point key, name): mmcl_infonce_linear's rows are the same
    bytes alone and beside sl_logistic (whose draw it would share or shift under slot tables)."""
    cfg = make_config("M1", n=40, d=80, n_test=200)
    settings = LearnerSettings(steps=20)
    alone = run_point(get_model("M1"), cfg, [0, 1], E.LEARNERS[4:5], settings, "exact")
    beside = run_point(get_model("M1"), cfg, [0, 1], (E.LEARNERS[7], E.LEARNERS[4]), settings, "exact")
    assert E.LEARNERS[4].name == "mmcl_infonce_linear" and E.LEARNERS[7].name == "sl_logistic"
    assert alone == [r for r in beside if r["learner"] == "mmcl_infonce_linear"]


def test_a_learner_added_as_a_record_runs_through_the_grid():
    """A plug-in learner whose scores are all zero: every score ties, argmax takes class 0 (y = -1), which is
    half of every M1 test distribution, so the exact route gives exactly 0.5 on all three tests and the sampled one
    the share of class 0 among n_test points (0.5 within 4 s.e.); the rows have the contract's keys and the
    learner's kind decides its prompt sets."""
    def fit(key, train, settings):
        return jnp.zeros((train.x_image.shape[1], train.num_classes)), {}

    score = lambda w, x, prompts: jnp.stack([x @ w] * (prompts.shape[0] if kind == ZERO_SHOT else 1))
    exact = lambda w, prompts: [(w, jnp.zeros(w.shape[1]))] * (prompts.shape[0] if kind == ZERO_SHOT else 1)
    cfg = make_config("M1", n=40, d=80, n_test=200)
    for kind, name in ((SUPERVISED, "sl_constant"), (ZERO_SHOT, "mmcl_constant")):
        constant = Learner(name, kind, fit, score, linear=True, exact=exact)
        for route in ("exact", "sampled"):
            rows = run_point(get_model("M1"), cfg, [0, 1], (constant,), FAST, route)
            prompts = E.PROMPTS if kind == ZERO_SHOT else ("",)
            assert len(rows) == 2 * len(prompts) * len(TESTS) and all(set(r) == set(ROW_KEYS) for r in rows)
            assert {(r["prompt"], r["route"]) for r in rows} == {(p, route) for p in prompts}
            accuracy = np.array([r["accuracy"] for r in rows])
            if route == "exact":
                assert set(accuracy) == {0.5}
            else:
                assert np.all(np.abs(accuracy - 0.5) <= 4 * np.sqrt(0.25 / cfg.n_test)), accuracy


def _fit_class_means(key, train, settings):
    """A nearest-class-mean classifier (not in the package): score_k(x) = <x, m_k> - |m_k|^2 / 2, m_k the mean
    training image of class k; W (d, K), b (K,)."""
    onehot = jax.nn.one_hot(train.label, train.num_classes)
    means = (onehot.T @ train.x_image) / onehot.sum(0)[:, None]  # (K, d)
    return (means.T, -0.5 * jnp.sum(means**2, axis=1)), {}


def _score_affine(params, x, prompts):
    w, b = params
    return (x @ w + b)[None]


def test_a_new_learner_is_one_record_through_the_grid_and_the_sweep(tmp_path, monkeypatch):
    """Adding a learner is one record in its model's table: with a nearest-class-mean classifier added to M1's
    table (here by patching the registry, in a package by one line in evaluate.LEARNERS), the grid runs it on both
    routes, whose accuracies agree within the sampled test's error (two methods: the Gaussian closed form and
    20,000 sampled test points), the other learners' rows are the same to the bit with it beside them (keys by
    name), and a sweep definition naming it runs it into results.csv, with no other file edited."""
    import dataclasses
    import csv

    from mmcl_theory import models
    from mmcl_theory.sweep import main as sweep_main

    means = Learner("sl_class_means", SUPERVISED, _fit_class_means, _score_affine, linear=True,
                    exact=lambda params, prompts: [params])
    plain = models._synthetic("M1")
    monkeypatch.setitem(models._BUILDERS, "M1", lambda: dataclasses.replace(plain, learners=plain.learners + (means,)))
    models.get_model.cache_clear()
    try:
        cfg = make_config("M1", n=200, d=400, n_test=20000)
        exact = evaluate_grid([cfg], [0, 1, 2], ("sl_class_means", "sl_min_norm"), FAST, "exact")[0]
        sampled = evaluate_grid([cfg], [0, 1, 2], ("sl_class_means",), FAST, "sampled")[0]
        acc = lambda rows, test: np.array([r["accuracy"] for r in rows
                                           if r["learner"] == "sl_class_means" and r["test"] == test])
        for test in TESTS:
            a, b = acc(exact, test), acc(sampled, test)
            assert len(a) == len(b) == 3 and np.all((a > 0.3) & (a < 1.0)), (test, a)
            assert np.all(np.abs(a - b) <= 4 * np.sqrt(a * (1 - a) / cfg.n_test) + 1e-6), (test, a, b)
        alone = evaluate_grid([cfg], [0, 1, 2], ("sl_min_norm",), FAST, "exact")[0]
        assert [r for r in exact if r["learner"] == "sl_min_norm"] == alone
        definition = tmp_path / "class_means.toml"
        definition.write_text('name = "class_means"\nmodel = "M1"\ndescription = "a plug-in learner"\nparam = "r"\n'
                              'values = [0.0, 1.0]\nseeds = 2\nlearners = ["theory_mmcl", "sl_class_means"]\n\n'
                              '[base]\nn = 100\nd = 200\nn_test = 500\n')
        assert sweep_main([str(definition), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
        with open(tmp_path / "out" / "results.csv", newline="") as f:
            learners = {row["learner"] for row in csv.DictReader(f) if not row["sweep"].startswith("#")}
        assert learners == {"theory_mmcl", "sl_class_means"}, learners
    finally:
        models.get_model.cache_clear()


def _name_comparisons(path: Path, names: set[str]) -> list[str]:
    """`x == "name"`, `x != "name"` or `x in ("name", ...)` in a file, where x is a variable or attribute (not a
    row's field, r["learner"]) and "name" a registered learner name: a runner branching on a learner."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare) or isinstance(node.left, ast.Subscript):
            continue
        operands = [node.left, *node.comparators]
        consts = {c.value for o in operands for c in ([o] if isinstance(o, ast.Constant) else
                                                        getattr(o, "elts", [])) if isinstance(c, ast.Constant)}
        if consts & names:
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_runner_branches_on_a_learner_name(tmp_path):
    names = {l.name for m in MODEL_NAMES for l in get_model(m).learners}
    planted = tmp_path / "planted.py"
    planted.write_text('def f(learner, r):\n    return learner == "sl_mlp" or learner.name in ("mmcl_lenet",) or '
                       'r["learner"] == "sl_mlp"\n')
    assert len(_name_comparisons(planted, names)) == 2  # the scan finds planted branches, not a row filter
    runners = [ROOT / "mmcl_theory" / f for f in ("grid.py", "evaluate.py", "digits_learners.py", "paper_mnist.py",
                                                  "models.py", "learners.py")]
    runners += sorted((ROOT / "mmcl_theory" / "sweep").glob("*.py"))
    found = [hit for path in runners for hit in _name_comparisons(path, names)]
    assert not found, f"branches on learner names: {found}"


@pytest.mark.parametrize("model_name, config, settings", [
    ("M1", dict(n=40, d=80, n_test=200), FAST),
    ("digits", dict(n_train=200, n_test=50), dict(steps=5, batch_size=32, width=8, embed_dim=4)),
])
def test_each_learners_rows_carry_the_prompt_sets_of_its_kind(model_name, config, settings):
    """A zero-shot learner is scored with every prompt set of its model, a supervised one with its own head
    (prompt ''): the record's kind and the rows its fit and scorers produce agree, for every learner."""
    model = get_model(model_name)
    settings = settings if isinstance(settings, LearnerSettings) else model.settings_cls(**settings)
    cfg = make_config(model_name, **config) if model_name == "M1" else model.config_cls(**config)
    rows = evaluate_grid([cfg], [0], model.learner_names, settings)[0]
    for learner in model.learners:
        prompts = {r["prompt"] for r in rows if r["learner"] == learner.name}
        if not prompts:  # an undefined population prediction gives no rows
            assert learner.population is not None, learner.name
            continue
        assert prompts == (set(model.prompts) if learner.kind == ZERO_SHOT else {""}), (learner.name, prompts)


def test_theory_infonce_reports_a_bad_setting_rather_than_dropping_its_rows():
    """theory_infonce leaves no row only where the optimum collapses (its prediction is undefined); any other
    error, such as a batch larger than the optimum's latent sample, reaches the caller."""
    with pytest.raises(ValueError, match="batch = 30000 is out of range: allowed 2 <= batch <= samples = 20000"):
        evaluate_grid([make_config("M1", n=30000, d=100)], [0], ("theory_infonce",))
    collapsed = LearnerSettings(temperature=1000.0)  # collapsed at n 200, d 10, sigma_xi 1 (e = 0.1), sample seed 0
    assert evaluate_grid([make_config("M1", n=200, d=10)], [0], ("theory_infonce",), collapsed) == [[]]


def test_a_temperature_sweep_compiles_one_program():
    """LearnerSettings.temperature is a traced leaf (grid.py): the grid's program for M1's InfoNCE learner is
    compiled once for three temperatures (a static temperature compiled it per value), and the rows still move with
    the temperature (the value reaches the loss)."""
    from mmcl_theory import grid

    cfg = make_config("M1", n=40, d=80, n_test=200)
    program = grid._mapped(get_model("M1"), get_model("M1").records(["mmcl_infonce_linear"]), "exact")
    before = program._cache_size()
    losses = set()
    for tau in (0.1, 0.5, 2.0):
        rows = evaluate_grid([cfg], [0], ["mmcl_infonce_linear"], LearnerSettings(steps=20, temperature=tau))[0]
        losses.add(rows[0]["final_loss"])
    assert program._cache_size() - before <= 1 and len(losses) == 3
