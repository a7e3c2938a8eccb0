"""What a setting costs before it runs: GPU-hours, the images per second per GPU assumed, and disk, per stage.

    rows = estimate(Scale(parents=123_287, captions_per_parent=5), generators=[sd14, sd21], backbones=[...])
    print(table(rows))

The work is counted from the params (parents x captions per parent children per generator, each `steps` UNet
evaluations at its height x width; every image embedded once per backbone; CoDE's epochs x train pairs x its
eight views) and divided by per-GPU rates. The rates (`Rates`) are per-image costs of one A100/H100-class GPU,
stated with where each comes from; `benchmarks/gpu_check.py` measures the same quantities on a GPU (the stage's
images/s beside the bare library call), and `Rates.from_file` reads measured ones in their place, so the table
follows both a change of params and a measurement. Disk is exact where the format fixes it (float32 embeddings)
and assumed where the content does (JPEG sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError

# COCO 2014 train + val (= 2017 train + val): the images of Karpathy's split, 113,287 of them train (train +
# restval), 5,000 val and 5,000 test; the paper's parents
COCO_PARENTS = 123_287
COCO_TRAIN_PARENTS = 113_287
REFERENCE_SIDE = 512  # generation rates are per image of 512 x 512; others scale with their pixel count
# embedding widths by architecture (the registry names the architecture; the width is the model's)
DIMS = {"resnet50": 2048, "vit_b_32": 768, "RN50": 1024, "ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768,
        "efficientnet-lite0": 1280}
DEFAULT_DIM = 1024
CODE_VIEWS = 8  # stages.code.loss.VIEWS: real, fake, two augmented, two global and two local crops per pair
VIT_TINY_PARAMS = 5_717_416  # timm vit_tiny_patch16_224


@dataclass(frozen=True)
class Rates:
    """Per-GPU throughput and per-file sizes the estimate assumes (one A100/H100-class GPU, 8 CPU workers)."""

    # SD 1.4 at 512 px with classifier-free guidance, fp16, batch 16: 3.5 images/s x 50 steps (COCOFake's SD 1.4
    # half, 616k children, took about 2 GPU-days at 3-4 images/s on one A100-class GPU). Cost per image goes with
    # steps x pixels (x 1/2 without guidance: one UNet pass per step instead of two).
    unet_steps_per_s: float = 175.0
    # embed, images/s: the paper's backbones (ViT-B/32, RN50, ResNet-50) run 3,000-8,000 images/s in bf16 on such a
    # GPU, so decoding COCO-sized JPEGs in 8 DataLoader workers (~190 images/s each) bounds the stage
    embed_images_per_s: float = 1_500.0
    # captions through a text tower (no decoding): far above the images
    embed_captions_per_s: float = 20_000.0
    # CoDE, views/s: ViT-Tiny/16 at 224 px, forward and backward with bf16 autocast
    code_views_per_s: float = 3_000.0
    # a child's file at 512 x 512 (scaled by pixels): JPEG quality 95, PNG
    jpeg_bytes: float = 75_000.0
    png_bytes: float = 400_000.0

    @classmethod
    def from_file(cls, path: Path) -> Rates:
        """Rates from a YAML mapping of field: number (e.g. the images/s gpu_check measured); fields not given
        keep their assumed value. An unknown field or a value that is not a positive number names the file."""
        from stages.contracts.io import read_yaml

        data = read_yaml(path, what="a mapping of rate names to numbers (stages.compute.cost.Rates)")
        if not isinstance(data, dict):
            raise InputError(str(path), "is not a mapping of rate names to numbers")
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise InputError(str(path), f"unknown rate {key!r}; known: {sorted(known)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InputError(str(path), f"{key}: is {value!r}; expected a number above 0")
        return replace(cls(), **{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class Scale:
    """How much data: parents, captions (children) per parent, the train parents CoDE sees per epoch."""

    parents: int = COCO_PARENTS
    captions_per_parent: int = 5
    train_parents: int = COCO_TRAIN_PARENTS


@dataclass(frozen=True)
class Row:
    """One line of the estimate."""

    stage: str
    instance: str
    items: int  # images (CoDE: views) the instance processes
    per_gpu: float  # the items per second per GPU assumed
    gpu_hours: float
    disk_bytes: float
    note: str = ""


@dataclass(frozen=True)
class Code:
    """CoDE's training as the estimate sees it."""

    epochs: int = 150
    image_size: int = 224
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class Generator:
    alias: str
    height: int
    width: int
    steps: int
    guidance: bool = True


@dataclass(frozen=True)
class Backbone:
    alias: str
    architecture: str
    text_tower: bool = False
    dim: int = field(default=0)

    @property
    def width(self) -> int:
        return self.dim or DIMS.get(self.architecture, DEFAULT_DIM)


def generator_of(spec: Any) -> Generator:
    """A Generator from a registry entry (stages.generation.registry.GeneratorSpec)."""
    return Generator(alias=spec.alias, height=spec.height, width=spec.width, steps=spec.steps,
                     guidance=spec.guidance_scale > 1)


def backbone_of(spec: Any) -> Backbone:
    """A Backbone from a registry entry (stages.embedding.backbones.BackboneSpec): open_clip models have a text
    tower (the parents' captions are embedded too)."""
    return Backbone(alias=spec.alias, architecture=spec.architecture, text_tower=spec.library == "open_clip")


def generators_of(aliases: list[str], registry: Path) -> list[Generator]:
    """The cost view of each generator alias of `registry` (an unknown one is an InputError listing the known)."""
    from stages.generation.registry import get_generator

    return [generator_of(get_generator(alias, registry)) for alias in aliases]


def backbones_of(aliases: list[str], registry: Path) -> list[Backbone]:
    """The cost view of each backbone alias of `registry`, once each (an unknown one is an InputError listing
    the known)."""
    from stages.embedding.backbones import get_spec

    found = []
    for alias in dict.fromkeys(aliases):
        try:
            found.append(backbone_of(get_spec(alias, registry)))
        except KeyError as error:
            raise InputError(str(registry), str(error.args[0])) from error
    return found


def _embedding_bytes(rows: int, dim: int) -> float:
    return rows * (dim * 4 + 64)  # float32 row + id, cluster, label, caption index, split


def estimate(scale: Scale, *, generators: list[Generator], backbones: list[Backbone], children_sets: int | None = None,
             code: Code | None = Code(), encoding: str = "jpeg", rates: Rates = Rates()) -> list[Row]:
    """The rows of the estimate: one per generator, per backbone and image set, and CoDE's training.
    `children_sets` counts the sets embedded (default: the generators)."""
    if scale.parents < 1 or scale.captions_per_parent < 1:
        raise InputError("scale", f"{scale.parents} parents x {scale.captions_per_parent} captions per parent; "
                                  "expected at least 1 of each")
    children = scale.parents * scale.captions_per_parent
    rows = []
    for gen in generators:
        pixels = gen.height * gen.width / REFERENCE_SIDE**2
        cost = gen.steps * pixels * (1.0 if gen.guidance else 0.5)  # UNet steps of a 512 px image, per child
        per_gpu = rates.unet_steps_per_s / cost
        size = (rates.jpeg_bytes if encoding == "jpeg" else rates.png_bytes) * pixels
        rows.append(Row("generate", gen.alias, children, per_gpu, children / per_gpu / 3600, children * size,
                        f"{gen.steps} steps at {gen.width}x{gen.height}"))
    sets = len(generators) if children_sets is None else children_sets
    for backbone in backbones:
        images = scale.parents + sets * children
        captions = children if backbone.text_tower else 0
        hours = images / rates.embed_images_per_s / 3600 + captions / rates.embed_captions_per_s / 3600
        disk = _embedding_bytes(images + captions, backbone.width)
        note = f"{backbone.width}-d, parents + {sets} children sets" + (f" (+ {captions:,} captions)" if captions
                                                                           else "")
        rows.append(Row("embed", backbone.alias, images, rates.embed_images_per_s, hours, disk, note))
    if code is not None:
        views = code.epochs * scale.train_parents * CODE_VIEWS
        per_gpu = rates.code_views_per_s * (224 / code.image_size) ** 2  # tokens go with pixels
        checkpoint = VIT_TINY_PARAMS * 4 * 3  # weights and AdamW's two moments, float32
        rows.append(Row("code_train", f"vit_tiny, {code.epochs} epochs", views, per_gpu, views / per_gpu / 3600,
                        checkpoint * code.keep_checkpoints + VIT_TINY_PARAMS * 4 * 2,
                        f"{scale.train_parents:,} train pairs x {CODE_VIEWS} views per epoch (an upper bound: early "
                        "stopping)"))
    return rows


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def table(rows: list[Row]) -> str:
    """The estimate as a Markdown table, with a total line."""
    lines = ["| stage | instance | items | assumed items/s per GPU | GPU-hours | disk | what |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.stage} | {r.instance} | {r.items:,} | {r.per_gpu:,.1f} | {r.gpu_hours:,.1f} | "
                     f"{_size(r.disk_bytes)} | {r.note} |")
    lines.append(f"| total | | | | {sum(r.gpu_hours for r in rows):,.1f} | "
                 f"{_size(sum(r.disk_bytes for r in rows))} | |")
    return "\n".join(lines)
