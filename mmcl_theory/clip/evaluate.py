"""Zero-shot classification and retrieval of trained CLIPs: one JSON per (model, step, dataset, task).

    python -m mmcl_theory.clip.evaluate --workdir DIR --dataset imagenet1k imagenet_robustness ... \\
        --dataset-root 'ROOT/{dataset}' [--root NAME=PATH] [--step latest|all|N] [--templates FILE.json]
    python -m mmcl_theory.clip.evaluate build --workdir DIR [DIR ...] --out results.csv

Dataset names: the data layer's eval sets (imagenet1k, imagenetv2, imagenet_sketch, imagenet-r,
imagenet-a, objectnet, tiny_imagenet, texture_vs_shape_edges, texture_vs_shape_silhouettes);
``imagenet1k@SUBSET`` (ImageNet val on the classes of imagenet-r, imagenet-a or objectnet: the x axis
of effective robustness); ``imagenet_robustness`` (= imagenetv2, imagenet_sketch, imagenet-r,
imagenet-a, objectnet and the three imagenet1k@ sets); ``NAME:SHIFT[:SEVERITY]`` (a data-layer shift
of an eval set, e.g. ``tiny_imagenet:gaussian_blur:3``); ``coco_retrieval`` (COCO val captions,
R@1/5/10 both ways). What is computed is described in ``mmcl_theory.clip.zero_shot``.

The CLI only: it reads the run (run.json, tokenizer, checkpoint variables; no optimiser is built)
through ``clip.state`` and scores it through ``clip.zero_shot``. Unreadable images are skipped,
counted and reported; bad input is one line on stderr and exit code 2. ``build`` gathers the
result JSONs of run folders into one CSV (the input of ``clip.robustness``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from mmcl_theory.clip import state as st, zero_shot as zs
from mmcl_theory.clip.config import CLASS_SPACES, portable_name
from mmcl_theory.config import ArgumentParser, ConfigError, check_range, option_type, output_file_type
from mmcl_theory.io import CorruptFileError, atomic_write_csv, run_header
from mmcl_theory.runtime import error_exit

PROG = "python -m mmcl_theory.clip.evaluate"


def choose_steps(available: Sequence[int], steps: str, workdir: Path) -> list[int]:
    """'latest' -> the newest checkpoint; 'all' -> every one; 'N' -> that one (ConfigError if absent)."""
    if not available:
        raise ConfigError(f"--workdir = {str(workdir)!r}: no checkpoints in {st.CHECKPOINTS}/")
    if steps == "latest":
        return [available[-1]]
    if steps == "all":
        return list(available)
    if not steps.isdigit() or int(steps) not in available:
        raise ConfigError(f"--step = {steps!r} is not allowed: 'latest', 'all' or one of {list(available)}")
    return [int(steps)]


def evaluate_workdir(workdir: str | os.PathLike, datasets: Sequence[str], root: str = "", roots: dict | None = None,
                     steps: str = "latest", templates: str = "", class_space_name: str = "imagenet1k",
                     batch_size: int = 256, max_examples: int = 0, options: dict | None = None,
                     command: Sequence[str] | None = None) -> list[Path]:
    """Evaluate checkpoints of a training run folder on ``datasets``; returns the result paths written.

    Results go to WORKDIR/eval/step_SSSSSSSS/<dataset>__<task>.json (zero_shot.write_result); their
    provenance holds this evaluation's settings (paths by name only) and the run's portable config.
    """
    from mmcl_theory.clip import data

    workdir = Path(workdir)
    check_range("", "--batch-size", batch_size, 1, 2**31 - 1, integer=True)
    check_range("", "--max-examples", max_examples, 0, 2**31 - 1, integer=True)
    run = st.load_run(workdir)
    model = st.model_from_run(run)
    tok_path = workdir / st.TOKENIZER_FILE
    if model.num_classes == 0 and not tok_path.is_file():
        raise ConfigError(f"--workdir = {str(workdir)!r}: no {st.TOKENIZER_FILE} (a run on the synthetic set has "
                          "no tokenizer: there is nothing to evaluate zero-shot)")
    chosen = choose_steps(st.checkpoint_steps(workdir), steps, workdir)
    tokenizer = data.load_tokenizer(tok_path) if tok_path.is_file() else None
    temps = data.load_templates(templates or None)
    roots = roots or {}
    tasks, space = zs.build_tasks(datasets, model.config.vision.image_size, root, roots, options or {},
                                  max_examples, class_space_name)
    settings = {"datasets": list(datasets), "dataset_root": portable_name(root),
                "roots": {k: portable_name(v) for k, v in roots.items()}, "steps": steps,
                "templates": portable_name(templates), "class_space": class_space_name, "batch_size": batch_size,
                "max_examples": max_examples}
    provenance = run_header({"evaluate": settings, "run": run["config"]}, command)
    fields = zs.run_fields(workdir, run)
    written = []
    for step in chosen:
        encoder = zs.Encoder(model, st.restore_variables(workdir, model, step), batch_size, run.get("classes"))
        for task in tasks:
            metrics, extra = zs.run_task(encoder, tokenizer, task, temps, space)
            written.append(zs.write_result(workdir, step, task, metrics, extra, fields, provenance))
            skipped = task.record["unreadable"]["count"]
            print(f"step {step} {task.dataset}: " + ", ".join(f"{k} {v:.4f}" for k, v in zs.headline(metrics).items())
                  + f" (n {metrics['n']}" + (f", {skipped} unreadable images skipped)" if skipped else ")"))
    return written


# ----------------------------------------------------------------------------------------------
# Results table
# ----------------------------------------------------------------------------------------------
CSV_FIELDS = ("model", "model_name", "caption_variant", "step", "dataset", "task", "top1", "top5", "balanced", "n",
              "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
              "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10", "unreadable_images", "version")


def collect_results(workdirs: Sequence[str | os.PathLike]) -> list[dict]:
    """One row per result JSON under WORKDIR/eval/step_*/ of each run folder (CSV_FIELDS)."""
    import json

    rows = []
    for wd in workdirs:
        if not Path(wd).is_dir():
            raise ConfigError(f"--workdir = {str(wd)!r}: no such folder")
        if not (Path(wd) / "run.json").is_file():
            raise ConfigError(f"--workdir = {str(wd)!r}: no run.json (not a training run folder)")
        found = sorted(Path(wd).glob("eval/step_*/*.json"))
        if not found:  # a run not evaluated yet would be missing from the CSV without a word
            raise ConfigError(f"--workdir = {str(wd)!r}: no evaluation results (eval/step_*/*.json); run "
                              f"`{PROG} --workdir {wd} --dataset ...` first")
        for path in found:
            try:
                r = json.loads(path.read_text(encoding="utf-8"))
                task, metrics, prov = r["task"], r["metrics"], r["provenance"]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorruptFileError(f"{path}: not an evaluation result ({type(e).__name__}: {e})") from None
            row = {k: task.get(k) for k in ("model", "model_name", "caption_variant", "step", "dataset", "task")}
            row.update({k: v for k, v in metrics.items() if k in CSV_FIELDS})
            row.update(unreadable_images=task.get("unreadable", {}).get("count", 0), version=prov.get("package_version"))
            rows.append(row)
    return rows


def build_csv(workdirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Gather every result JSON of the run folders into one CSV (atomic); returns the number of rows."""
    rows = collect_results(workdirs)
    atomic_write_csv(out, rows, CSV_FIELDS)
    return len(rows)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parse_roots(items: Sequence[str]) -> dict:
    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise ConfigError(f"--root {item!r} is not allowed: NAME=PATH")
        roots[name] = path
    return roots


def main(argv: list[str] | None = None) -> int:
    """CLI (module doc): 0 done; 2 bad input, one line on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "build":
            p = ArgumentParser(prog=f"{PROG} build", description="Gather result JSONs into one CSV.")
            p.add_argument("--workdir", nargs="+", required=True, help="training run folders")
            p.add_argument("--out", required=True, type=output_file_type("--out"), help="CSV path")
            a = p.parse_args(argv[1:])
            print(f"{build_csv(a.workdir, a.out)} rows -> {a.out}")
            return 0
        p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                    epilog=f"Also: {PROG} build --workdir DIR [DIR ...] --out results.csv")
        p.add_argument("--workdir", required=True, help="a training run folder")
        p.add_argument("--dataset", nargs="+", required=True,
                       help="eval set names, imagenet_robustness, coco_retrieval, NAME@SUBSET, NAME:SHIFT[:SEVERITY]")
        p.add_argument("--dataset-root", default="", help="root template, '{dataset}' replaced by the name")
        p.add_argument("--root", action="append", default=[], metavar="NAME=PATH", help="root of one dataset")
        p.add_argument("--step", default="latest", help="'latest', 'all' or a step number")
        p.add_argument("--templates", default="", help="JSON list of templates (default: the built-in set)")
        p.add_argument("--class-space", default="imagenet1k", choices=CLASS_SPACES)
        p.add_argument("--batch-size", type=option_type("--batch-size", int, 1, 2**31 - 1), default=256)
        p.add_argument("--max-examples", type=option_type("--max-examples", int, 0, 2**31 - 1), default=0,
                       help="random subset per dataset (0 = all)")
        a = p.parse_args(argv)
        evaluate_workdir(a.workdir, a.dataset, a.dataset_root, _parse_roots(a.root), a.step, a.templates,
                         a.class_space, a.batch_size, a.max_examples, command=[PROG, *argv])
    except (ValueError, OSError) as e:  # ConfigError, CorruptFileError, DataLayoutError are ValueErrors
        return error_exit(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
