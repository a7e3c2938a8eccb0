"""The package's layout keeps its promises: dvc.yaml's deps are the import closure of each stage (so editing
a module reruns exactly the stages that run it), commands never import each other, and package
``__init__.py`` files run nothing."""

import ast
import json
import re
import shutil

import pytest
import yaml

from tests.imports import PACKAGE, REPO, closure, import_cycles, import_graph, module_file, stage_deps, stage_modules

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


def test_the_package_has_no_import_cycles():
    """No module of the package imports itself through others, lazily or not: what two modules share lives in
    a third that both import (STYLE.md 16)."""
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles in the package:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_import_cycles_are_found_and_named(tmp_path):
    """Known answer on a throwaway package: a cycle through a lazy import and a longer one are each named,
    from their first module round to it; a module that is merely imported twice is not a cycle."""
    root = tmp_path
    (root / PACKAGE / "sub").mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text('"""pkg"""\n')
    (root / PACKAGE / "sub" / "__init__.py").write_text('"""sub"""\n')
    (root / PACKAGE / "sub" / "a.py").write_text("from stages.sub.b import g\n")
    (root / PACKAGE / "sub" / "b.py").write_text("def g():\n    from stages.sub import a\n    return a\n")
    (root / PACKAGE / "sub" / "c.py").write_text("import stages.sub.d\nimport stages.sub.a\n")
    (root / PACKAGE / "sub" / "d.py").write_text("from stages.sub.e import x\n")
    (root / PACKAGE / "sub" / "e.py").write_text("import stages.sub.c\nx = 1\n")
    (root / PACKAGE / "sub" / "f.py").write_text("import stages.sub.e\nimport stages.sub.d\n")
    assert import_cycles(import_graph(root)) == [["stages.sub.a", "stages.sub.b", "stages.sub.a"],
                                                 ["stages.sub.c", "stages.sub.d", "stages.sub.e", "stages.sub.c"]]


# --------------------------------------------------------------------------- the parentage command
def _defines_main(path) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in ast.parse(path.read_text()).body)


def test_every_command_module_is_a_parentage_command():
    """Each top-level module of the package that defines `main` (cli aside: its `main` is the group's callback)
    is reachable as `parentage <module>`, and runs that module's own command."""
    from typer.testing import CliRunner

    from stages import cli

    expected = {name for name in COMMANDS if name != "cli" and _defines_main(REPO / PACKAGE / f"{name}.py")}
    assert "detect" in expected and "clusters" in expected  # known answers: a tool and a stage
    listed = CliRunner().invoke(cli.app, ["--help"])
    assert listed.exit_code == 0, listed.output
    missing = sorted(name for name in expected if f" {name} " not in listed.output)
    assert not missing, f"stages/{missing[0]}.py defines main, but `parentage --help` does not list it"
    for name in sorted(expected):
        shown = CliRunner().invoke(cli.app, [name, "--help"], prog_name="parentage")
        text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", shown.output).split())  # without Rich's boxes and wrapping
        own = ast.get_docstring(next(node for node in ast.parse((REPO / PACKAGE / f"{name}.py").read_text()).body
                                     if isinstance(node, ast.FunctionDef) and node.name == "main"))
        assert shown.exit_code == 0 and f"parentage {name} " in text, f"`parentage {name}` does not run"
        assert " ".join(own.split()[:6]) in text, f"`parentage {name}` is not stages/{name}.py's command"


def test_a_new_command_module_needs_no_line_in_the_cli(tmp_path):
    """In a copy of the package, a module with a Typer `main` added is `parentage <module>` at once; a module
    without one is not a command."""
    import subprocess
    import sys

    shutil.copytree(REPO / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / PACKAGE / "zz_new.py").write_text(
        '"""zz_new: a stage added by the test."""\nimport typer\n\napp = typer.Typer()\n\n\n'
        '@app.command()\ndef main(name: str = typer.Option(...)) -> None:\n    """Greet."""\n'
        '    typer.echo(f"hello {name}")\n')
    (tmp_path / PACKAGE / "zz_helper.py").write_text('"""Not a command."""\n\ndef main() -> None:\n    pass\n')

    def parentage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", f"{PACKAGE}.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, env={"PATH": "", "COLUMNS": "200", "TERM": "dumb"})

    listed = parentage("--help")
    assert listed.returncode == 0, listed.stderr
    assert " zz_new " in listed.stdout, "a module with a Typer main added to the package is not a parentage command"
    assert "zz_helper" not in listed.stdout, "a module whose main is not a Typer command is listed"
    ran = parentage("zz_new", "--name", "you")
    assert ran.returncode == 0 and ran.stdout.strip() == "hello you", ran.stdout + ran.stderr


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
