"""figures: the shared plot style and `python -m mmcl_theory.figures --from DIR` on stored results."""

import csv
import json

import pytest

from mmcl_theory import figures
from mmcl_theory.plotting import plot_sweep


def _rows(sweep="caption_richness", param="r"):
    rows = []
    for v in (0.0, 0.5, 1.0):
        for test in ("aligned", "independent", "flipped"):
            rows.append(dict(sweep=sweep, model="M1", param=param, value=v, series="", learner="theory_mmcl",
                             test=test, seed=-1, n=200, accuracy=0.5 + 0.2 * v))
            for seed in range(2):
                for learner in ("mmcl_closed_form", "sl_min_norm", "some_new_learner"):
                    rows.append(dict(sweep=sweep, model="M1", param=param, value=v, series="", learner=learner,
                                     test=test, seed=seed, n=200, accuracy=0.4 + 0.1 * seed + 0.2 * v))
    return rows


def test_plot_sweep_writes_a_png_for_known_and_unknown_learners(tmp_path):
    path = tmp_path / "f.png"
    plot_sweep(_rows(), path, "title", "a one-line caption")
    assert path.stat().st_size > 10_000


def test_figures_from_stored_results(tmp_path):
    store = tmp_path / "store" / "caption_richness"
    store.mkdir(parents=True)
    rows = _rows()
    (store / "results.json").write_text(json.dumps({"rows": rows, "seconds": 1.0, "plan": {"seeds": [0, 1]}}))
    out = tmp_path / "figs"
    assert figures.main(["--from", str(tmp_path / "store"), "--only", "caption_richness", "--out", str(out)]) == 0
    assert (out / "caption_richness.png").stat().st_size > 10_000
    with open(out / "caption_richness.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(rows) and set(got[0]) >= {"sweep", "param", "value", "learner", "test", "seed", "accuracy"}


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
