"""The CoDE network: a timm ViT-Tiny/16 trained from scratch whose 192-d pooled token is the embedding.

    model = build_model(CodeNetConfig(arch="vit_tiny_patch16_224", image_size=224, local_size=96), seed=0)
    z = model(x)                            # (B, 3, S, S) -> (B, 192); any S divisible by 16 (local crops)

Saved as one torch file holding the config and the weights (`save_model` / `load_model`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError
from stages.contracts.io import atomic_path

# ImageNet statistics: the released recipe normalises with them although the network starts from scratch
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CodeNetConfig:
    arch: str  # a timm model name (the paper's: vit_tiny_patch16_224); built with pretrained=False, never downloaded
    image_size: int  # global views and evaluation crops (S; paper: 224)
    local_size: int  # local views: 96 in the paper, 224 in the released code

    def __post_init__(self) -> None:
        for name in ("image_size", "local_size"):
            size = getattr(self, name)
            if size < 16 or size % 16:
                raise InputError(name, f"is {size}; expected a multiple of the ViT's 16-px patch, at least 16")


def check_arch(arch: str) -> None:
    """An `InputError` naming --arch, with the nearest names, unless timm has this architecture."""
    import timm

    if not timm.is_model(arch):
        from difflib import get_close_matches

        from stages.contracts.errors import InputError

        near = get_close_matches(arch, timm.list_models(), n=3)
        raise InputError("--arch", f"{arch!r} is not a timm architecture; nearest: {near} (all: timm.list_models())")


def build_model(config: CodeNetConfig, *, seed: int):
    """A randomly initialised timm model returning pooled features (num_classes=0), seeded for determinism.

    dynamic_img_size lets one set of position embeddings (interpolated) serve both view sizes."""
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        check_arch(config.arch)
        return timm.create_model(config.arch, pretrained=False, num_classes=0, img_size=config.image_size,
                                 dynamic_img_size=True)


def save_model(path: Path | str, model, config: CodeNetConfig, meta: dict[str, Any]) -> None:
    """Write the config, the weights and `meta` (epoch, monitor value, ...) atomically."""
    import torch

    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"config": asdict(config), "state_dict": state, "meta": meta}, tmp)


def load_model(path: Path | str, *, device: str = "cpu"):
    """(model in eval mode, config, meta) from a file written by `save_model`."""
    import pickle

    import torch

    from stages.contracts.files import regular_or_absent

    path = regular_or_absent(path, what="a CoDE model file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no CoDE model here; the code_train stage writes it (dvc repro)")

    from stages.contracts.errors import InputError

    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refused an object: the file is not what code_train writes (tensors and plain data)
        # torch's message advises reloading with weights_only=False, which runs whatever the file holds: not quoted
        raise InputError(str(path), "is not a safe checkpoint: it holds Python objects besides tensors and plain "
                                    "data, which code_train never writes; refused without running it") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = "an empty file" if isinstance(error, EOFError) else type(error).__name__
        raise InputError(str(path), f"is not a readable CoDE checkpoint ({reason}); rerun code_train") from error
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise InputError(str(path), f"is not a CoDE model written by code_train (it holds a "
                                    f"{type(saved).__name__}, not its config and weights)")
    try:
        config = CodeNetConfig(**saved["config"])
        model = build_model(config, seed=0)
        model.load_state_dict(saved["state_dict"])
        meta = saved["meta"]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:  # InputError: its arch
        raise InputError(str(path), f"is not a CoDE model written by code_train ({type(error).__name__}: "
                                    f"{' '.join(str(error).split())[:200]})") from error
    return model.to(device).eval(), config, meta
