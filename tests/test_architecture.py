"""Architecture: no import cycle anywhere, and both packages layered one way down (ARCHITECTURE, README
"Layout"): datamodel -> theory / learners -> evaluate -> models -> sweep -> figures; the CLIP track
config -> state -> zero_shot -> (train, evaluate); the library never imports paper_checks, and the CLIP
track never imports the synthetic sweep machinery."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmcl_theory"


def import_graph(*package_dirs: Path) -> dict[str, set[str]]:
    """module -> the modules of the given packages it imports anywhere in its file (top level or inside
    functions), read with ast. (A package's __init__ importing its own submodules is not a cycle and is
    not counted as one: the submodule's implicit dependence on its parent package is left out.)"""
    files = {}
    for package_dir in package_dirs:
        for path in package_dir.rglob("*.py"):
            parts = path.relative_to(package_dir.parent).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a], or None."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if colour.get(dep) == "grey":
                return stack[stack.index(dep):] + [dep]
            if dep not in colour:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


GRAPH = import_graph(PACKAGE, ROOT / "paper_checks")


def reachable(module: str) -> set[str]:
    """Every module that `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for dep in GRAPH[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_synthetic_track_is_layered_one_way():
    """Each layer reaches only layers below it (the shared config and io layers are below everything)."""
    m = "mmcl_theory."
    allowed = {
        "datamodel": {"config", "results"},
        "theory": {"datamodel", "config", "results"},
        "losses": set(),
        "learners": {"losses", "config"},
        "evaluate": {"datamodel", "theory", "learners", "losses", "config", "results"},
    }
    for module, below in allowed.items():
        deps = {d[len(m):] for d in reachable(m + module) if d.startswith(m)}
        assert deps <= below, f"{module} reaches {sorted(deps - below)}"


def test_jax_free_base_layer():
    """config, io, runtime and results reach no module that imports jax at its top (datamodel, theory,
    learners, losses, evaluate, models, sweep, ...); importing them, or plotting, does not load jax."""
    jax_modules = {"mmcl_theory." + m for m in ("datamodel", "theory", "learners", "losses", "evaluate", "models",
                                                "sweep", "digits", "digits_learners", "paper_mnist")}
    for module in ("config", "io", "runtime", "results"):
        bad = reachable("mmcl_theory." + module) & jax_modules
        assert not bad, f"{module} reaches {sorted(bad)}"
    code = ("import sys; import mmcl_theory.results, mmcl_theory.plotting, mmcl_theory.runtime; "
            "sys.exit('jax' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, "importing them loaded jax"


def test_library_never_imports_paper_checks_and_clip_never_the_sweeps():
    for module in GRAPH:
        if module.startswith("mmcl_theory"):
            assert not any(d.startswith("paper_checks") for d in GRAPH[module]), module
        if module.startswith("mmcl_theory.clip"):
            sweeps = ("sweep", "figures", "plotting", "cluster", "models", "digits", "digits_learners")
            bad = {d for d in reachable(module) if d.split(".")[1:2] and d.split(".")[1] in sweeps}
            assert not bad, f"{module} reaches {sorted(bad)}"


def test_clip_track_is_layered_one_way():
    """config -> state -> zero_shot -> (train, evaluate): nothing imports a layer above it, and
    train and evaluate do not import each other."""
    order = ["config", "train_data", "state", "zero_shot", "train", "evaluate"]
    above = {"config": {"state", "train_data", "zero_shot", "train", "evaluate"},
             "state": {"train_data", "zero_shot", "train", "evaluate"},
             "train_data": {"zero_shot", "train", "evaluate"},
             "zero_shot": {"train_data", "train", "evaluate"},
             "train": {"evaluate"}, "evaluate": {"train", "train_data"}}
    for low in order:
        deps = {d.rsplit(".", 1)[-1] for d in GRAPH[f"mmcl_theory.clip.{low}"] if d.startswith("mmcl_theory.clip.")}
        assert not deps & above[low], f"clip.{low} imports {sorted(deps & above[low])}"
