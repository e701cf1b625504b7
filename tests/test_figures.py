"""figures: the shared plot style and `python -m mmcl_theory.figures --from DIR` on stored results."""

import csv
import json

import numpy as np
import pytest

from mmcl_theory import figures
from mmcl_theory.plotting import plot_sweep


# Synthetic rows whose every curve differs: learner offset + 0.1 x test index + 0.2 r + 0.04 x seed, so a curve
# drawn from another learner's, prompt's, test's or seed's rows shows in its numbers.
LEARNER_OFFSET = {("theory_mmcl", "core"): 0.50, ("mmcl_closed_form", "core"): 0.30,
                  ("mmcl_closed_form", "class_mean"): 0.25, ("sl_min_norm", ""): 0.05, ("some_new_learner", ""): 0.15}
TESTS = ("aligned", "independent", "flipped")


def _accuracy(learner, prompt, test, value, seed):
    return LEARNER_OFFSET[(learner, prompt)] + 0.1 * TESTS.index(test) + 0.2 * value + 0.04 * max(seed, 0)


def _rows(sweep="caption_richness", param="r"):
    rows = []
    for v in (0.0, 0.5, 1.0):
        for test in TESTS:
            for (learner, prompt) in LEARNER_OFFSET:
                for seed in ([-1] if learner == "theory_mmcl" else [0, 1]):
                    rows.append(dict(sweep=sweep, model="M1", param=param, value=v, series="", learner=learner,
                                     prompt=prompt, test=test, seed=seed, n=200,
                                     accuracy=_accuracy(learner, prompt, test, v, seed)))
    return rows


def _capture_figures(monkeypatch) -> list:
    """The matplotlib figures plot_sweep saves, kept (after they are written) for inspection."""
    from mmcl_theory import plotting

    figures_drawn, save = [], plotting.atomic_save_figure
    monkeypatch.setattr(plotting, "atomic_save_figure", lambda fig, path: (figures_drawn.append(fig), save(fig, path)))
    return figures_drawn


def _curves(ax) -> dict[str, tuple[list, list, list | None]]:
    """{legend label: (x, y, error-bar half-lengths or None)} of one panel: theory lines and error-bar curves."""
    out = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), None)
           for line in ax.get_lines() if not line.get_label().startswith("_")}
    for c in ax.containers:
        line, _, (bars,) = c.lines
        half = [(top - bottom) / 2 for (_, bottom), (_, top) in bars.get_segments()]
        out[c.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), half)
    return out


def _assert_drawn_from(fig, rows):
    """Each panel (one per test) holds one curve per (learner, prompt) whose points are the mean (and standard error)
    over seeds of exactly its rows, computed here; fixed axis range and labels."""
    from mmcl_theory.plotting import TEST_LABEL, curve_label

    axes = fig.axes
    assert len(axes) == 3
    expected_labels = {curve_label(l, p) for l, p in {(r["learner"], r["prompt"]) for r in rows}}
    for ax, test in zip(axes, TESTS):
        assert ax.get_title() == TEST_LABEL[test] and ax.get_xlabel() == "caption richness r"
        assert ax.get_ylim() == pytest.approx((-0.03, 1.03)) and ax.get_xscale() == "linear"
        curves = _curves(ax)
        assert set(curves) == expected_labels
        for learner, prompt in {(r["learner"], r["prompt"]) for r in rows}:
            x, y, half = curves[curve_label(learner, prompt)]
            values = sorted({float(r["value"]) for r in rows})
            acc = [np.array([float(r["accuracy"]) for r in rows if (r["learner"], r["prompt"], r["test"]) ==
                             (learner, prompt, test) and float(r["value"]) == v]) for v in values]
            assert x == pytest.approx(values)
            assert y == pytest.approx([a.mean() for a in acc], abs=1e-6)
            if learner == "theory_mmcl":
                assert half is None  # a line, no error bars
            else:
                assert half == pytest.approx([a.std(ddof=1) / np.sqrt(len(a)) for a in acc], abs=1e-6)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == curve_label("theory_mmcl", "core") and set(legend) == expected_labels


def test_plot_sweep_draws_each_curve_from_its_rows(tmp_path, monkeypatch):
    drawn = _capture_figures(monkeypatch)
    path = tmp_path / "f.png"
    rows = _rows()
    plot_sweep(rows, path, "title", "a one-line caption")
    assert path.stat().st_size > 10_000
    fig, = drawn
    _assert_drawn_from(fig, rows)
    # seed 1 is 0.04 above seed 0 everywhere: mean +0.02, s.e. 0.02 (checked once more by hand)
    x, y, half = _curves(fig.axes[2])["MMCL closed form, core prompt"]
    assert y == pytest.approx([0.30 + 0.2 + 0.0 + 0.02, 0.30 + 0.2 + 0.1 + 0.02, 0.30 + 0.2 + 0.2 + 0.02])
    assert half == pytest.approx([0.02] * 3)
    assert fig._suptitle.get_text() == "title" and "a one-line caption" in [t.get_text() for t in fig.texts]


def test_figures_from_stored_results(tmp_path, monkeypatch):
    """`figures --from`: the CSV beside the PNG holds the stored rows (accuracy to 6 significant digits), and the
    figure is drawn from exactly those rows, read back here."""
    drawn = _capture_figures(monkeypatch)
    store = tmp_path / "store" / "caption_richness"
    store.mkdir(parents=True)
    rows = _rows()
    (store / "results.json").write_text(json.dumps({"rows": rows, "seconds": 1.0, "plan": {"seeds": [0, 1]}}))
    out = tmp_path / "figs"
    assert figures.main(["--from", str(tmp_path / "store"), "--only", "caption_richness", "--out", str(out)]) == 0
    assert (out / "caption_richness.png").stat().st_size > 10_000
    with open(out / "caption_richness.csv", newline="") as f:
        got = list(csv.DictReader(f))
    key = lambda r: (float(r["value"]), r["learner"], r["prompt"], r["test"], int(r["seed"]))
    assert sorted(map(key, got)) == sorted(map(key, rows))
    for r in got:
        assert float(r["accuracy"]) == pytest.approx(_accuracy(r["learner"], r["prompt"], r["test"], float(r["value"]),
                                                               int(r["seed"])), rel=1e-6)
        assert r["sweep"] == "caption_richness" and r["param"] == "r" and r["model"] == "M1"
    fig, = drawn
    _assert_drawn_from(fig, got)


def test_missing_stored_results_is_reported(tmp_path, capsys):
    assert figures.main(["--from", str(tmp_path), "--only", "core_variance", "--out", str(tmp_path / "o")]) == 1
    assert "no core_variance/results.json" in capsys.readouterr().err


def test_unknown_figure_is_an_error(tmp_path, capsys):
    assert figures.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err


def test_every_named_sweep_has_a_figure():
    from mmcl_theory.sweep import available_sweeps

    assert set(available_sweeps()) <= set(figures.SWEEP_FIGURES)
    assert set(figures.available()) == set(available_sweeps()) & set(figures.SWEEP_FIGURES)


def test_real_data_figure_skips_with_a_note_when_no_series(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "find_real_data_series", lambda: None)
    png, note = figures.draw_real_data(tmp_path)
    assert png is None and note.startswith("skipped")


def test_noisy_means_are_marked_in_the_table():
    """A mean whose s.e. over seeds exceeds results.NOISY_SE is marked '!' with a footnote; a steady one is not."""
    from mmcl_theory.results import NOISY_SE, format_table

    def rows(accs, learner):
        return [{"param": "r", "series": "", "value": 1.0, "learner": learner, "prompt": "", "test": t, "seed": s,
                 "accuracy": a} for s, a in enumerate(accs) for t in ("aligned", "independent", "flipped")]

    noisy = [0.1, 0.9, 0.2, 0.8]  # s.e. 0.19
    steady = [0.50, 0.51, 0.49, 0.50]  # s.e. 0.004
    table = format_table(rows(noisy, "noisy") + rows(steady, "steady"))
    line = next(l for l in table.splitlines() if l.strip().startswith("r "))
    noisy_cell, steady_cell = line.split()[2:4], line.split()[4:6]  # param, value, then the two cells
    assert noisy_cell[1].endswith("!") and not steady_cell[1].endswith("!"), line
    assert f"! standard error above {NOISY_SE}" in table
    assert "!" not in format_table(rows(steady, "steady"))
