"""The import graph of the `stages` package, read from the source with `ast` (nothing is imported).

A DVC stage's command module (``python -m stages.<name>`` in its ``cmd``) runs every module it imports,
directly or through other modules, lazily inside a function or not. `closure` lists those files; each
stage's ``deps`` in dvc.yaml must list exactly them (tests/test_layout.py checks it), so editing a module
reruns exactly the stages that run it. Package ``__init__.py`` files hold only a docstring and are left out.

    python -m tests.imports            # each dvc.yaml stage and the module files its deps must list
    python -m tests.imports --write    # rewrite the package entries of every deps: list in dvc.yaml
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "stages"
COMMAND = re.compile(r"-m\s+(stages\.\w+)")


def module_file(module: str, root: Path = REPO) -> Path | None:
    """The file of a dotted module name of the package (a module or a package's __init__), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Dotted names of the package's modules that `path` imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{path}: relative import at line {node.lineno}; the package uses absolute ones")
            if node.module and node.module.split(".")[0] == PACKAGE:
                found.add(node.module)
                # `from stages.x import y` imports the module stages.x.y when y is one
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if module_file(f"{node.module}.{a.name}", root) is not None)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    return found


@cache
def closure(module: str, root: Path = REPO) -> frozenset[str]:
    """Repository-relative paths of every module file `module` runs (itself included), without __init__.py."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"{name} is imported but there is no such module in {root / PACKAGE}")
        todo.extend(imported_modules(path, root) - seen)
    files = (module_file(name, root) for name in seen)
    return frozenset(p.relative_to(root).as_posix() for p in files if p is not None and p.name != "__init__.py")


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """{module: the package modules it imports, lazily or not} for every module of the package (a package's
    ``__init__`` is named by the package)."""
    graph = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in imported_modules(path, root) if module_file(m, root) is not None} - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per group of modules that import each other, directly or through others, each as the path
    ``[a, b, ..., a]`` starting at the group's first module; [] when the graph has none."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                other = stack.pop()
                group.add(other)
                if other == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:  # the shortest way round from the group's first module back to it
        start = min(group)
        paths = {start: [start]}
        todo = [start]
        while todo:
            node = todo.pop(0)
            for other in sorted(graph[node] & group):
                if other == start:
                    cycles.append([*paths[node], start])
                    todo = []
                    break
                if other not in paths:
                    paths[other] = [*paths[node], other]
                    todo.append(other)
    return sorted(cycles)


def stage_modules(dvc_yaml: dict) -> dict[str, str]:
    """{stage name: the command module its cmd runs} for every stage of a parsed dvc.yaml."""
    modules = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        match = COMMAND.search(body["cmd"])
        if match is None:
            raise ValueError(f"dvc.yaml stage {name}: its cmd runs no `-m stages.<module>`")
        modules[name] = match.group(1)
    return modules


def stage_deps(dvc_yaml: dict) -> dict[str, set[str]]:
    """{stage name: its deps that lie inside the package} as dvc.yaml lists them."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        out[name] = {d for d in deps if d.startswith(f"{PACKAGE}/")}
    return out


def ordered(stage_module: str) -> list[str]:
    """The closure of a command module, the module itself first, then the others sorted."""
    own = stage_module.replace(".", "/") + ".py"
    return sorted(closure(stage_module), key=lambda path: (path != own, path))


def rewrite_deps(text: str) -> str:
    """dvc.yaml's text with the package module entries of each stage's deps replaced by its closure; every
    other line (comments, data deps, params) is kept as it is."""
    import yaml

    modules = stage_modules(yaml.safe_load(text))
    lines, out, stage, i = text.splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        header = re.match(r"^  (\w+):\s*(&\w+\s*)?$", line)  # a stage, perhaps anchored for a YAML merge
        if header and header.group(1) in modules:
            stage = header.group(1)
        out.append(line)
        i += 1
        if stage and re.match(r"^\s+deps:\s*(#.*)?$", line):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "#")):
                block.append(lines[i])
                i += 1
            items = [b for b in block if b.lstrip().startswith("- ")]
            indent = items[0][: len(items[0]) - len(items[0].lstrip())] if items else line[: line.index("d")] + "  "
            kept = [b for b in block if not re.match(rf"^\s+- {PACKAGE}/.*\.py\s*$", b)]
            out += [f"{indent}- {path}" for path in ordered(modules[stage])] + kept
    return "\n".join(out) + "\n"


def main() -> None:
    import sys

    import yaml

    path = REPO / "dvc.yaml"
    if "--write" in sys.argv[1:]:
        path.write_text(rewrite_deps(path.read_text()))
        print(f"{path}: deps rewritten from the imports")
        return
    for stage, module in stage_modules(yaml.safe_load(path.read_text())).items():
        print(f"{stage}:")
        for file in ordered(module):
            print(f"  - {file}")


if __name__ == "__main__":
    main()
