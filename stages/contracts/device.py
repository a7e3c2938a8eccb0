"""Where torch runs: one resolver for every command's ``--device`` (and any other place a device is chosen).

Allowed values: ``auto`` (the GPU when one is visible, else Apple's MPS when present, else the CPU), ``cpu``,
``cuda``, ``cuda:<index>`` and ``mps``. A value outside these, or a device this machine does not have, is an
`InputError` naming where the value came from, the value and what is allowed; nothing here imports torch
unless the value names an accelerator, so ``--help`` and argument errors stay cheap."""

from __future__ import annotations

import re

from stages.contracts.errors import InputError

ALLOWED = "auto, cpu, cuda, cuda:<index>, mps"
_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(value: str, where: str = "--device") -> str:
    """`value` itself when it is a device this machine has (or ``auto``); else an `InputError`."""
    value = str(value).strip()
    if not _PATTERN.fullmatch(value):
        raise InputError(where, f"{value!r} is not a device; allowed: {ALLOWED}")
    if value in ("auto", "cpu"):
        return value
    import torch

    if value == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(where, "'mps' is not available on this machine; allowed here: auto, cpu")
        return value
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(where, f"{value!r} asks for a GPU, and torch sees none on this machine; "
                                "allowed here: auto, cpu")
    index = int(value.partition(":")[2] or 0)
    if index >= count:
        raise InputError(where, f"{value!r} asks for GPU {index}; this machine has {count} "
                                f"(cuda:0..cuda:{count - 1})")
    return value


def resolve_device(value: str, where: str = "--device") -> str:
    """The torch device to use for `value`: ``auto`` becomes cuda, mps or cpu, whichever this machine has
    first; anything else is checked (`check_device`) and returned."""
    value = check_device(value, where)
    if value != "auto":
        return value
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_option(value):
    """A Typer callback for ``--device`` options: a bad or unavailable device is a usage error (exit 2) that
    names the option, before any work starts. Returns the value unchanged (a string or a choice enum)."""
    import typer

    try:
        check_device(getattr(value, "value", value))
    except InputError as error:
        raise typer.BadParameter(error.problem) from error
    return value

