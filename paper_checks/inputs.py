"""The inputs of each check: the files its verdict and numbers depend on, and their source hash (mmcl_theory.provenance).

A check's inputs are

- the static import closure (provenance.closure: every import anywhere in a file, within the repository's
  packages) of the module that defines it and of common.py, *without* following imports of the other check
  modules (checks.py imports them only to list them in CHECKS) or the report's rendering (report.py, __main__.py:
  presentation);
- the modules of the models it runs through the registry (CHECK_MODELS: models.py is hashed, but its lazy imports
  of every model's module are not followed; tests/test_provenance.py checks this table against the model names
  and config classes each check's code mentions);
- code it loads by path (CHECK_CODE) and the result files it reads (CHECK_DATA: G1's figures/paper_mnist.csv,
  C6's real-data series, C8's mechanism report), by content; a data file that is absent is simply not in the set,
  so its appearance changes the hash.

Data under ../shared/data is not covered (the package records no checksum of it), nor are library versions.
`python -m paper_checks --resume DIR` reuses a saved check only when its inputs' hash, the package version, the
mode and the seed offset are the ones of this run.
"""

from __future__ import annotations

import glob
from pathlib import Path

from mmcl_theory import provenance

ROOT = Path(__file__).resolve().parents[1]
CHECK_MODULES = {"theorems": "paper_checks/theorems.py", "check_g1": "paper_checks/check_g1.py",
                 "temperature": "paper_checks/temperature.py", "checks": "paper_checks/checks.py"}
COMMON = "paper_checks/common.py"
# paper_checks files whose imports are not followed from a check (the registry and the report: not its numbers)
NOT_FOLLOWED = (*provenance.NOT_FOLLOWED, "paper_checks/__init__.py", "paper_checks/report.py",
                "paper_checks/__main__.py", "paper_checks/inputs.py")
CHECK_MODELS = {  # the registered models each check runs (directly or through models.evaluate_grid)
    "T4.3": ("M1",), "T4.4": ("M1",), "T5.2": ("M1",), "T5.4": ("DM2",), "G1": (), "TAU": ("M1",),
    "C1": ("M1",), "C2": ("M1",), "C3": ("M1",), "C4": ("M1",), "C5": ("M2",), "C6": (), "C7": ("digits",),
    "C8": (), "Q1": ("M1",), "Q2": ("M1",), "Q3": ("M1",), "Q4": ("M1",), "Q5": ("M1",),
}
CHECK_CODE = {"C8": ("real_data/mechanisms_analysis.py",)}  # loaded by path (io.load_module_from_path)


def _data_files(check_id: str) -> list[str]:
    """The result files a check reads, as they are now (repository-relative; absent ones left out)."""
    if check_id == "G1":
        pats = ["figures/paper_mnist.csv"]
    elif check_id == "C6":
        pats = ["figures/real_data_*.csv", "real_data/results/**/*.csv", "real_data/results/**/*.json",
                "real_data/results/**/er_summary.txt"]  # checks._find_real_data's patterns
    elif check_id == "C8":
        pats = ["real_data/results/mechanisms/er_report.json"]
    else:
        return []
    found = {Path(f).resolve().relative_to(ROOT).as_posix() for p in pats
             for f in glob.glob(str(ROOT / p), recursive=True) if Path(f).is_file()}
    return sorted(found)


def module_of(check_id: str) -> str:
    """The file that defines a check."""
    from .checks import CHECKS

    name = CHECKS[check_id].__module__.rsplit(".", 1)[-1]
    return CHECK_MODULES[name]


def check_files(check_id: str, tree: provenance.Tree | None = None) -> dict:
    """The inputs of `check_id` (module doc): {repository-relative path: the names it is needed for, None for the
    whole file}, in path order (provenance.closure; data files whole)."""
    tree = tree or provenance.Tree()
    own = module_of(check_id)
    others = tuple(m for m in CHECK_MODULES.values() if m != own)
    roots = [own, COMMON, *CHECK_CODE.get(check_id, ()),
             *(m for model in CHECK_MODELS[check_id] for m in provenance.MODEL_MODULES[model])]
    code = provenance.closure(roots, tree, not_followed=(*NOT_FOLLOWED, *others))
    code = {f: names for f, names in code.items() if f not in others}  # reached only through the registry import
    return dict(sorted({**code, **{f: None for f in _data_files(check_id)}}.items()))


def check_inputs(check_id: str, tree: provenance.Tree | None = None) -> dict:
    """{source_hash, files: {path: file hash}} of a check's inputs in the working tree now (`tree`: a
    provenance.Tree of the working tree to share its cache between checks)."""
    tree = tree or provenance.Tree()
    digest, files = provenance.source_hash(check_files(check_id, tree), tree)
    return {"source_hash": digest, "files": files}


def committed_state(check_id: str, files: dict[str, str], head: provenance.Tree | None) -> str:
    """Where the working tree's input files of a check stand against HEAD: 'as committed in HEAD abc1234567' or
    'on uncommitted changes to ... (HEAD abc1234567)' (or 'outside git'). `files` are their hashes now
    (check_inputs); HEAD's files are hashed the same way, each for the names the check needs from it (a whole-file
    digest would call every module hashed by its parts changed)."""
    if head is None or head.commit is None:
        return "outside a git checkout"
    needs = check_files(check_id)
    changed = [p for p, h in files.items()
               if not head.exists(p) or provenance.source_hash({p: needs.get(p)}, head)[1][p] != h]
    at = f"HEAD {head.commit[:10]}"
    return f"its input files as committed in {at}" if not changed else \
        f"with uncommitted changes to {', '.join(changed)} (on {at})"
