"""CoDE's setting file (data/code/setting.json, beside the model): the training choices that decide whether a
CoDE figure can stand beside the paper's (architecture, crop sizes, epochs, the children's generators).

code_train writes it when a run finishes; the report reads it, so the report names the setting the model was
trained with instead of a second copy of code_train's params on its own command line. The file is one JSON
object with exactly the fields of `CodeSetting` (generators as a list)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from stages.contracts.errors import InputError


@dataclass(frozen=True)
class CodeSetting:
    """What decides whether a CoDE figure is comparable with the paper's (code_train's choices)."""

    arch: str  # timm architecture
    image_size: int  # global crops and evaluation crop, px
    local_size: int  # local crops, px
    epochs: int  # the epoch budget (early stopping may end sooner)
    generators: tuple[str, ...]  # whose children trained it


def write_setting(path: Path, setting: CodeSetting) -> None:
    """Write the setting atomically, sorted and indented."""
    from stages.contracts.io import write_json

    write_json(path, {**asdict(setting), "generators": list(setting.generators)})


def read_setting(path: Path) -> CodeSetting | None:
    """The setting in `path`, or None when the file does not exist; a malformed file names the field."""
    from stages.contracts.files import regular_or_absent

    if not regular_or_absent(path, what="CoDE's setting file").is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(str(path), f"not valid JSON ({error})") from error
    names = [f.name for f in fields(CodeSetting)]
    if not isinstance(data, dict) or set(data) != set(names):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(str(path), f"expected an object with exactly the fields {names}; got {got}",
                         "written by code_train: rerun it")
    for name in ("image_size", "local_size", "epochs"):
        if not isinstance(data[name], int) or isinstance(data[name], bool):
            raise InputError(f"{path}: {name}", f"expected an integer, got {data[name]!r}")
    if not isinstance(data["arch"], str) or not data["arch"]:
        raise InputError(f"{path}: arch", f"expected a timm architecture name, got {data['arch']!r}")
    generators = data["generators"]
    if not isinstance(generators, list) or not generators or not all(isinstance(g, str) and g for g in generators):
        raise InputError(f"{path}: generators", f"expected a non-empty list of generator aliases, got {generators!r}")
    return CodeSetting(**{**data, "generators": tuple(generators)})
