"""The package's layout keeps its promises: dvc.yaml's deps are the import closure of each stage (so editing
a module reruns exactly the stages that run it), commands never import each other, and package
``__init__.py`` files run nothing."""

import ast
import json
import shutil

import pytest
import yaml

from tests.imports import PACKAGE, REPO, closure, module_file, stage_deps, stage_modules

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
COMMANDS = sorted(p.stem for p in (REPO / PACKAGE).glob("*.py") if p.name != "__init__.py")


def test_every_stage_lists_exactly_the_modules_it_runs():
    modules, deps = stage_modules(DVC_YAML), stage_deps(DVC_YAML)
    problems = []
    for stage, module in modules.items():
        needed = closure(module)
        listed = {d for d in deps[stage] if d.endswith(".py")}
        problems += [f"{stage}: add `- {path}` to its deps" for path in sorted(needed - listed)]
        problems += [f"{stage}: `- {path}` is listed but not imported" for path in sorted(listed - needed)]
    assert not problems, "dvc.yaml deps out of step with the imports (python -m tests.imports):\n" + "\n".join(
        problems)


def test_package_deps_are_files_not_folders():
    # a folder dependency would rerun a stage for a module it never imports
    folders = [(stage, d) for stage, listed in stage_deps(DVC_YAML).items() for d in listed
               if (REPO / d).is_dir()]
    assert not folders


def test_commands_never_import_other_commands():
    offenders = []
    for name in COMMANDS:
        if name == "cli":  # the umbrella command gathers the others by design
            continue
        for node in ast.walk(ast.parse((REPO / PACKAGE / f"{name}.py").read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            offenders += [f"stages.{name} imports {t}" for t in targets
                          if t.count(".") == 1 and t.split(".")[0] == PACKAGE and t.split(".")[1] in COMMANDS]
    assert not offenders


def test_package_inits_hold_only_a_docstring():
    for init in (REPO / PACKAGE).rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init


def test_closure_follows_lazy_and_indirect_imports(tmp_path):
    """Known answer on a throwaway package: a function-level import and an import through another module
    are both in the closure; a module nobody imports is not."""
    root = tmp_path
    (root / PACKAGE / "sub").mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text('"""pkg"""\n')
    (root / PACKAGE / "sub" / "__init__.py").write_text('"""sub"""\n')
    (root / PACKAGE / "cmd.py").write_text("from stages.sub import a\n")
    (root / PACKAGE / "sub" / "a.py").write_text("def f():\n    from stages.sub.b import g\n    return g\n")
    (root / PACKAGE / "sub" / "b.py").write_text("import stages.sub.c\n")
    (root / PACKAGE / "sub" / "c.py").write_text("x = 1\n")
    (root / PACKAGE / "sub" / "unused.py").write_text("x = 2\n")
    assert closure("stages.cmd", root) == {"stages/cmd.py", "stages/sub/a.py", "stages/sub/b.py", "stages/sub/c.py"}
    assert module_file("stages.sub.unused", root) is not None


# ------------------------------------------------------------------------------- what DVC itself sees
def _changed_by(status: dict, path: str) -> set[str]:
    """Stage instances whose `dvc status --json` entry lists `path` among its changed deps."""
    changed = set()
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict) and path in entry.get("changed deps", {}):
                changed.add(stage)
    return changed


@pytest.mark.slow
@pytest.mark.parametrize("helper", ["stages/contracts/labels.py", "stages/study/distances.py",
                                    "stages/imaging/transforms.py"])
def test_editing_a_helper_marks_exactly_its_importers_changed(dvc_repo, helper):
    """In a copy of the pipeline with the repository's dvc.lock, append a comment to one helper module: the
    stage instances `dvc status` reports it changed for are exactly those whose command imports it."""
    repo = dvc_repo.path
    shutil.copy(REPO / "dvc.lock", repo / "dvc.lock")
    with (repo / helper).open("a") as handle:
        handle.write("# edited by the test\n")
    status = json.loads(dvc_repo("dvc", "status", "--json"))
    instances = [line for line in dvc_repo("dvc", "stage", "list", "--name-only").split()]
    modules = stage_modules(DVC_YAML)
    expected = {name for name in instances if helper in closure(modules[name.split("@")[0]])}
    assert expected, f"no stage imports {helper}: pick a helper that is used"
    assert _changed_by(status, helper) == expected


def test_dvc_accepts_dvc_yaml():
    """DVC's own schema check (a stage-level plot with a list of y, for one, parses as YAML but DVC refuses it)."""
    import subprocess
    import sys
    from pathlib import Path

    dvc = Path(sys.executable).parent / "dvc"
    done = subprocess.run([str(dvc), "stage", "list"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
