"""Where torch runs: one ``--device`` option (`device_option`) and one resolver (`resolve_device`) for every
command that has a device, and any other place a device is chosen.

Allowed values: ``auto`` (the GPU when one is visible, else Apple's MPS when present, else the CPU; under
accelerate, the device accelerate gives the process), ``cpu``, ``cuda``, ``cuda:<index>`` and ``mps``. A value
outside these, or a device this machine does not have, is an `InputError` naming where the value came from, the
value and what is allowed; nothing here imports torch unless the value names an accelerator, so ``--help`` and
argument errors stay cheap. A device decides speed, not results, so it is never a param (STYLE.md 18): each
command reads it from its option or its environment variable (docs/runtime.md).
"""

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


def resolve_device(value: str, where: str = "--device", *, state=None) -> str:
    """The torch device to use for `value`: ``auto`` becomes the device of `state` (an accelerate
    ``PartialState``: this process's GPU under ``accelerate launch``) when given, else cuda, mps or cpu,
    whichever this machine has first; anything else is checked (`check_device`) and returned."""
    value = check_device(value, where)
    if value != "auto":
        return value
    if state is not None:
        return str(state.device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_option(default: str = "auto", *, envvar: str | None = None, what: str = "the models",
                  allowed: tuple[str, ...] | None = None, note: str = ""):
    """The ``--device`` option of a command: ``device: str = device_option(...)``, a string.

    `default` and `envvar` (``PARENTAGE_<STAGE>_DEVICE``: the runtime knob) are the command's; `what` says what
    runs there, `note` adds what ``auto`` means for the command, `allowed` narrows the values for a command that
    runs on fewer devices (embed: auto or cpu, accelerate places the GPU). A bad or unavailable value is a usage
    error (exit 2) naming the option (and the environment variable, when the value came from it), the value and
    what is allowed, before any work starts."""
    import typer

    choices = ", ".join(allowed) if allowed else ALLOWED

    def check(value: str) -> str:  # Typer's message names the option, and the variable when the value came from it
        try:
            if allowed and str(value).strip() not in allowed:
                raise InputError("--device", f"{value!r} is not a device this command runs on; allowed: {choices}")
            check_device(value)
        except InputError as error:
            raise typer.BadParameter(error.problem) from error
        return value

    text = f"torch device of {what}: {choices}." + (f" {note}" if note else "")
    return typer.Option(default, "--device", envvar=envvar, callback=check, help=text)
