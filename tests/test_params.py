"""params.yaml is the one source of every value the pipeline runs with: each option dvc.yaml passes to a stage
command is required by that command (so no second default can disagree with params.yaml), dvc.yaml passes
no option a command lacks, and list params reach the commands as repeated options.

Commands are rendered by DVC's own resolver (dvc.parsing, with the repository's `.dvc/config` parsing
settings) and parsed by the commands' own click interface, without running them."""

import ast
import copy
import difflib
import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
import yaml

from tests.imports import PACKAGE, REPO

# Options a stage command declares that dvc.yaml does not pass: runtime knobs that decide speed or placement,
# never results (STYLE.md 18). Each keeps a default and reads an environment variable (docs/runtime.md, "Runtime
# settings"), so changing one changes nothing DVC tracks and reruns nothing.
RUNTIME_KNOBS = {
    "stages.clusters": {"workers": None},  # threads checking images; results come back in input order
    "stages.embed": {"batch_size": "PARENTAGE_EMBED_BATCH_SIZE", "chunk_size": "PARENTAGE_EMBED_CHUNK_SIZE",
                     "workers": "PARENTAGE_EMBED_WORKERS", "threads": "PARENTAGE_EMBED_THREADS",
                     "device": "PARENTAGE_EMBED_DEVICE"},
    # generate's hub: downloads only for a person running the command by hand (default offline); under DVC the
    # model folder is a dependency, so it exists and the stage runs offline
    "stages.generate": {"batch_size": "PARENTAGE_GENERATE_BATCH_SIZE", "device": "PARENTAGE_GENERATE_DEVICE",
                        "hub": None},
    "stages.disentangle_train": {"device": "PARENTAGE_DISENTANGLE_DEVICE"},
    # keep_checkpoints: disk, not results (the checkpoints are resume state, not an output)
    "stages.code_train": {"workers": "PARENTAGE_CODE_TRAIN_WORKERS", "threads": "PARENTAGE_CODE_TRAIN_THREADS",
                          "keep_checkpoints": "PARENTAGE_CODE_TRAIN_KEEP_CHECKPOINTS"},
    "stages.code_eval": {"batch_size": "PARENTAGE_CODE_EVAL_BATCH_SIZE", "workers": "PARENTAGE_CODE_EVAL_WORKERS",
                         "threads": "PARENTAGE_CODE_EVAL_THREADS", "device": "PARENTAGE_CODE_EVAL_DEVICE"},
    "stages.detector": {"batch_size": "PARENTAGE_DETECTOR_BATCH_SIZE", "workers": "PARENTAGE_DETECTOR_WORKERS",
                        "device": "PARENTAGE_DETECTOR_DEVICE"},
    "stages.benchmark": {"batch_size": "PARENTAGE_BENCHMARK_BATCH_SIZE", "workers": "PARENTAGE_BENCHMARK_WORKERS",
                         "device": "PARENTAGE_BENCHMARK_DEVICE"},
    # not a DVC stage (a person scoring their own images), but its knobs are read as the stages' are
    "stages.detect": {"batch_size": "PARENTAGE_DETECT_BATCH_SIZE", "workers": "PARENTAGE_DETECT_WORKERS",
                      "device": "PARENTAGE_DETECT_DEVICE"},
}
# the arguments a command outside dvc.yaml is parsed with
OUTSIDE_DVC = {"stages.detect": ["photo.jpg"]}
# the launcher generate runs under is the command's first word, a shell default in dvc.yaml
LAUNCHER = "PARENTAGE_GENERATE_LAUNCHER"
# click's UsageError (unknown option, missing required option, bad value) as typer vendors it (typer._click)
UsageError = typer.BadParameter.__base__


def render(root: Path = REPO) -> dict[str, tuple[str, list[str]]]:
    """{stage instance: (command module, its arguments)} as DVC renders dvc.yaml with root's params.yaml."""
    from configobj import ConfigObj
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    parsing = dict(ConfigObj(str(root / ".dvc" / "config")).get("parsing", {}))
    repo = SimpleNamespace(fs=LocalFileSystem(), config={"parsing": parsing})
    resolved = DataResolver(repo, str(root), yaml.safe_load((root / "dvc.yaml").read_text())).resolve()
    commands = {}
    for name, stage in resolved["stages"].items():
        words = shlex.split(stage["cmd"])
        at = next(i for i, word in enumerate(words[:-1]) if word == "-m" and words[i + 1].startswith(f"{PACKAGE}."))
        commands[name] = (words[at + 1], words[at + 2:])
    return commands


def command_of(module: str):
    return typer.main.get_command(importlib.import_module(module).app)


def parse(module: str, args: list[str]):
    """The command's click context for `args` (raises UsageError as the command line would)."""
    return command_of(module).make_context(module, list(args))


def empty_list_default(param) -> bool:
    """A repeated option whose default is the empty list. DVC renders an empty YAML list as no option at all
    (`${group}` unpacking writes one `--key item` per item), so where a list param may legitimately be empty
    (embed.backbones: only model.backbone studied) the command must default to [] instead of requiring it; that
    default cannot disagree with params.yaml, since any item in params.yaml is passed."""
    return bool(getattr(param, "multiple", False)) and param.default == []


def passed_and_defaulted(module: str, args: list[str]) -> tuple[set[str], set[str]]:
    """(options `args` pass that have a default, options `args` leave to their default); repeated options whose
    default is the empty list count as neither (empty_list_default)."""
    context = parse(module, args)
    command = command_of(module)
    params = [p for p in command.params if not empty_list_default(p)]
    given = {p.name for p in params if context.get_parameter_source(p.name).name == "COMMANDLINE"}
    with_default = {p.name for p in params if p.name in given and not p.required}
    left = {p.name for p in params if p.name not in given and p.name != "help"}
    return with_default, left


COMMANDS = render()


@pytest.mark.parametrize("instance", sorted(COMMANDS))
def test_dvc_yaml_passes_every_option_and_each_is_required(instance):
    module, args = COMMANDS[instance]
    try:
        with_default, left = passed_and_defaulted(module, args)
    except UsageError as error:  # an option the command lacks, a required one missing, a bad value
        pytest.fail(f"dvc.yaml's {instance} renders a command {module} refuses: {error.format_message()}")
    assert not with_default, (f"dvc.yaml's {instance} passes {sorted(with_default)}, which {module} also defaults: "
                              "make them required (typer.Option(...)) so params.yaml is their one source")
    assert left == set(RUNTIME_KNOBS.get(module, {})), (
        f"{module} has options dvc.yaml does not pass: {sorted(left)}; pass them from params.yaml, or (a pure "
        "runtime knob) list them in RUNTIME_KNOBS")


def test_the_required_rule_sees_a_default():
    """Known answer for the check above: an option with a default is reported when passed, and left alone
    otherwise."""
    module, args = COMMANDS["clusters"]
    assert passed_and_defaulted(module, [*args, "--workers", "2"]) == ({"workers"}, set())


def test_only_repeated_options_may_default_to_the_empty_list():
    """The exception above is exactly a list option whose default is []: a scalar default, or a list default with
    items, is still reported."""
    modules = {module for module, _ in COMMANDS.values()}
    excepted = {(m, p.name) for m in modules for p in command_of(m).params if empty_list_default(p)}
    # embed.backbones empty: only model.backbone studied; generate.generators empty: every children set imported;
    # benchmark's transforms empty: the clean images only; select's fit: only code_eval's selection has a fit list
    assert excepted == {("stages.check", "embed_backbones"), ("stages.check", "generate_generators"),
                        ("stages.benchmark", "transforms"), ("stages.select", "fit")}
    module, args = COMMANDS["check@setting0"]
    at = args.index("--embed-backbones")  # the demo lists one backbone, so it is passed ...
    without = args[:at] + args[at + 2:]  # ... and an empty embed.backbones renders no option: still a valid command
    assert "--embed-backbones" not in without and passed_and_defaulted(module, without) == (set(), set())
    assert parse(module, without).params["embed_backbones"] == []


def repeated(args: list[str], option: str) -> list[str]:
    """The values of every `option value` pair in args, in order."""
    return [args[i + 1] for i, word in enumerate(args[:-1]) if word == option]


def test_list_params_reach_the_commands_as_repeated_options():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _, train = COMMANDS["code_train"]
    assert repeated(train, "--generators") == params["code_train"]["data"]["generators"]
    module, evaluate = COMMANDS["code_eval"]
    data, robustness = params["code_eval"]["data"], params["code_eval"]["robustness"]
    assert repeated(evaluate, "--generators") == data["generators"] == ["tiny_random"]
    assert repeated(evaluate, "--fit") == data["fit"]
    assert repeated(evaluate, "--transforms") == robustness["transforms"]
    assert len(robustness["transforms"]) > 1  # each transform is its own option, never one joined word
    context = parse(module, evaluate)
    assert context.params["generators"] == data["generators"]
    assert [t.value for t in context.params["transforms"]] == robustness["transforms"]
    _, detector = COMMANDS["detector"]
    assert repeated(detector, "--transforms") == params["detector"]["robustness"]["transforms"]


def test_several_generators_become_one_option_each(tmp_path):
    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["code_train"]["data"]["generators"] = ["tiny_random", "sd14"]
    params["code_eval"]["data"] = {"generators": ["sd14", "tiny_random"], "fit": ["sd14"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    commands = render(tmp_path)
    module, train = commands["code_train"]
    assert parse(module, train).params["generators"] == ["tiny_random", "sd14"]
    module, evaluate = commands["code_eval"]
    context = parse(module, evaluate)
    assert (context.params["generators"], context.params["fit_generators"]) == (["sd14", "tiny_random"], ["sd14"])


# ----------------------------------------------------------------- examples a person copies: they must run
def examples(text: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of each `... -m stages.<name> ...` command in `text` (backslash continuations
    joined), whatever launches it; commands abbreviated with `...` are left out."""
    found = []
    for match in re.finditer(r"-m (stages\.\w+)((?:[^\n]*\\\n)*[^\n]*)", text):
        args = match.group(2).replace("\\\n", " ")
        if "..." not in args:
            found.append((match.group(1), shlex.split(args)))
    return found


def stage_docstrings() -> dict[str, str]:
    modules = {module for module, _ in COMMANDS.values()}
    return {m: ast.get_docstring(ast.parse((REPO / f"{m.replace('.', '/')}.py").read_text())) or "" for m in modules}


@pytest.mark.parametrize("module", sorted({module for module, _ in COMMANDS.values()}))
def test_each_stage_docstring_example_parses(module):
    found = [args for name, args in examples(stage_docstrings()[module]) if name == module]
    assert found, f"{module}'s docstring has no runnable `python -m {module} ...` example"
    for args in found:
        try:
            parse(module, args)
        except UsageError as error:
            pytest.fail(f"{module}'s docstring example does not run as written: {error.format_message()}")


def test_readme_and_docs_stage_commands_parse():
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for page in pages:
        blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.DOTALL)
        for module, args in examples("".join(blocks)):
            try:
                parse(module, args)
            except UsageError as error:
                pytest.fail(f"{page.relative_to(REPO)}: `python -m {module}` does not run as written: "
                            f"{error.format_message()}")


# --------------------------------------------------------------------------------- what DVC itself does
@pytest.mark.slow
def test_dvc_renders_list_params_and_exp_run_sets_them(dvc_repo):
    """`dvc repro --dry` prints code_eval's command with one option per list item, and `dvc exp run -S` with
    a YAML list (the documented syntax) changes them."""
    for dep in ("data/code/model.pt", "data/clusters.parquet", "data/selections/code_eval.json"):
        (dvc_repo.path / dep).parent.mkdir(parents=True, exist_ok=True)
        (dvc_repo.path / dep).write_bytes(b"stand-in: a dry run only checks that the dependencies exist")
    dvc_repo("git", "add", "-A")  # committed, so the copy `dvc exp run` works in holds them
    dvc_repo("git", "commit", "-qm", "stand-in dependencies")
    shown = dvc_repo("dvc", "repro", "--dry", "--single-item", "code_eval")
    line = next(line for line in shown.splitlines() if "stages.code_eval" in line)
    assert "--generators tiny_random --fit tiny_random --transforms jpeg95 --transforms jpeg75" in line
    shown = dvc_repo("dvc", "exp", "run", "--dry", "--single-item", "code_eval", "-S",
                     "code_eval.data.generators=[tiny_random,sd14]", "-S", "code_eval.robustness.transforms=[crop]")
    line = next(line for line in shown.splitlines() if "stages.code_eval" in line)
    [(module, args)] = examples(line)
    context = parse(module, args)
    assert context.params["generators"] == ["tiny_random", "sd14"]
    assert [t.value for t in context.params["transforms"]] == ["crop"]


# ------------------------------------------------------------ params.yaml as `dvc exp run -S` rewrites it
# DVC writes each -S value back through ruamel's round-trip writer (dvc.utils.hydra.apply_overrides) after replacing
# every list in the file with a plain one: a flow list `[a, b]` comes back in block style, and a comment or blank line
# after a block list's last item (ruamel keeps it on that item) is dropped. So params.yaml writes lists in block
# style, their comments above the key, and never ends a section with a list; then a -S touches the lines of its key.
def owned_lines(text: str) -> list[tuple[str, object, int, int]]:
    """(dotted key, value, first line, last line) of each value `-S` can set (scalars, lists, empty mappings), 0-based:
    the key's line, its end-of-line comment's continuation lines and its list items (not the comments above it)."""
    from ruamel.yaml import YAML

    lines = text.splitlines()
    found = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, f"{name}.")
                continue
            start, column = node.lc.key(key)
            end = value.lc.item(len(value) - 1)[0] if isinstance(value, list) and value else start
            while end + 1 < len(lines) and lines[end + 1].lstrip().startswith("#") and (
                    lines[end + 1].index("#") > column):
                end += 1
            found.append((name, value, start, end))

    walk(YAML().load(text), "")
    return found


def new_values(value) -> list[tuple[str, object]]:
    """(what -S is given, the value params.yaml must then hold) for a few changes of `value`."""
    if isinstance(value, list):
        return [("[changed,other]", ["changed", "other"]), ("[]", [])]
    if isinstance(value, dict):  # an empty mapping (import_children.sets): an entry is added with Hydra's +
        return [("+x={layout: cocofake, root: r}", {"x": {"layout": "cocofake", "root": "r"}})]
    if isinstance(value, bool):
        return [(str(not value).lower(), not value)]
    if isinstance(value, int | float):
        return [(repr(value + 1), value + 1)]
    return [("changed", "changed")]


def test_params_yaml_has_no_flow_style_collections():
    """A flow list `[a, b]` comes back from any `dvc exp run -S` in block style (a 43-line diff for one value); an
    empty `{}` or `[]` has no block form and DVC keeps it."""
    from ruamel.yaml import YAML

    flow = []

    def walk(node, name: str) -> None:
        if isinstance(node, dict | list):
            if node and node.fa.flow_style():
                flow.append(f"{name} (line {node.lc.line + 1})")
            for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
                walk(value, f"{name}.{key}" if name else str(key))

    walk(YAML().load((REPO / "params.yaml").read_text()), "")
    assert not flow, f"params.yaml writes these in flow style; write them in block style (- item): {flow}"


def test_dvc_set_param_rewrites_only_the_lines_of_its_key(tmp_path):
    """Every value params.yaml holds, set through DVC's own -S writer: the file still parses, holds the new value,
    and only the lines its key owns change (a scalar: its one line)."""
    from dvc.utils.hydra import apply_overrides
    from ruamel.yaml import YAML

    text = (REPO / "params.yaml").read_text()
    original, path, wrong = YAML(typ="safe").load(text), tmp_path / "params.yaml", []
    for name, value, start, end in owned_lines(text):
        for given, expected in new_values(value):
            path.write_text(text)
            override = f"+{name}.{given[1:]}" if given.startswith("+") else f"{name}={given}"
            apply_overrides(path, [override])
            after = path.read_text()
            try:
                data = YAML(typ="safe").load(after)
            except Exception as error:  # noqa: BLE001 (ruamel raises several kinds; any of them is the finding)
                wrong.append(f"-S {override}: params.yaml no longer parses ({type(error).__name__})")
                continue
            *parents, last = name.split(".")
            want = copy.deepcopy(original)
            node = want
            for key in parents:
                node = node[key]
            node[last] = expected
            if data != want:
                wrong.append(f"-S {override}: params.yaml holds other values than the one set")
            matcher = difflib.SequenceMatcher(None, text.splitlines(), after.splitlines(), autojunk=False)
            edits = [(i1, i2) for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal"]
            outside = [f"{i1 + 1}-{i2}" if i2 > i1 else f"after {i1}" for i1, i2 in edits if i1 < start or i2 > end + 1]
            if outside:
                wrong.append(f"-S {override} rewrites lines {outside} (its key owns {start + 1}-{end + 1})")
            elif not isinstance(value, list | dict) and edits != [(start, start + 1)]:
                wrong.append(f"-S {override} changes lines {edits} instead of its one line {start + 1}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_exp_run_set_param_changes_only_the_lines_of_its_key(dvc_repo):
    """The same through `dvc exp run -S` itself (of the check stage, which runs in a second): a scalar changes its
    one line, a list its items, every other line of params.yaml keeps its bytes."""
    path = dvc_repo.path / "params.yaml"
    before = path.read_text()
    lines = before.splitlines(keepends=True)
    owned = {name: (value, start, end) for name, value, start, end in owned_lines(before)}
    steps, at, _ = owned["probe.c_steps"]
    transforms, first, last = owned["code_eval.robustness.transforms"]
    assert isinstance(transforms, list) and len(transforms) > 2
    expected = list(lines)
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    expected[first + 1: last + 1] = [f"{indent}- crop\n", f"{indent}- half\n"]
    expected[at] = lines[at].replace(f"c_steps: {steps}", f"c_steps: {steps + 1}", 1)
    assert expected[at] != lines[at]
    dvc_repo("dvc", "exp", "run", "-S", f"probe.c_steps={steps + 1}",
             "-S", "code_eval.robustness.transforms=[crop,half]", "check")
    after = path.read_text()
    assert after == "".join(expected), "".join(difflib.unified_diff(lines, after.splitlines(keepends=True), n=0))


# ---------------------------------------------------------------------------- make paper when it fails
def paper_repo(dvc_repo) -> Path:
    """dvc_repo with the Makefile and its scripts committed."""
    shutil.copy(REPO / "Makefile", dvc_repo.path / "Makefile")
    shutil.copytree(REPO / "scripts", dvc_repo.path / "scripts")
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "make")
    return dvc_repo.path


@pytest.mark.slow
def test_a_make_paper_that_fails_before_any_stage_leaves_the_workspace_as_it_was(dvc_repo, tmp_path):
    """With COCO missing the check stage stops the run: make fails, the check's message says what is missing, and
    every tracked file (params.yaml above all: DVC wrote the paper's values into it) is as it was, so `make demo`
    still runs the demo. The Makefile runs with this interpreter's environment (`-o` its install stamp: no pip)."""
    repo = paper_repo(dvc_repo)
    before = (repo / "params.yaml").read_bytes()
    venv = Path(sys.prefix)
    done = subprocess.run(["make", "-o", f"{venv}/.installed", "paper", f"VENV={venv}", f"COCO={tmp_path / 'no_coco'}"],
                          cwd=repo, env=dvc_repo.env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "nothing has run" in output and "no_coco" in output, output  # the check stage's message
    assert dvc_repo("git", "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / "params.yaml").read_bytes() == before
    assert "params.yaml is back as it was" in output, output


@pytest.mark.slow
def test_a_run_that_fails_after_a_stage_ran_keeps_its_setting(dvc_repo):
    """Once DVC has recorded a stage (here check and demo_parents, before clusters refuses the fraction), the -S
    values stay in params.yaml, so running the same command again resumes instead of starting over."""
    repo = paper_repo(dvc_repo)
    done = subprocess.run(["scripts/exp_run.sh", "-S", "clusters.val_fraction=0.9", "clusters"], cwd=repo,
                          env=dvc_repo.env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "keeps the run's setting" in output, output
    diff = dvc_repo("git", "diff", "-U0", "params.yaml")
    assert [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")] == [
        "-  val_fraction: 0.2", "+  val_fraction: 0.9"]


@pytest.mark.parametrize("module, option, variable",
                         [(m, o, v) for m, knobs in sorted(RUNTIME_KNOBS.items()) for o, v in knobs.items() if v])
def test_runtime_knobs_are_environment_variables_dvc_never_sees(module, option, variable, monkeypatch):
    """Each runtime knob keeps a default, is read from its environment variable, appears nowhere in params.yaml,
    and setting it leaves every stage DVC renders (command, deps, params) unchanged: `dvc status` stays clean."""
    command = command_of(module)
    param = next(p for p in command.params if p.name == option)
    assert not param.required and variable in (param.envvar if isinstance(param.envvar, list) else [param.envvar])
    section = module.removeprefix(f"{PACKAGE}.")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert option not in params.get(section, {}), f"params.yaml still holds {section}.{option}"

    before = _stages()
    value = "cpu" if option == "device" else "3"
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv(LAUNCHER, "accelerate launch --num_processes 2")
    assert _stages() == before
    context = parse(module, arguments(module))
    assert str(context.params[option]) == value and context.get_parameter_source(option).name == "ENVIRONMENT"


def arguments(module: str) -> list[str]:
    """A valid command line of `module`: as dvc.yaml renders it, or OUTSIDE_DVC's for a command DVC never runs."""
    rendered = [args for m, args in COMMANDS.values() if m == module]
    return rendered[0] if rendered else OUTSIDE_DVC[module]


def parallel_knobs() -> list[tuple[str, str, str | None]]:
    """(module, option, variable or None) of every thread and worker option of every command."""
    from stages.cli import COMMANDS as CLI

    return [(module, p.name, p.envvar) for _, module in CLI for p in command_of(module).params
            if p.name in ("workers", "threads")]


def test_every_parallel_knob_is_checked():
    """The bound test below sees every thread and worker option: those of the stages and detect's."""
    knobs = {(m, o) for m, o, _ in parallel_knobs()}
    assert {("stages.embed", "threads"), ("stages.detect", "workers"), ("stages.clusters", "workers"),
            ("stages.code_train", "threads"), ("stages.benchmark", "workers")} <= knobs
    assert all(m in OUTSIDE_DVC or any(m == r for r, _ in COMMANDS.values()) for m, _ in knobs)


@pytest.mark.parametrize(("module", "option", "variable"), parallel_knobs())
def test_a_thread_or_worker_count_above_the_machine_is_refused_naming_it(module, option, variable, monkeypatch):
    """PARENTAGE_EMBED_THREADS=100000 exhausted the process limit (a segfault): every thread and worker knob,
    from its variable or its option, is refused above the machine's cores times FACTOR, naming the option, the
    variable and the bound; the bound itself is accepted."""
    from stages.contracts.runtime import most_parallel

    flag = "--" + option.replace("_", "-")
    for value in ("100000", str(most_parallel() + 1)):
        if variable:
            monkeypatch.setenv(variable, value)
            args = arguments(module)
        else:
            args = [*arguments(module), flag, value]
        with pytest.raises(UsageError) as error:
            parse(module, args)
        text = error.value.format_message()
        assert f"'{flag}'" in text and f"{value} is above {most_parallel()}" in text, text
        assert variable is None or variable in text, text
    args = [*arguments(module), flag, str(most_parallel())]
    assert parse(module, args).params[option] == most_parallel()


@pytest.mark.parametrize("module, variable, value, allowed", [
    ("stages.disentangle_train", "PARENTAGE_DISENTANGLE_DEVICE", "tpu9", "auto, cpu, cuda, cuda:<index>, mps"),
    ("stages.embed", "PARENTAGE_EMBED_DEVICE", "cuda", "auto, cpu")])
def test_a_bad_device_from_the_environment_is_refused_naming_it(module, variable, value, allowed, monkeypatch):
    """A device set in the environment is checked as the option is: a usage error naming the option, the
    variable it came from, the value and what is allowed, before any work starts."""
    monkeypatch.setenv(variable, value)
    instance = next(name for name, (m, _) in COMMANDS.items() if m == module)
    with pytest.raises(UsageError) as error:
        parse(module, COMMANDS[instance][1])
    text = error.value.format_message()
    assert "'--device'" in text and variable in text and repr(value) in text and f"allowed: {allowed}" in text, text


def _stages() -> dict:
    """Every stage as DVC renders it from dvc.yaml and params.yaml (what dvc.lock records)."""
    from configobj import ConfigObj
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    parsing = dict(ConfigObj(str(REPO / ".dvc" / "config")).get("parsing", {}))
    repo = SimpleNamespace(fs=LocalFileSystem(), config={"parsing": parsing})
    return DataResolver(repo, str(REPO), yaml.safe_load((REPO / "dvc.yaml").read_text())).resolve()["stages"]


def test_generate_runs_under_the_launcher_the_environment_names():
    stage = _stages()["generate@tiny_random"]
    assert stage["cmd"].startswith(f"${{{LAUNCHER}:-python}} -m stages.generate ")
    assert not any("launcher" in str(p) for p in stage.get("params", []))


def test_every_embed_instance_runs_under_the_embed_launcher():
    """PARENTAGE_EMBED_LAUNCHER (docs/cluster.md) reaches every instance that runs stages.embed, as a shell
    default the command text holds (so setting it reruns nothing)."""
    embedding = {name: stage for name, stage in _stages().items() if "-m stages.embed " in stage["cmd"]}
    assert {name.split("@")[0] for name in embedding} >= {"embed_parents", "embed_children"}, sorted(embedding)
    for name, stage in embedding.items():
        assert stage["cmd"].startswith("${PARENTAGE_EMBED_LAUNCHER:-python} -m stages.embed "), name
