"""The real-image experiment aimed at the two mechanisms: train every arm over seeds, evaluate every kept
checkpoint, gather one CSV, compute effective robustness against each arm's baseline and draw the figure.

    python real_data/mechanisms_experiment.py --data-root ../shared/data --runs runs/mech \\
        --setting cpu --seeds 0 1 2 [--arms coarse coarse_fine ...] [--set train.steps=...]
    python real_data/mechanisms_experiment.py --data-root ../shared/data --runs runs/mech --analyse-only

Arms (real_data/mechanisms_analysis.py, ARMS): coarse / coarse_fine (intra-class contrasting), mosaic_main /
mosaic_all (feature sharing with 2-4 object mosaics), sl_coarse / sl_mosaic (the supervised baseline on
the same images and backbone), label / rich (the nuisance control, detail type (c)). The training sets
are written once by ``mmcl_theory.clip.data.mosaics.write_mechanism_sets`` under RUNS/<setting>/sets as
CSV sets for the trainer's 'csv' loader; label / rich use the Tiny ImageNet loader (their TOMLs).

Every run goes through the trainer's CLI (``python -m mmcl_theory.clip.train --config ... --workdir
RUNS/<setting>/<arm>_s<seed> --set ...``) with periodic zero-shot evaluation of each kept checkpoint; a
run whose last evaluation exists is skipped, an interrupted one resumes from its checkpoint. After every
run the CSV (``evaluate build``), the figure and the report are rewritten, so a cut-off job leaves its
results: OUT/mechanisms_results.csv, OUT/er_report.json, OUT/runs.json (status and wall time of each
run), figures/real_data_mechanisms.png and .csv.

Settings (``SETTINGS``): 'tiny' (pipeline check, a minute per run), 'cpu' (ViT-test at 32 px, 50 train
images per class, 1,000 steps of 128, 4 checkpoints), 'gpu' (RN-Tiny-64 at 64 px, all 150 images per class, 4,000 steps
of 256, the full val set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SETTINGS: dict[str, dict] = {
    "tiny": {"model": "ViT-test", "per_class": 3, "val_per_class": 2, "steps": 40, "batch_size": 64,
             "warmup_steps": 4, "every": 20, "lr": 1e-3},
    "cpu": {"model": "ViT-test", "per_class": 50, "val_per_class": 20, "steps": 1000, "batch_size": 128,
            "warmup_steps": 100, "every": 250, "lr": 1e-3},
    "gpu": {"model": "RN-Tiny-64", "per_class": None, "val_per_class": None, "steps": 4000, "batch_size": 256,
            "warmup_steps": 200, "every": 500, "lr": 1e-3},
}
EXISTING_NUISANCE = HERE / "results" / "tiny_imagenet" / "tiny_imagenet_results.csv"
DEFAULT_ARMS = ("coarse", "coarse_fine", "mosaic_main", "mosaic_all", "label", "rich", "sl_coarse", "sl_mosaic")


def _toml(value) -> str:
    """A Python value as a TOML literal for --set."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def run_overrides(arm: str, seed: int, setting: dict, data_root: Path, sets: dict, cache: Path,
                  mosaic_names: str) -> tuple[Path, list[str]]:
    """(TOML config, --set overrides) of one run."""
    from mechanisms_analysis import ARMS, eval_datasets, id_dataset

    spec = ARMS[arm]
    names = mosaic_names if spec["names"] == "mosaic" else spec["names"]
    tiny, tvs = data_root / "tiny_imagenet", data_root / "texture_vs_shape"
    datasets = eval_datasets(names)
    val = {} if setting["val_per_class"] is None else {id_dataset(names): {"per_class": setting["val_per_class"]}}
    sets_over = {
        "model.name": setting["model"], "train.seed": seed, "train.steps": setting["steps"],
        "train.batch_size": setting["batch_size"], "train.warmup_steps": setting["warmup_steps"],
        "train.lr": setting["lr"], "train.checkpoint_every": setting["every"], "train.keep_every": setting["every"],
        "eval.every": setting["every"], "eval.datasets": datasets, "eval.root": str(tiny), "eval.options": val,
        "eval.roots": {d: str(tvs) for d in datasets if d.startswith("texture_vs_shape")},
        "eval.class_space": "tiny_imagenet",
    }
    if arm in ("label", "rich"):
        config = HERE / f"tiny_imagenet_{arm}.toml"
        per = {} if setting["per_class"] is None else {"per_class": setting["per_class"]}
        sets_over.update({"data.root": str(tiny), "data.options": per, "data.cache_dir": str(cache / "tiny_imagenet")})
    else:
        config = HERE / ("mechanisms_sl.toml" if spec.get("supervised") else "mechanisms_clip.toml")
        images = "mosaics" if spec["train_set"].startswith("mosaic") else "tiny_train"
        sets_over.update({"data.root": str(sets[spec["train_set"]]), "data.cache_dir": str(cache / images)})
    return config, [f"{k}={_toml(v)}" for k, v in sets_over.items()]


def portable(text: str, data_root: Path | None = None, runs: Path | None = None) -> str:
    """Text for a committed result: the data and runs folders of this machine shown as $DATA and $RUNS."""
    for path, name in ((data_root, "$DATA"), (runs, "$RUNS")):
        if path is not None:
            text = text.replace(str(path), name)
    return text


def run_is_done(work: Path, steps: int, n_datasets: int) -> bool:
    return len(list((work / "eval" / f"step_{steps:08d}").glob("*.json"))) >= n_datasets


def train_run(config: Path, overrides: list[str], work: Path, nice: bool) -> tuple[int, str, float]:
    """Run the trainer's CLI; (exit code, last stderr line, seconds). Output goes to WORK/train.log."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = ([] if not nice else ["nice", "-n", "10"]) + [sys.executable, "-m", "mmcl_theory.clip.train", "--config",
                                                        str(config), "--workdir", str(work), "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.time()
    with open(work / "train.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    lines = [ln for ln in (work / "train.log").read_text().splitlines() if ln.strip()]
    return rc, (lines[-1] if lines else ""), time.time() - t0


def gather(workdirs: list[Path], out: Path, figures: Path, header: dict) -> dict:
    """CSV of every evaluation, points, ER report and figure; returns the report."""
    import mechanisms_analysis as mechanisms
    from mmcl_theory.io import atomic_write_csv, atomic_write_json

    csv_path = out / "mechanisms_results.csv"
    subprocess.run([sys.executable, "-m", "mmcl_theory.clip.evaluate", "build", "--workdir", *map(str, workdirs),
                    "--out", str(csv_path)], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    points = mechanisms.read_points(csv_path)
    atomic_write_csv(figures / "real_data_mechanisms.csv", mechanisms.point_rows(points), mechanisms.POINT_FIELDS)
    report = {"header": header, "mechanisms": mechanisms.report(points)}
    report["c6"] = mechanisms.c6_assessment(report["mechanisms"])
    if EXISTING_NUISANCE.is_file():  # the committed H100 label-vs-rich run (1 seed, 64 px), detail type (c)
        existing = mechanisms.report(mechanisms.read_points(EXISTING_NUISANCE))["nuisance_c"]
        report["nuisance_c_existing_run"] = {"source": str(EXISTING_NUISANCE.relative_to(REPO)), **existing}
    atomic_write_json(out / "er_report.json", report)
    if points:
        mechanisms.draw_figure(points, figures / "real_data_mechanisms.png")
    return report


def summary_lines(report: dict) -> list[str]:
    lines = []
    mechs = dict(report["mechanisms"])
    if "nuisance_c_existing_run" in report:
        mechs["nuisance_c (H100 run)"] = report["nuisance_c_existing_run"]
    for mech, m in mechs.items():
        for arm, r in m["arms"].items():
            ci = r["t_ci95"] or [float("nan")] * 2
            b = r["bootstrap_ci95"] or [float("nan")] * 2
            lines.append(f"{mech:15s} {arm:12s} vs {m['baseline']:12s}: ER {r['er']:+.2f} pts "
                         f"(t95 [{ci[0]:+.2f}, {ci[1]:+.2f}], boot95 [{b[0]:+.2f}, {b[1]:+.2f}]; "
                         f"{r['seeds']} seeds, {r['checkpoints']} ckpts; predicted sign {r['predicted_sign']:+d})")
    c6 = report["c6"]
    return lines + [f"C6 for this design: {c6['verdict']} (missing: {', '.join(c6['missing']) or 'none'})"]


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    from mmcl_theory.config import ArgumentParser, option_type

    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding tiny_imagenet/ and texture_vs_shape/")
    p.add_argument("--runs", required=True, help="folder for the training sets and workdirs")
    p.add_argument("--out", default=str(HERE / "results" / "mechanisms"), help="results folder")
    p.add_argument("--figures", default=str(REPO / "figures"), help="folder for real_data_mechanisms.png/.csv")
    p.add_argument("--setting", choices=sorted(SETTINGS), default="cpu")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=DEFAULT_ARMS)
    p.add_argument("--seeds", type=option_type("--seeds", int, 0, 2**31 - 1), nargs="+", default=[0, 1, 2])
    p.add_argument("--mosaic-names", choices=("coarse", "fine"), default="coarse",
                   help="name mosaic objects by coarse group (zero-shot over 24 groups) or fine class (200)")
    p.add_argument("--set", action="append", default=[], help="extra trainer override for every run")
    p.add_argument("--nice", action="store_true", help="run the trainer under nice -n 10")
    p.add_argument("--analyse-only", action="store_true", help="only gather the runs already on disk")
    a = p.parse_args(argv)
    try:
        return run(a)
    except OSError as e:  # --runs, --out or --figures a file, or under one; a failed write: one line naming it
        why = "is a file, not a folder" if isinstance(e, FileExistsError) else (e.strerror or str(e))
        print(f"error: {e.filename or ''}: {why}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad data layout or config (DataLayoutError, ConfigError): one line
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace) -> int:
    from mmcl_theory.clip.data.mosaics import write_mechanism_sets
    from mechanisms_analysis import ARMS, eval_datasets
    from mmcl_theory.io import atomic_write_json, run_header

    data_root = Path(a.data_root).resolve()
    if not (data_root / "tiny_imagenet" / "wnids.txt").is_file():
        print(f"error: --data-root {a.data_root}: expected tiny_imagenet/wnids.txt under it", file=sys.stderr)
        return 2
    setting = SETTINGS[a.setting]
    base = Path(a.runs).resolve() / a.setting
    out, figures = Path(a.out), Path(a.figures)
    out.mkdir(parents=True, exist_ok=True)
    header = run_header({"setting": a.setting, **setting, "arms": a.arms, "seeds": a.seeds,
                         "mosaic_names": a.mosaic_names, "extra_overrides": a.set},
                        [portable(x, data_root, base.parent) for x in sys.argv])
    status_path = out / "runs.json"
    try:
        status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{status_path} is damaged ({e}); restore or delete it (it lists each run's state and time; the runs in --runs are kept)") from None
    if not isinstance(status, dict):
        raise ValueError(f"{status_path} is not a JSON object of run states; delete it")
    if not a.analyse_only:
        sets = write_mechanism_sets(data_root / "tiny_imagenet", base / "sets", setting["per_class"], seed=0,
                                    names=a.mosaic_names)
        for seed in a.seeds:  # seed-major: a cut-off job has every arm at the first seeds
            for arm in a.arms:
                work = base / f"{arm}_s{seed}"
                config, overrides = run_overrides(arm, seed, setting, data_root, sets, base / "cache", a.mosaic_names)
                names = a.mosaic_names if ARMS[arm]["names"] == "mosaic" else ARMS[arm]["names"]
                if run_is_done(work, setting["steps"], len(eval_datasets(names))):
                    continue
                rc, last, secs = train_run(config, overrides + a.set, work, a.nice)
                state = "done" if rc == 0 else ("waiting: the trainer has no supervised objective for CSV labels yet" if
                                                ARMS[arm].get("supervised") and rc == 2 else "failed")
                status[work.name] = {"status": state, "exit_code": rc, "seconds": round(secs, 1),
                                     "last_line": portable(last[-300:], data_root, base.parent), "config": str(config.relative_to(REPO)),
                                     "overrides": [portable(o, data_root, base.parent) for o in overrides + a.set]}
                atomic_write_json(status_path, status)
                print(f"{work.name}: {state} in {secs:.0f} s ({last[-160:]})", flush=True)
                done = [d for d in sorted(base.glob("*_s*")) if (d / "eval").is_dir()]
                if done:
                    gather(done, out, figures, header)
    done = [d for d in sorted(base.glob("*_s*")) if (d / "eval").is_dir()]
    if not done:
        print("no evaluated runs yet", file=sys.stderr)
        return 1
    report = gather(done, out, figures, header)
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
