"""Architecture: no import cycle anywhere, and both packages layered one way down (ARCHITECTURE, README
"Layout"): datamodel -> theory / learners -> evaluate -> models -> sweep -> figures; the CLIP track
config -> state -> zero_shot -> (train, evaluate); the library never imports paper_checks, and the CLIP
track never imports the synthetic sweep machinery; plotting imports no model, and no library module
loads a script from the checkout.

The import graph counts dynamic imports too: importlib.import_module / __import__ of a literal module
name, and importlib.util.spec_from_file_location / io.load_module_from_path of a path written with
literals (ROOT / "real_data" / "x.py": the literal parts, read from the checkout's root)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmcl_theory"


SCRIPT = "file:"  # a dependency on a Python file outside the packages: "file:" + its path from the checkout's root
MODULE_IMPORTERS = ("import_module", "__import__")  # calls whose first argument names a module
FILE_LOADERS = {"spec_from_file_location": 1, "load_module_from_path": 0}  # call -> argument holding the file's path


def _called(node: ast.Call) -> str:
    """The called function's own name: import_module for importlib.import_module(...) and import_module(...)."""
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def literal_path(node: ast.expr) -> str | None:
    """The path an expression spells with string literals, joined with '/': 'a/b.py', ROOT / 'a' / 'b.py',
    Path(ROOT, 'a', 'b.py') and Path('a') / 'b.py' all give 'a/b.py' (the names in it, such as ROOT, are read
    as the checkout's root); None when no literal ends it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = literal_path(node.left), literal_path(node.right)
        return None if right is None else (f"{left}/{right}" if left else right)
    if isinstance(node, ast.Call) and _called(node) in ("Path", "PurePath") and node.args:
        parts = [literal_path(a) for a in node.args]
        return None if parts[-1] is None else "/".join(p for p in parts if p)
    return None


def _dynamic_targets(node: ast.Call, name: str, is_pkg: bool, files: dict, roots: list[Path]) -> list[str]:
    """The modules (or SCRIPT + path) that a call imports by name or loads from a file, where literals say which."""
    called = _called(node)
    if called in MODULE_IMPORTERS and node.args:
        target = node.args[0]
        if not (isinstance(target, ast.Constant) and isinstance(target.value, str)):
            return []
        module = target.value
        if module.startswith("."):  # import_module('.x', 'pkg'), else relative to this module's package
            anchor = node.args[1] if len(node.args) > 1 else None
            package = anchor.value if isinstance(anchor, ast.Constant) and isinstance(anchor.value, str) else \
                ".".join(name.split(".")[: None if is_pkg else -1])
            level = len(module) - len(module.lstrip("."))
            base = package.split(".")[: len(package.split(".")) - level + 1]
            module = ".".join(base + ([module.lstrip(".")] if module.lstrip(".") else []))
        return [module]
    if called in FILE_LOADERS and len(node.args) > FILE_LOADERS[called]:
        path = literal_path(node.args[FILE_LOADERS[called]])
        if path is None or not path.endswith(".py"):
            return []
        for root in roots:  # a file of one of the packages is that module; anything else is a script
            parts = Path(path).with_suffix("").parts
            if parts and parts[0] == root.name:
                module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                if module in files:
                    return [module]
        return [SCRIPT + path]
    return []


def import_graph(*package_dirs: Path) -> dict[str, set[str]]:
    """module -> the modules of the given packages it imports anywhere in its file (top level or inside
    functions, statically or dynamically: see the module's docstring), read with ast, and SCRIPT + path for
    each file outside the packages that it loads. (A package's __init__ importing its own submodules is not
    a cycle and is not counted as one: the submodule's implicit dependence on its parent package is left out.)"""
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
            elif isinstance(node, ast.Call):
                targets = _dynamic_targets(node, name, is_pkg, files, list(package_dirs))
            else:
                continue
            deps |= {t for t in targets if (t in files or t.startswith(SCRIPT)) and t != name}
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


def reachable(module: str, graph: dict[str, set[str]] = GRAPH) -> set[str]:
    """Every module that `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def layer_violations(graph: dict[str, set[str]], allowed: dict[str, set[str]], prefix: str) -> dict[str, list[str]]:
    """module -> the modules of `prefix` it reaches outside its `allowed` ones (names without the prefix), for
    each module of `allowed` that reaches one; {} when every layer holds."""
    bad = {}
    for module, below in allowed.items():
        deps = {d[len(prefix):] for d in reachable(prefix + module, graph) if d.startswith(prefix)}
        if deps - below:
            bad[module] = sorted(deps - below)
    return bad


def scripts_loaded(graph: dict[str, set[str]], prefix: str) -> dict[str, list[str]]:
    """module of `prefix` -> the files outside the packages it loads (SCRIPT dependencies), where it loads any."""
    return {m: sorted(d[len(SCRIPT):] for d in deps if d.startswith(SCRIPT))
            for m, deps in graph.items() if m.startswith(prefix) and any(d.startswith(SCRIPT) for d in deps)}


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
        "grid": {"learners", "losses", "config", "results"},  # the one runner: no model, no datamodel
        "evaluate": {"datamodel", "theory", "grid", "learners", "losses", "config", "results"},
        "digits_learners": {"digits", "grid", "learners", "losses", "theory", "datamodel", "config", "results", "io"},
        "paper_mnist": {"digits", "grid", "learners", "losses", "datamodel", "config", "results", "io"},
        "plotting": {"io", "results"},  # the style of every figure: no model (figures.py passes a model's data)
    }
    assert layer_violations(GRAPH, allowed, m) == {}


def test_the_library_loads_no_script():
    """No module of mmcl_theory imports a file of the checkout outside the packages (real_data/, bench/, ...):
    what it needs belongs in the package."""
    assert scripts_loaded(GRAPH, "mmcl_theory") == {}


def test_dynamic_imports_are_seen_and_an_upward_one_fails(tmp_path):
    """On temporary module sources: every form of dynamic import is an edge of the graph, an upward one
    fails the layering check, and loading a script by path (figures.py's former call) is caught."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (tmp_path / "real_data").mkdir()
    (tmp_path / "real_data" / "analysis.py").write_text("X = 1\n")
    sources = {
        "__init__": "",
        "high": "",
        "low": "import importlib\n\n\ndef late():\n    return importlib.import_module('pkg.high')\n",
        "low_dunder": "def late():\n    return __import__('pkg.high')\n",
        "low_relative": "from importlib import import_module\n\nHIGH = import_module('.high', 'pkg')\n",
        "low_file": "import importlib.util\nfrom pathlib import Path\n\nROOT = Path(__file__).parents[1]\n"
                    "SPEC = importlib.util.spec_from_file_location('high', ROOT / 'pkg' / 'high.py')\n",
        "low_script": "from pathlib import Path\n\nfrom mmcl_theory.io import load_module_from_path\n\n"
                      "ROOT = Path(__file__).parents[1]\n\n\ndef analysis():\n    return load_module_from_path("
                      "ROOT / 'real_data' / 'analysis.py', 'analysis')\n",
        "low_variable": "import importlib\n\n\ndef late(name):\n    return importlib.import_module(name)\n",
        "low_static": "import pkg.high\n",
    }
    for module, text in sources.items():
        (pkg / f"{module}.py").write_text(text)
    graph = import_graph(pkg)
    for module in ("low", "low_dunder", "low_relative", "low_file", "low_static"):
        assert graph[f"pkg.{module}"] == {"pkg.high"}, module
    assert graph["pkg.low_variable"] == set()  # no literal: nothing to resolve
    assert graph["pkg.low_script"] == {SCRIPT + "real_data/analysis.py"}
    below = {module: set() for module in sources if module.startswith("low")}
    assert layer_violations(graph, below, "pkg.") == {m: ["high"] for m in below if m not in ("low_variable",
                                                                                            "low_script")}
    assert layer_violations(graph, {**below, "low": {"high"}}, "pkg.").keys() == below.keys() - {
        "low", "low_variable", "low_script"}
    assert scripts_loaded(graph, "pkg") == {"pkg.low_script": ["real_data/analysis.py"]}
    assert find_cycle(graph) is None
    (pkg / "high.py").write_text("import importlib\n\nLOW = importlib.import_module('pkg.low')\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.high", "pkg.low", "pkg.high"]


def test_literal_paths():
    parse = lambda text: literal_path(ast.parse(text, mode="eval").body)  # noqa: E731
    assert parse("'real_data/x.py'") == "real_data/x.py"
    assert parse("ROOT / 'real_data' / 'x.py'") == "real_data/x.py"
    assert parse("Path(ROOT, 'real_data', 'x.py')") == "real_data/x.py"
    assert parse("Path('real_data') / 'x.py'") == "real_data/x.py"
    assert parse("ROOT / name") is None and parse("path") is None


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
