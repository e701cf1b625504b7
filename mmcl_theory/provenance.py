"""Provenance of committed numbers: which source files an artifact's numbers depend on, their hash, and the record
beside the artifact that says what made it (issue 30: every committed number regenerates from its command at HEAD).

    python -m mmcl_theory.provenance status [ARTIFACT ...]     # fresh or stale, and why (default: figures/*.csv)
    python -m mmcl_theory.provenance inputs ARTIFACT           # its dependency files and their hash now
    python -m mmcl_theory.provenance stamp ARTIFACT --command CMD [--at LABEL=COMMIT ...] [--note TEXT]

Jax-free (it reads source files as text and never imports the modules it hashes).

**Source hash.** The first 16 hex digits of the SHA-256 of the lines "PATH FILEHASH" (sorted by repository-relative
path; FILEHASH the same digest of the file's bytes) over the artifact's *dependency set*. An artifact is *fresh*
when the hash of its dependency set now equals the hash recorded when its numbers were computed (every part's, for
an artifact assembled from parts), and the artifact's own bytes are the ones recorded; otherwise *stale*.

**The dependency set** is chosen so that what computes the numbers is covered and presentation is not:

- *a sweep's figure CSV* (figures/NAME.csv and figures/NAME_epochs.csv of mmcl_theory/sweeps/NAME.toml): the
  definition NAME.toml; sweep/plan.py (the definition resolved into configs, seeds, settings, learners);
  models.py (the registry and evaluate_grid, hashed as a file); and the static import closure of the model's own
  modules and of the grid that runs its points (MODEL_MODULES: evaluate.py for M1/M2/DM2, digits.py and
  digits_learners.py for digits, paper_mnist.py; grid.py for each) within the repository's packages. The closure follows every `import` / `from ... import`
  anywhere in a file (inside functions too), read with ast, and resolves relative imports; it does not follow
  models.py's own imports (the registry imports every model's module lazily: following it would tie each
  model's numbers to every other model's code), and it does not add a package's __init__.py for a submodule
  imported from it (the package's own __init__ is added only when it is imported by name, e.g.
  `from mmcl_theory import __version__`). For M1 this is evaluate, learners, losses, datamodel, theory,
  config, results.
- *at the level of definitions*: a root file (the TOML, plan.py, models.py, the model's own modules) and a module
  imported whole (`import m`, `from pkg import m`) are hashed by their bytes; a module imported for some names
  (`from m import a, b`) counts only the statements those names need: their definitions, the module-level
  definitions these use (transitively), and every top-level statement that is not a plain definition (imports,
  registrations, calls), which always run (module_parts). So an edit elsewhere in results.py or config.py (the
  printed table, an argument-parser type) leaves a sweep's CSV fresh, while a new top-level import there, or an
  edit to a used definition, stales it.
- *not covered, on purpose*: the sweep's runner and storage (sweep/store.py, memory.py, launch.py, cli.py),
  figures.py and plotting.py, where a sweep's numbers are concerned (they order, store, print and draw rows;
  an edit to the CSV formatting changes the CSV's bytes, which the record's artifact hash catches). A paper
  check whose module imports them (G1 reads the paper_mnist figure through figures.py) counts what it uses.
- *not covered*: data files read from ../shared/data or $MMCL_SHARED_DATA (the package records no checksum of
  them; their SOURCE.md files do, by hand), the sklearn digits bundled with scikit-learn, and the versions of
  jax, jaxlib, numpy and scipy (recorded in the record for information, not compared).
- *real-data artifacts* (figures/real_data_*.csv): the experiment script, its run configs and the closure of
  what it imports and runs (REAL_DATA_ROOTS).

paper_checks computes the inputs of each check with this module's `closure` and `source_hash`
(paper_checks/inputs.py: the check's module, common.py, the models it runs, the files it reads).

**The record** of figures/NAME.csv is figures/NAME.provenance.json (a sidecar, not a comment line in the CSV:
check G1, real_data/mechanisms_analysis.py and the clip track's readers parse these CSVs with csv readers that
would take a comment for a row). Keys: artifact, artifact_sha256, inputs, command, sources (a list of parts,
each {part, source_hash, commit, files, note}), date, package_version, note. `stamp` writes it; a part named
with a commit (`--at LABEL=COMMIT`) gets the dependency set and hash of the files *as committed there*, so an
artifact assembled from parts run at different commits records each part's hash and is fresh only if every
one equals today's.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import hashlib
import re
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmcl_theory", "paper_checks")  # the repository's importable packages (at ROOT)
HASH_DIGITS = 16
RECORD_SUFFIX = ".provenance.json"
RECORD_KEYS = ("artifact", "artifact_sha256", "inputs", "command", "sources", "date", "package_version", "note")
PART_KEYS = ("part", "source_hash", "commit", "files", "note")

# A model's own modules (models.py's _BUILDERS import them; tests/test_provenance.py checks this table against
# the registry: each model's sampler, config class and learner records live in these files), and the grid that
# runs every model's points (models.evaluate_grid imports it lazily).
GRID = "mmcl_theory/grid.py"
MODEL_MODULES = {
    "M1": ("mmcl_theory/evaluate.py", GRID), "M2": ("mmcl_theory/evaluate.py", GRID),
    "DM2": ("mmcl_theory/evaluate.py", GRID), "digits": ("mmcl_theory/digits.py", "mmcl_theory/digits_learners.py", GRID),
    "paper_mnist": ("mmcl_theory/paper_mnist.py", GRID),
}
NOT_FOLLOWED = ("mmcl_theory/models.py",)  # hashed as files; their imports are not followed (see the module doc)
SWEEP_ROOTS = ("mmcl_theory/sweep/plan.py", "mmcl_theory/models.py")

# figures/real_data_*.csv: what made them (the experiment script, its run configs, the code it runs in subprocesses).
REAL_DATA_ROOTS = {
    "figures/real_data_ood_vs_id.csv": (
        "real_data/tiny_imagenet_experiment.py", "real_data/tiny_imagenet_label.toml",
        "real_data/tiny_imagenet_rich.toml", "mmcl_theory/clip/robustness/__init__.py"),
    "figures/real_data_mechanisms.csv": (
        "real_data/mechanisms_experiment.py", "real_data/mechanisms_analysis.py", "real_data/mechanisms_clip.toml",
        "real_data/mechanisms_sl.toml", "mmcl_theory/clip/train.py", "mmcl_theory/clip/evaluate.py"),
}
REAL_DATA_COMMANDS = {
    "figures/real_data_ood_vs_id.csv": (
        "python real_data/tiny_imagenet_experiment.py --data-root ../shared/data --runs runs/tiny --out "
        "real_data/results/tiny_imagenet && python -m mmcl_theory.clip.robustness series --results "
        "real_data/results/tiny_imagenet/tiny_imagenet_results.csv (real_data/README.md; H100, seed 0)"),
    "figures/real_data_mechanisms.csv": "python real_data/mechanisms_experiment.py (real_data/README.md, CPU setting)",
}


class ProvenanceError(ValueError):
    """A bad artifact path, a damaged or missing record, an unknown commit: one line, exit code 2."""


# ------------------------------------------------------------------ reading source files (working tree or a commit)


@dataclasses.dataclass
class Tree:
    """Read access to the repository's files, in the working tree (commit None) or as committed at `commit`."""

    commit: str | None = None
    root: Path = ROOT
    _paths: set | None = None
    _cache: dict = dataclasses.field(default_factory=dict)

    def _git(self, *args: str) -> bytes:
        try:
            r = subprocess.run(["git", *args], cwd=self.root, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ProvenanceError(f"cannot run git in {self.root}: {e}") from None
        if r.returncode:
            raise ProvenanceError(f"git {' '.join(args)}: {r.stderr.decode(errors='replace').strip() or 'failed'}")
        return r.stdout

    def exists(self, path: str) -> bool:
        if self.commit is None:
            return (self.root / path).is_file()
        if self._paths is None:
            self._paths = set(self._git("ls-tree", "-r", "--name-only", self.commit).decode().splitlines())
        return path in self._paths

    def read(self, path: str) -> bytes:
        """The file's bytes; ProvenanceError when it does not exist."""
        if path not in self._cache:
            if not self.exists(path):
                where = f"at commit {self.commit}" if self.commit else f"in {self.root}"
                raise ProvenanceError(f"{path} does not exist {where}")
            self._cache[path] = ((self.root / path).read_bytes() if self.commit is None else
                                 self._git("cat-file", "blob", f"{self.commit}:{path}"))
        return self._cache[path]


def resolve_commit(commit: str, root: Path = ROOT) -> str:
    """The full hash of `commit` (any name git accepts); ProvenanceError when git does not know it."""
    try:
        out = Tree(commit, root)._git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except ProvenanceError:
        raise ProvenanceError(f"commit {commit!r} is not known to git in {root} (a hash, a branch or a tag)") from None
    return out.decode().strip()


def head_commit(root: Path = ROOT) -> str | None:
    """HEAD's full hash, or None outside a git checkout."""
    try:
        return resolve_commit("HEAD", root)
    except ProvenanceError:
        return None


# ------------------------------------------------------------------ the import closure


def _module_file(dotted: str, tree: Tree) -> str | None:
    """The repository file of a dotted module name within PACKAGES (module.py or package/__init__.py), or None."""
    if not dotted or dotted.split(".")[0] not in PACKAGES:
        return None
    base = dotted.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if tree.exists(candidate):
            return candidate
    return None


def _package_of(path: str) -> list[str]:
    """The dotted package a file's relative imports start from (its folder; for an __init__.py, its own package)."""
    return list(Path(path).parent.parts)


def _parse(path: str, tree: Tree) -> ast.Module:
    key = ("ast", path)
    if key not in tree._cache:
        try:
            tree._cache[key] = ast.parse(tree.read(path).decode("utf-8"), filename=path)
        except (SyntaxError, UnicodeDecodeError, ValueError) as e:
            raise ProvenanceError(f"{path} is not Python that parses: {e}") from None
    return tree._cache[key]


def _import_targets(n: ast.AST, path: str, tree: Tree) -> list[tuple[str, frozenset | None]]:
    """The repository files an import statement reaches, each with the names it takes from it (None: the whole
    module). `import a.b` -> (a/b.py, None); `from a.b import c` -> (a/b/c.py, None) when c is a submodule, else
    (a/b.py, {c}); relative imports from the file's package. Parent packages' __init__ files are not added."""
    out = []
    if isinstance(n, ast.Import):
        out = [(_module_file(a.name, tree), None) for a in n.names]
    elif isinstance(n, ast.ImportFrom):
        if n.level:
            package = _package_of(path)
            if n.level - 1 > len(package):
                return []
            base = package[:len(package) - (n.level - 1)] + ([n.module] if n.module else [])
            module = ".".join(p for part in base for p in part.split("."))
        else:
            module = n.module or ""
        for a in n.names:
            sub = _module_file(f"{module}.{a.name}", tree) if a.name != "*" else None
            out.append((sub, None) if sub else (_module_file(module, tree), None if a.name == "*"
                                                 else frozenset({a.name})))
    return [(f, names) for f, names in out if f and f != path]


def _defined_names(node: ast.stmt) -> list[str]:
    """The module-level names a top-level statement defines by itself (def, class, simple assignment, import)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
    names = []
    for t in targets:
        for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]):
            if not isinstance(e, ast.Name):
                return []  # X[k] = ..., X.a = ...: a statement with an effect, always kept
            names.append(e.id)
    return names


def module_parts(path: str, names: frozenset | None, tree: Tree) -> tuple[list[ast.stmt], str]:
    """The top-level statements of module `path` that the names it is imported for need, and their source text.

    names None: every statement. Otherwise: the definitions of those names and, transitively, of every
    module-level name used inside them, plus every top-level statement that is not a plain definition
    (imports, registrations such as X[k] = f, calls, if / for / with / try blocks), which always run. A
    requested name that is not defined at top level takes the whole module. The module docstring is left out."""
    key = ("parts", path, names)
    if key in tree._cache:
        return tree._cache[key]
    module = _parse(path, tree)
    text = tree.read(path).decode("utf-8")
    body = [n for i, n in enumerate(module.body) if not (i == 0 and isinstance(n, ast.Expr)
                                                          and isinstance(n.value, ast.Constant)
                                                          and isinstance(n.value.value, str))]
    defines: dict[str, list[int]] = {}
    always = []
    for i, n in enumerate(body):
        got = _defined_names(n)
        for name in got:
            defines.setdefault(name, []).append(i)
        if not got or isinstance(n, (ast.Import, ast.ImportFrom)):
            always.append(i)
    if names is None or not set(names) <= set(defines):
        keep = set(range(len(body)))
    else:
        keep, todo = set(), [*always, *(i for name in names for i in defines[name])]
        while todo:
            i = todo.pop()
            if i in keep:
                continue
            keep.add(i)
            used = {x.id for x in ast.walk(body[i]) if isinstance(x, ast.Name)}
            todo += [j for name in used & set(defines) for j in defines[name] if j not in keep]
    kept = [body[i] for i in sorted(keep)]
    lines = tree._cache.setdefault(("lines", path), source_lines(text))
    tree._cache[key] = kept, "\n".join(source_segment(lines, n) for n in kept)
    return tree._cache[key]


def source_lines(text: str) -> list[str]:
    """text split into lines as the parser splits them (at \r\n, \r or \n, each kept; a form feed is not a
    break), the input of source_segment."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", text)


def source_segment(lines: list[str], node: ast.AST) -> str:
    """The source text of `node` (what ast.get_source_segment(text, node) gives, '' where that gives None), from
    the file's lines split once: get_source_segment splits the whole file at every call, which made hashing a
    module's parts quadratic in its length (seconds per artifact). Offsets are in UTF-8 bytes, as ast's are."""
    end, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
    if end is None or end_col is None:
        return ""
    first, col = node.lineno - 1, node.col_offset
    if first == end - 1:
        return lines[first].encode()[col:end_col].decode()
    return "".join([lines[first].encode()[col:].decode(), *lines[first + 1:end - 1],
                    lines[end - 1].encode()[:end_col].decode()])


def imports_of(path: str, tree: Tree, names: frozenset | None = None) -> list[tuple[str, frozenset | None]]:
    """The repository files that the parts of `path` needed for `names` (module_parts; None: all of it) import
    anywhere in their text (top level or inside functions), each with the names taken (None: the whole module).
    ProvenanceError when the file does not parse."""
    kept, _ = module_parts(path, names, tree)
    return [t for stmt in kept for n in ast.walk(stmt) for t in _import_targets(n, path, tree)]


def closure(roots: Iterable[str], tree: Tree | None = None, not_followed: Sequence[str] = NOT_FOLLOWED,
            absent_roots_ok: bool = False) -> dict[str, frozenset | None]:
    """The roots and every repository file they import, directly or through others: {path: the names it is
    needed for, None for the whole file}, in path order. A root is needed whole; a module imported as `from m
    import a, b` is needed for a and b (and what they use: module_parts), unless another import takes it whole.
    Python files only are followed; other roots (TOML) are kept as they are. Files in `not_followed` are kept
    whole but their imports are not followed. ProvenanceError when a root does not exist (unless
    absent_roots_ok: then it is left out, for the layout of an older commit)."""
    tree = tree or Tree()
    need: dict[str, frozenset | None] = {}
    todo: list[tuple[str, frozenset | None]] = [(r, None) for r in roots if not absent_roots_ok or tree.exists(r)]
    while todo:
        path, names = todo.pop()
        tree.read(path)  # exists, or one line naming it
        if path in need:
            old = need[path]
            if old is None or (names is not None and names <= old):
                continue
            names = None if names is None else old | names
        if path in not_followed or not path.endswith(".py"):
            names = None
        need[path] = names
        if path.endswith(".py") and path not in not_followed:
            todo += imports_of(path, tree, names)
    return dict(sorted(need.items()))


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_DIGITS]


def source_hash(deps: Iterable[str] | dict, tree: Tree | None = None) -> tuple[str, dict[str, str]]:
    """(the hash of the dependency set, {path: hash of its needed part}) for `deps`: repository-relative paths
    (whole files) or closure's {path: names or None}. A file needed whole is hashed by its bytes; a module needed
    for some names by the source text of the statements those names need (module_parts), so an edit elsewhere in
    it (a printing function beside the statistics) does not change the hash."""
    tree = tree or Tree()
    deps = deps if isinstance(deps, dict) else {p: None for p in deps}
    files = {}
    for p in sorted(deps):
        names = deps[p]
        files[p] = file_hash(tree.read(p)) if names is None else \
            file_hash(module_parts(p, names, tree)[1].encode("utf-8"))
    text = "".join(f"{p} {h}\n" for p, h in files.items())
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS], files


# ------------------------------------------------------------------ the dependency set of an artifact


def sweep_inputs(name: str, tree: Tree | None = None, absent_roots_ok: bool = False) -> dict[str, frozenset | None]:
    """The dependency set of sweep `name`'s rows (module doc): its definition, plan.py, models.py and the closure
    of its model's modules."""
    tree = tree or Tree()
    definition = f"mmcl_theory/sweeps/{name}.toml"
    try:
        model = tomllib.loads(tree.read(definition).decode("utf-8")).get("model")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProvenanceError(f"{definition} is not a readable sweep definition: {e}") from None
    if model not in MODEL_MODULES:
        raise ProvenanceError(f"{definition}: model {model!r} has no entry in provenance.MODEL_MODULES")
    return closure([definition, *SWEEP_ROOTS, *MODEL_MODULES[model]], tree, absent_roots_ok=absent_roots_ok)


def artifact_key(path: str | Path, root: Path = ROOT) -> str:
    """The repository-relative path of an artifact (given relative to the working directory or absolute)."""
    p = Path(path)
    p = (p if p.is_absolute() else Path.cwd() / p).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ProvenanceError(f"{path} is not inside the repository {root}") from None


def sweep_of(artifact: str, tree: Tree | None = None) -> str | None:
    """The sweep whose rows figures/NAME.csv or figures/NAME_epochs.csv holds, or None."""
    tree = tree or Tree()
    p = Path(artifact)
    if p.parent.as_posix() != "figures" or p.suffix != ".csv":
        return None
    for name in (p.stem, p.stem.removesuffix("_epochs")):
        if tree.exists(f"mmcl_theory/sweeps/{name}.toml"):
            return name
    return None


def artifact_inputs(artifact: str, tree: Tree | None = None,
                    absent_roots_ok: bool = False) -> tuple[str, dict[str, frozenset | None]]:
    """(a description of the rule, the dependency set) of a committed artifact (repository-relative path).
    absent_roots_ok: leave out roots that do not exist in `tree` (an older commit's layout) instead of refusing."""
    tree = tree or Tree()
    name = sweep_of(artifact, tree)
    if name is not None:
        return f"sweep {name}", sweep_inputs(name, tree, absent_roots_ok)
    if artifact in REAL_DATA_ROOTS:
        return "real-data experiment", closure(REAL_DATA_ROOTS[artifact], tree, absent_roots_ok=absent_roots_ok)
    raise ProvenanceError(f"{artifact}: no dependency rule (a figures/NAME.csv of a sweep, or one of "
                          f"{', '.join(REAL_DATA_ROOTS)})")


def default_command(artifact: str) -> str:
    """The command that regenerates a committed artifact."""
    name = sweep_of(artifact)
    if name is not None:
        return f"python -m mmcl_theory.figures --only {name} --runs runs/figures-fresh"
    return REAL_DATA_COMMANDS.get(artifact, "")


def figure_artifacts(root: Path = ROOT) -> list[str]:
    """Every committed-style figure CSV: figures/*.csv."""
    return sorted(p.relative_to(root).as_posix() for p in (root / "figures").glob("*.csv"))


# ------------------------------------------------------------------ records


def record_path(csv_path: str | Path) -> Path:
    """The record beside an artifact: figures/NAME.csv -> figures/NAME.provenance.json."""
    p = Path(csv_path)
    return p.with_name(p.name.removesuffix(".csv") + RECORD_SUFFIX)


def part(label: str, commit: str | None, artifact: str, note: str = "", root: Path = ROOT,
         files: dict | None = None) -> dict:
    """One part's provenance: the dependency set of `artifact` and its hash in the working tree (commit None) or
    as committed at `commit` (resolved to its full hash). `files` overrides the dependency set (paper_checks)."""
    tree = Tree(resolve_commit(commit, root) if commit else None, root)
    if files is not None:
        paths = files
    elif commit:  # an older commit may lay the code out differently: its hash then differs from today's (stale)
        paths = artifact_inputs(artifact, tree, absent_roots_ok=True)[1]
        today = artifact_inputs(artifact, Tree(None, root), absent_roots_ok=True)[1]
        gone = sorted(set(today) - set(paths))
        if gone:
            note = "; ".join(filter(None, [note, f"files of today's dependency set absent at {tree.commit[:10]}: "
                                                 + ", ".join(gone[:8]) + (" ..." if len(gone) > 8 else "")]))
    else:
        paths = artifact_inputs(artifact, tree)[1]
    digest, per_file = source_hash(paths, tree)
    return {"part": label, "source_hash": digest, "commit": tree.commit, "files": per_file, "note": note}


def unknown_part(label: str, note: str) -> dict:
    """A part whose code is not known (e.g. rows read from stored results): such an artifact is stale."""
    return {"part": label, "source_hash": None, "commit": None, "files": {}, "note": note}


def make_record(artifact: str, path: Path, command: str, sources: list[dict], note: str = "") -> dict:
    """The record of the file `path` holding `artifact` (its repository-relative name, which picks the rule)."""
    from . import __version__

    if not Path(path).is_file():
        raise ProvenanceError(f"{path} does not exist: nothing to stamp")
    rule = sweep_of(artifact)
    return {"artifact": artifact, "artifact_sha256": file_hash(Path(path).read_bytes()),
            "inputs": f"sweep {rule}" if rule else ("real-data experiment" if artifact in REAL_DATA_ROOTS else "other"),
            "command": command, "sources": sources,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__, "note": note}


def write_record(record: dict, path: Path) -> Path:
    """Write the record beside the artifact file `path` (atomic); ProvenanceError when it cannot be written."""
    from .io import atomic_write_json

    target = record_path(path)
    try:
        atomic_write_json(target, record)
    except OSError as e:
        raise ProvenanceError(f"cannot write {target}: {e.strerror or e}") from None
    return target


def stamp(artifact: str, command: str, parts: Sequence[tuple[str, str | None]] = (("all", None),), note: str = "",
          root: Path = ROOT, part_notes: dict | None = None) -> Path:
    """Write ARTIFACT's record (root/ARTIFACT must exist): its command and, per part (label, commit or None for
    the working tree), the dependency set's hash there. The API for artifacts assembled from parts run at named
    commits: stamp("figures/paper_mnist.csv", CMD, [("part 1/8", "abc123"), ("part 6/8", "def456"), ...]);
    the CLI: `python -m mmcl_theory.provenance stamp figures/paper_mnist.csv --command CMD --at 'part 1/8=abc123'
    --at ...`. Returns the record's path."""
    if not parts:
        raise ProvenanceError("stamp: give at least one part")
    labels = [label for label, _ in parts]
    if len(set(labels)) != len(labels):
        raise ProvenanceError(f"stamp: part labels repeat ({', '.join(labels)})")
    sources = [part(label, commit, artifact, (part_notes or {}).get(label, ""), root) for label, commit in parts]
    return write_record(make_record(artifact, root / artifact, command, sources, note), root / artifact)


def read_record(artifact: str, root: Path = ROOT) -> dict:
    """The record of `artifact`, checked for shape: ProvenanceError naming the file and what is wrong."""
    path = record_path(root / artifact)
    name = path.relative_to(root) if path.is_relative_to(root) else path
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ProvenanceError(f"no provenance record ({name} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ProvenanceError(f"{name} is damaged: {e}") from None
    problem = record_problem(data)
    if problem:
        raise ProvenanceError(f"{name} is damaged: {problem}")
    if data["artifact"] != artifact:
        raise ProvenanceError(f"{name} is damaged: it is the record of {data['artifact']!r}, not {artifact!r}")
    return data


def record_problem(data: object) -> str | None:
    """What is wrong with a parsed record, in a few words, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    missing, extra = [k for k in RECORD_KEYS if k not in data], sorted(set(data) - set(RECORD_KEYS))
    if missing or extra:
        return "; ".join([f"key(s) {', '.join(missing)} missing"] * bool(missing) +
                         [f"unknown key(s) {', '.join(extra)}"] * bool(extra))
    for k in ("artifact", "artifact_sha256", "inputs", "command", "date", "package_version", "note"):
        if not isinstance(data[k], str):
            return f"{k!r} is not a string"
    if not isinstance(data["sources"], list) or not data["sources"]:
        return "'sources' is not a non-empty list"
    for s in data["sources"]:
        if not isinstance(s, dict) or sorted(s) != sorted(PART_KEYS):
            return f"a source is not an object with keys {', '.join(PART_KEYS)}"
        if not (s["source_hash"] is None or isinstance(s["source_hash"], str)) or not isinstance(s["part"], str):
            return "a source's 'part' or 'source_hash' is of the wrong kind"
        if not isinstance(s["files"], dict) or not (s["commit"] is None or isinstance(s["commit"], str)):
            return "a source's 'files' or 'commit' is of the wrong kind"
    return None


@dataclasses.dataclass
class Status:
    """The freshness of one artifact: fresh, and why not (one line) when stale."""

    artifact: str
    fresh: bool
    why: str
    current: str | None = None


def status(artifact: str, root: Path = ROOT, files_now: Callable[[str], dict] | None = None) -> Status:
    """Fresh when the record exists and is whole, the artifact's bytes are the recorded ones, and every part's
    source hash equals the dependency set's hash in the working tree now. ProvenanceError for a damaged
    record (a missing one is a stale Status, not an error)."""
    tree = Tree(None, root)
    if not (root / artifact).is_file():
        raise ProvenanceError(f"{artifact} does not exist in {root}")
    paths = files_now(artifact) if files_now else artifact_inputs(artifact, tree)[1]  # a file of no rule: an error
    try:
        record = read_record(artifact, root)
    except ProvenanceError as e:
        if "no provenance record" in str(e):
            return Status(artifact, False, str(e))
        raise
    now, now_files = source_hash(paths, tree)
    if file_hash((root / artifact).read_bytes()) != record["artifact_sha256"]:
        return Status(artifact, False, f"{artifact} was rewritten after its record was made (its bytes differ from "
                                       "the recorded hash): restamp it with the command that made it", now)
    stale = []
    for s in record["sources"]:
        if s["source_hash"] is None:
            stale.append(f"part {s['part']!r}: the code that computed it is not recorded ({s['note'] or 'no note'})")
        elif s["source_hash"] != now:
            changed = sorted(p for p in set(now_files) | set(s["files"]) if now_files.get(p) != s["files"].get(p))
            at = f" at {s['commit'][:10]}" if s["commit"] else ""
            stale.append(f"part {s['part']!r}{at}: source {s['source_hash']} != {now} now; changed: "
                         + ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    if stale:
        return Status(artifact, False, "; ".join(stale) + f" (regenerate: {record['command']})", now)
    return Status(artifact, True, f"fresh (source {now})", now)


# ------------------------------------------------------------------ CLI


def main(argv=None) -> int:
    from .config import ArgumentParser
    from .runtime import error_exit

    ap = ArgumentParser(prog="python -m mmcl_theory.provenance", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    st = sub.add_parser("status", help="fresh or stale, per artifact (exit 1 when any is stale)")
    st.add_argument("artifacts", nargs="*", help="default: every figures/*.csv")
    inp = sub.add_parser("inputs", help="an artifact's dependency files and their hash now")
    inp.add_argument("artifact")
    sp = sub.add_parser("stamp", help="write an artifact's record")
    sp.add_argument("artifact")
    sp.add_argument("--command", required=True, help="the command that made it")
    sp.add_argument("--at", action="append", default=[], metavar="LABEL=COMMIT",
                    help="a part computed with the code of COMMIT (repeat per part); default: one part, the working tree")
    sp.add_argument("--note", default="", help="free text recorded with it")
    args = ap.parse_args(argv)
    try:
        if args.what == "status":
            arts = [artifact_key(a) for a in args.artifacts] or figure_artifacts()
            results = [status(a) for a in arts]
            for s in results:
                print(f"{'fresh' if s.fresh else 'STALE':5s}  {s.artifact}: {s.why}")
            return 0 if all(s.fresh for s in results) else 1
        art = artifact_key(args.artifact)
        if args.what == "inputs":
            rule, paths = artifact_inputs(art)
            digest, files = source_hash(paths)
            print(f"{art}: {rule}; source hash {digest}")
            for p, h in files.items():
                print(f"  {h}  {p}")
            return 0
        if not args.command.strip():
            return error_exit("stamp: --command is empty: give the command that made the artifact")
        parts = []
        for text in args.at:
            label, sep, commit = text.rpartition("=")
            if not sep or not label.strip() or not commit.strip():
                return error_exit(f"--at {text!r} is not LABEL=COMMIT")
            parts.append((label.strip(), commit.strip()))
        path = stamp(art, args.command, parts or [("all", None)], args.note)
        print(f"wrote {path.relative_to(ROOT)}")
        return 0
    except ProvenanceError as e:
        return error_exit(e)


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------------------ what mmcl_theory.figures calls


RUN_MARKER = "provenance.json"  # in a sweep's runs folder: the source its points were computed with


def begin_sweep_run(name: str, out: Path, write: bool = True) -> dict:
    """Before figures runs (or resumes) sweep `name` in `out`: the part of this run (its source hash now), written
    to out/provenance.json unless write is False. A folder that already holds points computed with other code
    (another source hash, or an unknown one: points without this marker) is refused with ProvenanceError (one
    line): resuming would mix rows of two codes under one stamp."""
    from .io import atomic_write_json

    now = part("all", None, f"figures/{name}.csv", "computed in one run by this command")
    marker = Path(out) / RUN_MARKER
    has_points = any(Path(out).glob("points*.jsonl"))
    if has_points:
        try:
            recorded = json.loads(marker.read_text()).get("source_hash")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != now["source_hash"]:
            why = f"source {recorded}" if isinstance(recorded, str) else "an unknown source (no provenance marker)"
            raise ProvenanceError(f"{out} holds points of sweep {name} computed with {why}, not with today's code "
                                  f"(source {now['source_hash']}): delete it or pass --runs to a fresh folder")
    if not write:
        return now
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"sweep": name, "source_hash": now["source_hash"], "files": now["files"]})
    except OSError as e:
        raise ProvenanceError(f"cannot write {marker}: {e.strerror or e}") from None
    return now


def end_sweep_run(name: str, started: dict) -> dict:
    """The part to record after the run: `started`, or an unknown part when the dependency files changed while
    the sweep ran (its rows may then come from either code)."""
    now = part("all", None, f"figures/{name}.csv")
    if now["source_hash"] == started["source_hash"]:
        return started
    changed = sorted(p for p in set(now["files"]) | set(started["files"])
                     if now["files"].get(p) != started["files"].get(p))
    return unknown_part("all", f"the dependency files changed while the sweep ran ({', '.join(changed)})")


def stored_part(results: Path) -> dict:
    """The part of rows read from stored results (figures --from): the marker beside them when begin_sweep_run
    wrote one, else unknown."""
    marker = Path(results).parent / RUN_MARKER
    try:
        data = json.loads(marker.read_text())
        if isinstance(data.get("source_hash"), str) and isinstance(data.get("files"), dict):
            return {"part": "all", "source_hash": data["source_hash"], "commit": None, "files": data["files"],
                    "note": f"read from {results.name}, computed with the source its folder's marker records"}
    except (OSError, ValueError, AttributeError):
        pass
    return unknown_part("all", f"read from stored results {results.parent.name}/{results.name}; the code that "
                               "computed them is not recorded (stamp it with --at LABEL=COMMIT if known)")


def stamp_figure(name: str, csv_path: Path, command: str, source: dict, note: str = "") -> Path:
    """Write the record of a sweep's figure CSV (figures/NAME.csv or NAME_epochs.csv, wherever it was written)."""
    artifact = f"figures/{Path(csv_path).name}"
    return write_record(make_record(artifact, Path(csv_path), command, [source], note), Path(csv_path))
