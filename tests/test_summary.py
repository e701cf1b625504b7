"""The summary a sweep ends with (results.format_summary, printed by `python -m mmcl_theory.sweep NAME`): at most
100 columns, the theory and every learner at the first and last value, where a zero-shot learner is more than
3 s.e. from the theory of its prompt, and pointers to the full table (OUT/table.txt) and the figure."""

from __future__ import annotations

from mmcl_theory.results import APART_SE, NOISY_SE, SUMMARY_WIDTH, format_summary, format_table
from mmcl_theory.sweep import main


def _rows(curves: dict, param: str = "r", series: str = "", test: str = "flipped") -> list[dict]:
    """Contract rows from {(learner, prompt, route): {value: [accuracy per seed]}} (a theory row's seed is -1 when
    it has one value, as in M1)."""
    rows = []
    for (learner, prompt, route), by_value in curves.items():
        for value, accs in by_value.items():
            for i, acc in enumerate(accs):
                seed = -1 if route == "theory" and len(accs) == 1 else i
                rows.append({"sweep": "toy", "model": "M1", "param": param, "value": value, "series": series,
                             "learner": learner, "prompt": prompt, "test": test, "seed": seed, "n": 200,
                             "accuracy": acc, "route": route, "final_loss": "", "loss_floor": "", "converged": ""})
    return rows


def _pair(mean: float, se: float) -> list[float]:
    """Two seeds whose mean is `mean` and whose standard error (ddof 1) is `se`."""
    return [mean - se, mean + se]


THEORY = ("theory_mmcl", "core", "theory")
LEARNER = ("mmcl_closed_form", "core", "exact")


def test_quick_sweep_ends_with_a_summary_under_100_columns(tmp_path, capsys):
    """The real quick sweep of the main job: the printed summary fits 100 columns, names the full table (written to
    OUT/table.txt, the three tables of format_table) and the figure, and gives theory, closed form and SL at r = 0
    and r = 1."""
    out = tmp_path / "cr"
    assert main(["caption_richness", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    too_wide = [line for line in lines if len(line) > SUMMARY_WIDTH]
    assert not too_wide, too_wide
    assert len(lines) <= 40
    table = out / "table.txt"
    pointers = printed[printed.index("Full table (every test, learner and value):"):].split()
    assert str(table) in pointers and "Figure:" in pointers and str(out / "caption_richness.png") in pointers
    assert lines[0].startswith("== sweep caption_richness (M1): flipped test, mean +- s.e. over 2 seeds")
    header = lines[1].split()
    assert header == ["r", "=", "0", "r", "=", "1"]
    for curve in ("theory_mmcl[core]", "mmcl_closed_form[core]", "sl_min_norm", "mmcl_infonce_linear[core]"):
        assert any(line.startswith(curve + " ") for line in lines), curve
    assert "Against the theory of the same prompt, flipped test" in printed
    full = table.read_text()
    import csv

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert format_table(rows) in full
    assert all(f"== {t} test" in full for t in ("aligned", "independent", "flipped"))
    assert max(len(line) for line in full.splitlines()) > SUMMARY_WIDTH  # the wide table went to the file


def test_a_learner_more_than_3_se_from_its_theory_is_reported_apart():
    theory = {0.0: [0.50], 0.5: [0.60], 1.0: [0.70]}
    rows = _rows({THEORY: theory, LEARNER: {0.0: _pair(0.50 + 3.2 * 0.01, 0.01), 0.5: _pair(0.60, 0.01),
                                            1.0: _pair(0.70 - 3.2 * 0.01, 0.01)}})
    text = format_summary(rows, table="OUT/table.txt", figure="OUT/toy.png")
    assert "mmcl_closed_form[core] apart from theory_mmcl[core] at r = 0, 1 (2 of 3)" in text
    assert "within 3 s.e. at every value" not in text
    learner_line = next(line for line in text.splitlines() if line.startswith("mmcl_closed_form[core]"))
    assert learner_line.split() == ["mmcl_closed_form[core]", "0.532", "+-0.010", "*", "0.668", "+-0.010", "*"]
    assert "Full table (every test, learner and value): OUT/table.txt" in text and "Figure: OUT/toy.png" in text


def test_a_learner_within_3_se_agrees_and_the_threshold_is_3_se():
    for factor, apart in ((2.9, False), (3.1, True)):
        rows = _rows({THEORY: {0.0: [0.5], 1.0: [0.7]},
                      LEARNER: {0.0: _pair(0.5 + factor * 0.01, 0.01), 1.0: _pair(0.7, 0.01)}})
        text = format_summary(rows)
        assert ("mmcl_closed_form[core] apart from theory_mmcl[core] at r = 0 (1 of 2)" in text) == apart, factor
        assert ("within 3 s.e. at every value: mmcl_closed_form[core]" in text) == (not apart), factor
        assert ("*" in next(line for line in text.splitlines() if line.startswith("mmcl_closed_form"))) == apart
    assert APART_SE == 3.0


def test_the_theory_s_own_standard_error_counts():
    """Theory rows per seed (as digits' exact expectation): the difference's s.e. is sqrt(se^2 + se_theory^2), so
    0.04 with s.e. 0.01 on both sides (3 s.e. = 0.042) agrees; the learner's s.e. alone (3 s.e. = 0.03) would not."""
    rows = _rows({("theory_mmcl", "word", "theory"): {0.0: _pair(0.30, 0.01), 1.0: _pair(0.40, 0.01)},
                  ("mmcl_closed_form", "word", "exact"): {0.0: _pair(0.34, 0.01), 1.0: _pair(0.40, 0.01)}})
    assert "within 3 s.e. at every value: mmcl_closed_form[word]" in format_summary(rows)


def test_supervised_learners_are_listed_not_compared_and_noisy_means_are_marked():
    rows = _rows({THEORY: {0.0: [0.5], 1.0: [0.7]}, ("bayes_core", "", "theory"): {0.0: [0.84], 1.0: [0.84]},
                  LEARNER: {0.0: _pair(0.5, 0.01), 1.0: _pair(0.7, 0.01)},
                  ("sl_min_norm", "", "exact"): {0.0: _pair(0.03, 0.01), 1.0: _pair(0.03, 0.01)},
                  ("mmcl_infonce_mlp", "core", "hidden_mc"): {0.0: _pair(0.6, 0.08), 1.0: _pair(0.7, 0.01)}})
    text = format_summary(rows)
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("sl_min_norm")).split() == [
        "sl_min_norm", "0.030", "+-0.010", "0.030", "+-0.010"]  # far below bayes_core, not marked: no SL theory
    assert "sl_min_norm apart" not in text and "bayes_core" in text
    mlp = next(line for line in lines if line.startswith("mmcl_infonce_mlp[core]"))
    assert "0.600 +-0.080!" in mlp and 0.08 > NOISY_SE
    assert any(line.startswith(f"! s.e. above {NOISY_SE}") for line in lines)
    assert "within 3 s.e. at every value: mmcl_closed_form[core], mmcl_infonce_mlp[core]" in text


def test_without_theory_rows_the_summary_gives_the_learners_only():
    """paper_mnist has no theory rows: the learners per series at the first and last value, and a line saying so."""
    rows = (_rows({("mmcl_lenet", "class_centre", "sampled"): {0.0: _pair(0.6, 0.01), 1.0: _pair(0.75, 0.01)}},
                  param="pi_core", series="variant=pi_spu_1")
            + _rows({("sl_lenet", "", "sampled"): {1.0: _pair(0.62, 0.01)}}, param="pi_core", series="variant=sl"))
    text = format_summary(rows, table="runs/paper_mnist/table.txt")
    lines = text.splitlines()
    assert "No theory rows in this sweep: the learners only." in lines
    assert "pi_core, variant=pi_spu_1:" in lines and "pi_core, variant=sl:" in lines
    assert next(line for line in lines if line.startswith("mmcl_lenet")).split() == [
        "mmcl_lenet[class_centre]", "0.600", "+-0.010", "0.750", "+-0.010"]
    assert next(line for line in lines if line.startswith("sl_lenet")).split() == ["sl_lenet", "0.620", "+-0.010"]
    assert "Against the theory" not in text and "*" not in text


def test_one_seed_is_not_judged_and_long_names_still_fit():
    series = "variant=" + "a_rather_long_variant_name_" * 3
    rows = _rows({THEORY: {0.001: [0.5], 1000.0: [0.7]}, LEARNER: {0.001: [0.9], 1000.0: [0.9]},
                  ("mmcl_infonce_linear", "class_mean", "exact"): {0.001: [0.1]}},
                 param="spurious_annotation", series=series, test="aligned")
    table = "runs/" + "x" * 60 + "/table.txt"
    text = format_summary(rows, table=table, figure="runs/toy.png")
    assert text.splitlines()[-3:] == ["Full table (every test, learner and value):", f"  {table}",
                                      "Figure: runs/toy.png"]  # a long path on its own line, whole
    assert "mmcl_closed_form[core]: not judged (one seed, no s.e.)" in text
    assert "aligned test" in text.splitlines()[0]  # no flipped rows: the first test the rows have
    assert all(len(line) <= SUMMARY_WIDTH for line in text.splitlines()), text
    assert "no theory rows for" in text  # the class-mean curve has no theory of its prompt


def test_departures_are_written_as_runs_of_values():
    values = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    rows = _rows({THEORY: {v: [0.5] for v in values},
                  LEARNER: {v: _pair(0.5 + (0.1 if v in (0.0, 0.1, 0.2, 0.4) else 0.0), 0.01) for v in values}})
    assert "apart from theory_mmcl[core] at r = 0..0.2, 0.4 (4 of 6)" in format_summary(rows)


def test_theory_with_only_supervised_learners_compares_nothing_and_says_so():
    rows = _rows({("bayes_core", "", "theory"): {0.0: [0.84], 1.0: [0.84]},
                  ("sl_mlp", "", "exact"): {0.0: _pair(0.3, 0.01), 1.0: _pair(0.3, 0.01)}},
                 param="a_parameter_with_a_long_name")
    lines = format_summary(rows).splitlines()
    assert "No zero-shot learner with a theory curve of its prompt: nothing compared." in lines
    assert lines[1] == "a_parameter_with_a_long_name:" and lines[2].split() == ["0", "1"]  # short heads, named above
