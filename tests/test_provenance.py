"""Provenance (issue 30): every committed number regenerates from its command at HEAD.

The committed artifacts (every figures/*.csv and paper_checks/REPORT.md with paper_checks/records/) record the
command that made them and the source hash of the files their numbers depend on (mmcl_theory/provenance.py,
paper_checks/inputs.py). These tests fail when a committed artifact is stale: its recorded hash is not what the
working tree gives now, its bytes are not the recorded ones, or it records none. An artifact that cannot be
regenerated in a session (hours of training, real-data runs) is listed in KNOWN_STALE with the reason and the
command that would regenerate it; an entry there that is in fact fresh fails too, so the table cannot rot.
The mechanism itself is tested on a temporary copy of the package: a change to a dependency file makes the
artifact stale, a change to presentation code does not.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # paper_checks/ sits at the repository root

from mmcl_theory import provenance as P  # noqa: E402

# artifact -> (why its numbers are not those of today's code, the command that regenerates them)
KNOWN_STALE = {
    "figures/paper_mnist.csv": (
        "the paper's MNIST experiment at full scale, all 8 points from parts run at f2e58ec and 6762353 (16,939 s "
        "of part time, about 3 h on both cores of this CPU); learners.py and paper_mnist.py changed since, and since "
        "the one grid (issue 29) its learners' keys are derived from their names (new draws)",
        "python -m mmcl_theory.sweep paper_mnist --part K/8 --out figures/paper_mnist_run (K = 1..8); "
        "python -m mmcl_theory.sweep merge figures/paper_mnist_run; python -m mmcl_theory.figures --only "
        "paper_mnist --from <merged>"),
    "figures/paper_mnist_epochs.csv": (
        "the accuracy-against-epoch rows of the same run as figures/paper_mnist.csv",
        "as figures/paper_mnist.csv"),
    "figures/real_data_ood_vs_id.csv": (
        "trained CLIPs on Tiny ImageNet (H100, 2026-11-22, commit 1531edc); the CLIP track's code has changed since",
        P.REAL_DATA_COMMANDS["figures/real_data_ood_vs_id.csv"]),
    "figures/real_data_mechanisms.csv": (
        "trained CLIPs on real images (CPU setting, 2026-12-02, commit b2fc5bb); the CLIP track's code has "
        "changed since", P.REAL_DATA_COMMANDS["figures/real_data_mechanisms.csv"]),
}


# ------------------------------------------------------------------ the committed artifacts


@pytest.mark.parametrize("artifact", P.figure_artifacts())
def test_committed_figure_csv_is_fresh_or_listed_as_stale(artifact):
    status = P.status(artifact)
    if artifact in KNOWN_STALE:
        assert not status.fresh, (f"{artifact} is fresh now ({status.why}): remove it from KNOWN_STALE in "
                                  "tests/test_provenance.py")
    else:
        assert status.fresh, (f"{artifact} is stale: {status.why}. A change moved its numbers: regenerate it with "
                              "the recorded command (or list it in KNOWN_STALE with the reason)")


def test_known_stale_lists_only_committed_artifacts_with_reasons():
    for artifact, (why, command) in KNOWN_STALE.items():
        assert (REPO / artifact).is_file(), artifact
        assert why and command, artifact


def test_every_figure_record_names_a_command_that_regenerates_it():
    for artifact in P.figure_artifacts():
        path = P.record_path(REPO / artifact)
        if not path.is_file():
            assert artifact in KNOWN_STALE, f"{artifact} has no record"
            continue
        record = P.read_record(artifact)
        assert record["command"].startswith(("python -m ", "python real_data/")), record["command"]
        name = P.sweep_of(artifact)
        if name:
            only = re.search(r"--only (\S+)", record["command"])
            assert (only and name in only.group(1).split(",")) or f"sweep {name}" in record["command"], record["command"]


def _report_sections(text: str) -> dict[str, str]:
    """{check id: its section of REPORT.md}."""
    parts = re.split(r"^## (\S+): .*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _report_problems() -> list[str]:
    """Why the committed REPORT.md is not today's (empty when it is): no command line, another mode or seed set, a
    check whose recorded inputs hash is not today's, or a record in paper_checks/records/ that does not match."""
    from mmcl_theory.provenance import Tree
    from paper_checks import CHECKS
    from paper_checks.inputs import check_inputs
    from paper_checks.report import load_saved

    text = (REPO / "paper_checks" / "REPORT.md").read_text()
    command = re.search(r"^- Command: `([^`]*)`", text, re.M)
    if not command or not command.group(1).startswith("python -m paper_checks"):
        return ["no command line in REPORT.md"]
    if re.search(r"--quick|--only|--seed-offset", command.group(1)) or "seed offset 0" not in text:
        return [f"not the full report at seed offset 0: {command.group(1)}"]
    sections = _report_sections(text)
    if list(sections) != list(CHECKS):
        return [f"checks {list(sections)}, expected {list(CHECKS)}"]
    tree, problems = Tree(), []
    for cid in CHECKS:
        found = re.search(r"^Inputs: source hash `([0-9a-f]{16}|[a-z-]+)`", sections[cid], re.M)
        now = check_inputs(cid, tree)["source_hash"]
        if not found or found.group(1) != now:
            problems.append(f"{cid} ({found.group(1) if found else 'no hash'} != {now})")
            continue
        saved = REPO / "paper_checks" / "records" / f"{cid}.json"
        rec, damage, _ = load_saved(saved, cid, False, {"source_hash": now}, 0) if saved.is_file() else (None, "", 0)
        if rec is None or f"## {cid}: {rec.verdict}" not in text:
            problems.append(f"{cid} (paper_checks/records/{cid}.json {damage or 'missing or not this record'})")
    for folder in sorted((REPO / "paper_checks").glob("records-offset-*")):  # the other seed sets of the report
        offset = int(folder.name.rsplit("-", 1)[1])
        if "## Seed stability" not in text:
            problems.append(f"no Seed stability section, though {folder.name} exists")
        for cid in CHECKS:
            now = check_inputs(cid, tree)["source_hash"]
            rec, damage, _ = load_saved(folder / f"{cid}.json", cid, False, {"source_hash": now}, offset) \
                if (folder / f"{cid}.json").is_file() else (None, "missing", None)
            if rec is None:
                problems.append(f"{folder.name}/{cid}.json {damage or 'inputs changed'}")
    return problems


def test_committed_report_records_its_command_and_every_checks_current_inputs():
    """REPORT.md was rendered by the full run at seed offset 0, and each check's section records the source hash of
    its inputs as computed now (paper_checks/inputs.py); paper_checks/records/ID.json holds the same record and
    hash, so `python -m paper_checks --resume paper_checks/records` regenerates the report from them."""
    problems = _report_problems()
    if "paper_checks/REPORT.md" in KNOWN_STALE:
        assert problems, "paper_checks/REPORT.md is fresh now: remove it from KNOWN_STALE"
        return
    assert not problems, ("REPORT.md is stale: " + "; ".join(problems) + ". Rerun `python -m paper_checks --resume "
                          "paper_checks/records` (reruns only the checks whose inputs changed)")


# ------------------------------------------------------------------ the mechanism, on a temporary copy


@pytest.fixture()
def copy(tmp_path):
    """A copy of the package, a sweep's figure CSV and this checkout's git-free layout, with that CSV stamped."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "mmcl_theory", tmp_path / "mmcl_theory", ignore=ignore)
    (tmp_path / "figures").mkdir()
    shutil.copy(REPO / "figures" / "caption_richness.csv", tmp_path / "figures" / "caption_richness.csv")
    P.stamp("figures/caption_richness.csv", "python -m mmcl_theory.figures --only caption_richness", root=tmp_path)
    return tmp_path


def test_stamped_artifact_is_fresh_and_a_dependency_change_makes_it_stale(copy):
    assert P.status("figures/caption_richness.csv", copy).fresh
    learners = copy / "mmcl_theory" / "learners.py"  # reached from evaluate.py: M1's learners
    learners.write_text(learners.read_text() + "\n# a change\n")
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and "mmcl_theory/learners.py" in s.why and "python -m mmcl_theory.figures" in s.why, s.why


@pytest.mark.parametrize("path, old", [
    ("mmcl_theory/sweeps/caption_richness.toml", None), ("mmcl_theory/models.py", None),
    ("mmcl_theory/sweep/plan.py", None), ("mmcl_theory/evaluate.py", None),
    ("mmcl_theory/theory.py", "def population_zero_shot_accuracy("), ("mmcl_theory/datamodel.py", "def sample_dataset("),
    ("mmcl_theory/losses.py", "def infonce_loss(")])
def test_each_number_module_is_a_dependency(copy, path, old):
    """A change anywhere in a file needed whole (the definition, plan, registry, the model's module), and in a used
    definition of a module needed in part, makes the artifact stale."""
    f = copy / path
    text = f.read_text()
    assert old is None or text.count(old) == 1, (path, old)
    f.write_text(text + "\n# a change\n" if old is None else text.replace(old, old + " "))
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and path in s.why, (path, s.why)


def test_a_comment_after_the_used_part_of_a_module_is_not(copy):
    f = copy / "mmcl_theory" / "theory.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert P.status("figures/caption_richness.csv", copy).fresh


@pytest.mark.parametrize("path", ["mmcl_theory/plotting.py", "mmcl_theory/figures.py", "mmcl_theory/sweep/cli.py",
                                  "mmcl_theory/sweep/store.py", "mmcl_theory/digits_learners.py",
                                  "mmcl_theory/paper_mnist.py", "mmcl_theory/sweeps/digits.toml"])
def test_presentation_and_other_models_code_is_not(copy, path):
    f = copy / path
    f.write_text(f.read_text() + "\n# a change\n")
    assert P.status("figures/caption_richness.csv", copy).fresh, path


def test_a_module_counts_only_the_definitions_its_importers_use(copy):
    """results.py holds the test names M1's modules import (TESTS) beside the printed table: a new or edited
    printing function leaves the artifact fresh, an edit to TESTS makes it stale."""
    f = copy / "mmcl_theory" / "results.py"
    text = f.read_text()
    assert "def format_table" in text and "TESTS = " in text
    f.write_text(text.replace("def format_table(", "def format_table(*_unused, ") + "\n\ndef shout():\n    return 1\n")
    assert P.status("figures/caption_richness.csv", copy).fresh
    f.write_text(text + "\nTESTS = TESTS[::-1]\n")  # a second definition of TESTS
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and "mmcl_theory/results.py" in s.why, s.why


def test_rewritten_csv_without_a_new_record_is_stale(copy):
    csv = copy / "figures" / "caption_richness.csv"
    csv.write_text(csv.read_text().replace("0.971101", "0.971102", 1))
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and "rewritten" in s.why


def test_missing_record_is_stale_and_a_damaged_one_is_one_line(copy):
    record = P.record_path(copy / "figures" / "caption_richness.csv")
    good = json.loads(record.read_text())
    for damage in ["", "[]", json.dumps({**good, "sources": []}), json.dumps({k: v for k, v in good.items()
                                                                             if k != "command"}),
                   json.dumps({**good, "artifact": "figures/digits.csv"}), json.dumps(good)[:40]]:
        record.write_text(damage)
        with pytest.raises(P.ProvenanceError, match="damaged"):
            P.status("figures/caption_richness.csv", copy)
    record.unlink()
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and "no provenance record" in s.why


def test_unknown_source_is_stale(copy):
    csv = copy / "figures" / "caption_richness.csv"
    P.write_record(P.make_record("figures/caption_richness.csv", csv, "cmd", [P.unknown_part("all", "stored")]), csv)
    s = P.status("figures/caption_richness.csv", copy)
    assert not s.fresh and "not recorded" in s.why


def test_cli_status_and_damaged_record_from_the_copy(copy):
    """The CLI in the copied package: a fresh artifact exits 0; after a dependency change 1 (STALE named); a
    damaged record is one line on stderr and exit code 2, no traceback."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "mmcl_theory.provenance", *a], cwd=copy,
                                    capture_output=True, text=True, timeout=120)
    r = run("status", "figures/caption_richness.csv")
    assert r.returncode == 0 and r.stdout.startswith("fresh"), r.stdout + r.stderr
    losses = copy / "mmcl_theory" / "losses.py"
    losses.write_text(losses.read_text().replace("def infonce_loss(", "def infonce_loss( "))
    r = run("status")
    assert r.returncode == 1 and "STALE" in r.stdout and "losses.py" in r.stdout, r.stdout + r.stderr
    P.record_path(copy / "figures" / "caption_richness.csv").write_text("{")
    r = run("status")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "caption_richness.provenance.json" in r.stderr and "damaged" in r.stderr
    for args, words in [(("status", "figures/none.csv"), "does not exist"),
                        (("status", "/etc/hostname"), "not inside the repository"),
                        (("inputs", "figures/other.csv"), "no dependency rule"),
                        (("status", "mmcl_theory/losses.py"), "no dependency rule"),  # was 'STALE', exit 1
                        (("stamp", "figures/caption_richness.csv", "--command", "x", "--at", "nolabel"), "LABEL=COMMIT"),
                        (("stamp", "figures/caption_richness.csv", "--command", " "), "--command is empty")]:
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_stamp_at_an_unknown_commit_is_one_line_naming_it_and_writes_nothing(capsys):
    """--at LABEL=COMMIT with a commit git does not know: one line that says so (it was git's own 'git rev-parse
    --verify --quiet ...: failed'), exit 2, and the committed record is left as it was."""
    csv = REPO / "figures" / "caption_richness.csv"
    record = P.record_path(csv)
    before = record.read_bytes()
    code = P.main(["stamp", str(csv), "--command", "x", "--at", "a=nosuchcommit"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "commit 'nosuchcommit' is not known to git" in err and "\n" not in err, err
    assert record.read_bytes() == before


def test_parts_at_named_commits(tmp_path):
    """An artifact assembled from parts run at different commits records each part's hash as committed there; it
    is fresh only when every part's equals today's (a temporary git repository with two commits)."""
    repo = tmp_path / "r"
    shutil.copytree(REPO / "mmcl_theory", repo / "mmcl_theory", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "figures").mkdir()
    shutil.copy(REPO / "figures" / "digits.csv", repo / "figures" / "digits.csv")
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo, check=True,
                                    capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    f = repo / "mmcl_theory" / "digits_learners.py"
    f.write_text(f.read_text() + "\n# changed\n")
    git("commit", "-qam", "two")
    P.stamp("figures/digits.csv", "cmd", [("part 1/2", first), ("part 2/2", "HEAD")], root=repo)
    record = P.read_record("figures/digits.csv", repo)
    hashes = {s["part"]: s["source_hash"] for s in record["sources"]}
    assert hashes["part 1/2"] != hashes["part 2/2"] and record["sources"][0]["commit"] == first
    s = P.status("figures/digits.csv", repo)
    assert not s.fresh and "part 1/2" in s.why and "digits_learners.py" in s.why and "part 2/2" not in s.why
    P.stamp("figures/digits.csv", "cmd", [("part 1/2", "HEAD"), ("part 2/2", "HEAD")], root=repo)
    assert P.status("figures/digits.csv", repo).fresh
    with pytest.raises(P.ProvenanceError, match="git"):
        P.stamp("figures/digits.csv", "cmd", [("a", "no-such-commit")], root=repo)


# ------------------------------------------------------------------ the dependency rules


def test_closure_follows_imports_anywhere_and_resolves_relative_ones(tmp_path):
    pkg = tmp_path / "mmcl_theory"
    (pkg / "sub").mkdir(parents=True)
    files = {"__init__.py": "VERSION = 1\n", "a.py": "from . import b\nfrom .sub.c import f\n",
             "b.py": "def g():\n    from mmcl_theory import d\n    import numpy\n",
             "d.py": "from . import __init__ as _\n", "sub/__init__.py": "from .. import a\n",
             "sub/c.py": "from ..e import h\n", "e.py": "x = 1\n", "z.py": "import mmcl_theory.a\n",
             "stop.py": "from . import e\n", "v.py": "from . import stop\n", "broken.py": "def (:\n"}
    for name, text in files.items():
        (pkg / name).write_text(text)
    tree = P.Tree(None, tmp_path)
    got = P.closure(["mmcl_theory/a.py"], tree)
    assert list(got) == ["mmcl_theory/__init__.py", "mmcl_theory/a.py", "mmcl_theory/b.py", "mmcl_theory/d.py",
                         "mmcl_theory/e.py", "mmcl_theory/sub/c.py"]  # sub/__init__.py: a parent, not imported by name
    assert got["mmcl_theory/a.py"] is None and got["mmcl_theory/b.py"] is None  # a root; `from . import b`
    assert got["mmcl_theory/sub/c.py"] == {"f"} and got["mmcl_theory/e.py"] == {"h"}  # from X import names
    assert list(P.closure(["mmcl_theory/v.py"], tree, not_followed=("mmcl_theory/stop.py",))) == \
        ["mmcl_theory/stop.py", "mmcl_theory/v.py"]
    with pytest.raises(P.ProvenanceError, match="broken.py"):
        P.closure(["mmcl_theory/broken.py"], tree)
    with pytest.raises(P.ProvenanceError, match="does not exist"):
        P.closure(["mmcl_theory/none.py"], tree)


def test_module_parts_keep_what_the_names_need_and_every_statement_with_an_effect(tmp_path):
    pkg = tmp_path / "mmcl_theory"
    pkg.mkdir()
    (pkg / "m.py").write_text('''"""doc"""
import math
from .n import used_by_f
K = 2
def f(x):
    return g(x) * K + used_by_f
def g(x):
    return math.sqrt(x)
def printer():
    from .p import loud
    return loud
REGISTRY = {}
REGISTRY["f"] = f
def h():
    return 0
''')
    (pkg / "n.py").write_text("used_by_f = 1\nother = 2\n")
    (pkg / "p.py").write_text("loud = 1\n")
    tree = P.Tree(None, tmp_path)
    kept, text = P.module_parts("mmcl_theory/m.py", frozenset({"f"}), tree)
    assert "def f" in text and "def g" in text and "K = 2" in text and 'REGISTRY["f"] = f' in text
    assert "REGISTRY = {}" in text and "import math" in text  # used by a kept statement; imports always run
    assert "def printer" not in text and "def h" not in text and "doc" not in text
    assert P.imports_of("mmcl_theory/m.py", tree, frozenset({"f"})) == [("mmcl_theory/n.py", {"used_by_f"})]
    assert "mmcl_theory/p.py" in dict(P.imports_of("mmcl_theory/m.py", tree, None))
    assert P.module_parts("mmcl_theory/m.py", frozenset({"nope"}), tree)[1].count("def ") == 4  # unknown: whole


def test_m1_sweep_dependency_set():
    files = P.sweep_inputs("caption_richness")
    assert files["mmcl_theory/results.py"] == {"TESTS", "make_row"} and files["mmcl_theory/evaluate.py"] is None
    assert files["mmcl_theory/grid.py"] is None  # the one runner, needed whole for every model (MODEL_MODULES)
    assert list(files) == sorted(["mmcl_theory/sweeps/caption_richness.toml", "mmcl_theory/sweep/plan.py",
                            "mmcl_theory/models.py", "mmcl_theory/evaluate.py", "mmcl_theory/grid.py",
                            "mmcl_theory/learners.py",
                            "mmcl_theory/losses.py", "mmcl_theory/datamodel.py", "mmcl_theory/theory.py",
                            "mmcl_theory/config.py", "mmcl_theory/results.py"])


def test_model_modules_hold_each_registered_model():
    """provenance.MODEL_MODULES names, per registered model, files whose closure holds the model's sampler, its
    memory estimate, its config class and every learner's fit and score (models.py's lazy imports are not
    followed, so this table is what ties a model's numbers to its code)."""
    from mmcl_theory import models

    assert set(P.MODEL_MODULES) == set(models.MODEL_NAMES)
    for name in models.MODEL_NAMES:
        m = models.get_model(name)
        closure = set(P.closure(P.MODEL_MODULES[name]))
        sample = getattr(m.sample, "func", m.sample)  # a functools.partial's function
        objects = [sample, m.memory, m.config_cls, m.settings_cls] + [
            f for learner in m.learners for f in vars(learner).values() if callable(f) and hasattr(f, "__module__")]
        for obj in objects:
            module = getattr(obj, "__module__", "") or ""
            if module.startswith("mmcl_theory"):
                path = P._module_file(module, P.Tree())
                assert path in closure, (name, obj, path)


def test_check_models_table_matches_what_each_check_names():
    """paper_checks/inputs.CHECK_MODELS against the code: the preset names (make_config's first argument, named
    settings mapped to their model) and config classes each check function, and the helpers of its module it
    calls, mention."""
    import ast

    from mmcl_theory.datamodel import NAMED_SETTINGS, PRESETS
    from paper_checks import CHECKS
    from paper_checks.inputs import CHECK_MODELS, module_of

    names = {**{p: p for p in PRESETS}, **{k: v[0] for k, v in NAMED_SETTINGS.items()}}
    classes = {"DigitsConfig": "digits", "PaperMnistConfig": "paper_mnist"}
    assert set(CHECK_MODELS) == set(CHECKS)
    for cid, fn in CHECKS.items():
        tree = ast.parse((REPO / module_of(cid)).read_text())
        funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        todo, seen, found = [fn.__name__], set(), set()
        while todo:
            f = todo.pop()
            if f in seen or f not in funcs:
                continue
            seen.add(f)
            for n in ast.walk(funcs[f]):
                if isinstance(n, ast.Constant) and n.value in names:
                    found.add(names[n.value])
                elif isinstance(n, ast.Name) and n.id in classes:
                    found.add(classes[n.id])
                elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                    todo.append(n.func.id)
        assert found == set(CHECK_MODELS[cid]), (cid, found, CHECK_MODELS[cid])


def test_check_inputs_cover_the_check_and_not_the_report():
    from paper_checks.inputs import check_files

    for cid, own in [("T4.3", "paper_checks/theorems.py"), ("TAU", "paper_checks/temperature.py"),
                     ("C2", "paper_checks/checks.py"), ("G1", "paper_checks/check_g1.py")]:
        files = check_files(cid)
        assert own in files and "paper_checks/common.py" in files and "mmcl_theory/models.py" in files, cid
        assert "paper_checks/report.py" not in files and "paper_checks/__main__.py" not in files, cid
        others = {"paper_checks/theorems.py", "paper_checks/temperature.py", "paper_checks/checks.py",
                  "paper_checks/check_g1.py"} - {own}
        assert not others & set(files), (cid, others & set(files))
    assert "mmcl_theory/evaluate.py" in check_files("C2") and "mmcl_theory/digits_learners.py" in check_files("C7")
    assert "figures/paper_mnist.csv" in check_files("G1")


def test_sweep_runs_folder_of_other_code_is_refused_and_stored_rows_are_unknown(tmp_path):
    """figures' fresh run writes the source hash beside its points (runs/figures/NAME/provenance.json) and refuses a
    folder whose points were computed with other or unknown code; rows read back (--from) take that marker's
    source, and without one they are recorded as of unknown code (stale)."""
    out = tmp_path / "caption_richness"
    started = P.begin_sweep_run("caption_richness", out)
    assert started["source_hash"] == P.source_hash(P.sweep_inputs("caption_richness"))[0]
    (out / "points.jsonl").write_text("")
    assert P.begin_sweep_run("caption_richness", out)["source_hash"] == started["source_hash"]  # same code: resume
    assert P.stored_part(out / "results.json")["source_hash"] == started["source_hash"]
    marker = json.loads((out / P.RUN_MARKER).read_text())
    (out / P.RUN_MARKER).write_text(json.dumps({**marker, "source_hash": "0" * 16}))
    with pytest.raises(P.ProvenanceError, match="computed with source 0000000000000000"):
        P.begin_sweep_run("caption_richness", out, write=False)
    (out / P.RUN_MARKER).unlink()
    with pytest.raises(P.ProvenanceError, match="unknown source"):
        P.begin_sweep_run("caption_richness", out)
    assert P.stored_part(out / "results.json")["source_hash"] is None
    assert P.end_sweep_run("caption_richness", {**started, "source_hash": "x", "files": {}})["source_hash"] is None


def test_source_segment_is_ast_get_source_segment_on_every_node_of_the_package():
    """provenance.source_segment (lines split once) gives exactly ast.get_source_segment's text (which splits the
    whole file at every call) for every top-level statement of every module here (what module_parts hashes) and for
    every node of small texts with non-ASCII characters and \r\n and \r line ends, so the source hashes do not
    depend on which of the two computed them."""
    import ast

    cases = [(p.read_text(encoding="utf-8"), False) for p in sorted((REPO / "mmcl_theory").rglob("*.py"))]
    cases += [("x = 'é'  # ü\r\ny = (1,\r\n     2)\rz = f(y,\n      'ß')\n", True), ("def f():\n    return 1", True)]
    for text, every_node in cases:
        lines, module = P.source_lines(text), ast.parse(text)
        for node in (ast.walk(module) if every_node else module.body):
            if isinstance(node, (ast.stmt, ast.expr)):
                assert P.source_segment(lines, node) == (ast.get_source_segment(text, node) or ""), ast.dump(node)[:80]


def test_report_state_says_as_committed_when_a_checks_files_are_unchanged():
    """REPORT.md's 'Inputs:' line says where a check's files stand against HEAD; a module hashed by the parts the
    check needs must be compared with HEAD's same parts (a whole-file digest called every such module changed,
    even in a clean checkout). Checks whose files have no uncommitted change here must read 'as committed'."""
    from paper_checks import CHECKS
    from paper_checks.inputs import check_inputs, committed_state

    head = P.head_commit()
    if head is None:
        pytest.skip("not a git checkout")
    dirty = set(subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.split())
    tree, clean = P.Tree(head), 0
    for cid in CHECKS:
        files = check_inputs(cid)["files"]
        if dirty & set(files):
            continue
        clean += 1
        assert committed_state(cid, files, tree).startswith("its input files as committed in HEAD"), cid
    assert clean or dirty, "no check to test"
