"""A Hugging Face ViT whose weights travel inside a detector artifact (library `transformers_vit`): the backbone
of a converted published detector (the CoDE release, stages.shipped.release), built offline from the config
recorded in detector.json and the artifact's backbone.safetensors, behind the `Backbone` interface of
stages.shipped.wild.

    preprocess  PIL image -> (3, S, S): centre crop S x S without resizing (zero padding where the image is
                smaller, as torchvision's CenterCrop pads), to [0, 1], normalised by mean / std
    embed       (B, 3, S, S) -> (B, D): the ViT's last hidden state at the [CLS] token (after its final
                layer norm, before any pooler)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.contracts.device import resolve_device

LIBRARY = "transformers_vit"


def vit_preprocessing(crop: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """The `preprocessing` field of such a backbone's description: what `preprocess` does, as data."""
    return {"center_crop": int(crop), "resize": None, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def load_vit(config: dict[str, Any], folder: Path, weights: str = "model.safetensors") -> Any:
    """`transformers.ViTModel` of `config` (a ViTConfig as a dict) without its pooler, from a safetensors file
    in transformers' saved layout (`save_pretrained`: its key names hold across transformers versions), offline.
    ValueError naming the file when the weights do not fit the config."""
    import os
    import tempfile

    from transformers import ViTConfig, ViTModel
    from transformers.utils import logging

    with tempfile.TemporaryDirectory() as tmp:  # from_pretrained reads a folder; the file keeps its own name
        os.symlink(Path(folder, weights).resolve(), Path(tmp) / "model.safetensors")
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # its report lists the pooler's weights, left out on purpose
        try:
            model, info = ViTModel.from_pretrained(tmp, config=ViTConfig(**config), add_pooling_layer=False,
                                                   local_files_only=True, output_loading_info=True)
        finally:
            logging.set_verbosity(verbosity)
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise ValueError(f"{Path(folder, weights)}: weights do not fit the ViT config (missing "
                         f"{sorted(info.get('missing_keys') or [])[:3]}, mismatched "
                         f"{sorted(info.get('mismatched_keys') or [])[:3]})")
    return model.eval()


class ArtifactViT:
    """The backbone of a `transformers_vit` detector: `spec` is the detector's backbone description."""

    def __init__(self, spec: dict[str, Any], weights: Path, device: str = "cpu") -> None:
        import torch
        from torchvision import transforms as T

        self.spec = dict(spec)
        self.device = torch.device(resolve_device(device))
        self.encoder = load_vit(spec["config"], weights.parent, weights.name).to(self.device).eval()
        p = spec["preprocessing"]
        self.transform = T.Compose([T.CenterCrop(p["center_crop"]), T.ToTensor(), T.Normalize(p["mean"], p["std"])])

    def draft_side(self, decode: str) -> int | None:
        return None  # no resize before the crop: every JPEG is decoded in full

    def preprocess(self, image: Any) -> Any:
        return self.transform(image.convert("RGB"))  # PIL -> (3, S, S)

    def embed(self, pixels: Any) -> Any:
        import torch

        with torch.inference_mode():
            out = self.encoder(pixel_values=pixels.to(self.device))
            return out.last_hidden_state[:, 0, :]  # (B, T, D) -> (B, D)
