"""The model hub only when asked: every command that loads a model runs offline unless a param allows the
Hugging Face hub (``generate --hub``, the only one that can fetch weights by id).

Offline is enforced in the process itself, not left to the caller's environment: the hub libraries read
``HF_HUB_OFFLINE`` when imported, so the commands call `stay_offline` before importing any of them (their
DataLoader workers and launched processes inherit the variables)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class Hub(StrEnum):
    """offline: nothing is downloaded, a missing model is an error naming its folder and how to fill it;
    download: a model missing from disk may be fetched from the Hugging Face hub by its id."""

    offline = "offline"
    download = "download"


def stay_offline(hub: Hub = Hub.offline) -> None:
    """Forbid downloads from the Hugging Face hub in this process and its children, unless `hub` allows them
    (then the caller's environment decides, as usual)."""
    if hub is Hub.download:
        return
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    # imported already (a test, a notebook): huggingface_hub read the variable at import, so set its constant too
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
