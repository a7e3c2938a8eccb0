"""Generating a generator's children: the plan (who, which seed, which shard), batches through the diffusers
pipeline, and the children folder of stages.contracts.children written shard by shard.

Resumable and distributable by construction:
- the plan is a pure function of the clusters table, the base seed and the shard size: child k of the
  sorted (cluster_id, caption_index) list goes to shard k // shard_size, and a shard is generated in the
  same batches whichever process makes it; process r of w makes the missing shards r, r + w, r + 2w, ...;
- each child's noise comes from its own seed (`child_seed`), never from batch order;
- a shard is written to a temporary name and renamed when complete, and carries in its metadata a
  fingerprint of everything that decides its bytes (settings, model weights, its children); a restart
  keeps the shards whose fingerprint matches and regenerates the rest; the manifest is written last.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from stages.contracts.children import MANIFEST, SHARDS
from stages.contracts.ids import child_id

SHARD_PATTERN = "shard-{:05d}.parquet"
# Hugging Face `datasets` reads these schema metadata to type the struct column as an Image feature.
HF_FEATURES = json.dumps({"info": {"features": {"child_id": {"dtype": "string", "_type": "Value"},
                                                "image": {"_type": "Image"}}}})


class Encoding(StrEnum):
    """How children are stored. JPEG by default: COCO parents are JPEG, and a detector trained on JPEG
    parents against PNG children can learn the file format instead of real versus generated."""

    jpeg = "jpeg"
    png = "png"


@dataclass(frozen=True)
class Child:
    child_id: str
    cluster_id: int
    caption_index: int
    caption: str
    seed: int
    split: str


@dataclass(frozen=True)
class Shard:
    index: int
    children: tuple[Child, ...]

    @property
    def name(self) -> str:
        return SHARD_PATTERN.format(self.index)


def child_seed(cluster_id: int, caption_index: int, base_seed: int) -> int:
    """The seed of one child: a hash of (base seed, cluster id, caption index) only, in [0, 2**63).

    So a child can be regenerated alone, and no batch size, batch order or process count changes it."""
    key = f"parentage-child:{base_seed}:{cluster_id}:{caption_index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def plan_children(clusters, base_seed: int) -> list[Child]:
    """One child per (parent, caption) of the clusters table, sorted by (cluster_id, caption_index)."""
    children = []
    for row in clusters.sort_values("cluster_id").itertuples(index=False):
        cluster = int(row.cluster_id)
        for index, caption in enumerate(row.captions):
            children.append(Child(child_id(cluster, index), cluster, index, str(caption),
                                  child_seed(cluster, index, base_seed), str(row.split)))
    return children


def plan_shards(children: Sequence[Child], shard_size: int) -> list[Shard]:
    """Consecutive runs of `shard_size` children: shard k holds children [k * size, (k + 1) * size)."""
    if shard_size < 1:
        raise ValueError(f"shard_size is {shard_size}; expected at least 1")
    return [Shard(k, tuple(children[start:start + shard_size]))
            for k, start in enumerate(range(0, len(children), shard_size))]


def shards_of_process(shards: Sequence[Shard], rank: int, world: int) -> list[Shard]:
    """The shards process `rank` of `world` generates (of those still missing): every world-th, from its rank."""
    return list(shards[rank::world])


def shard_fingerprint(shard: Shard, settings: dict[str, Any]) -> str:
    """A hash of everything that decides a shard's bytes: the settings (model fingerprint included) and
    its children (ids, captions, seeds)."""
    payload = json.dumps({"settings": settings, "children": [c.__dict__ for c in shard.children]},
                         sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def encode(image, encoding: Encoding, quality: int) -> bytes:
    """Encode a PIL image with fixed options, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    if encoding is Encoding.jpeg:
        image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    else:
        image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def batches(children: Sequence[Child], size: int) -> Iterable[Sequence[Child]]:
    for start in range(0, len(children), size):
        yield children[start:start + size]


# The attributes diffusers pipelines keep their tokenizers under (SD: 1, SDXL and FLUX: 2, SD3: 3).
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")


class _TruncationRecorder:
    """Stands in for a pipeline's tokenizer during one call and notes, for each call that truncates
    (`truncation=True, max_length=L`, as every pipeline encodes its prompts), which texts had more than L
    tokens. Everything else goes to the tokenizer itself, so the pipeline truncates exactly as it would."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.calls: list[list[bool]] = []

    def __call__(self, text=None, *args, **kwargs):
        source = kwargs.get("text", text)
        if kwargs.get("truncation") and kwargs.get("max_length") and source is not None:
            texts = [source] if isinstance(source, str) else list(source)
            ids = self._tokenizer(texts, add_special_tokens=kwargs.get("add_special_tokens", True)).input_ids
            self.calls.append([len(i) > kwargs["max_length"] for i in ids])
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class truncation_counter:
    """Within the block, record prompt truncation by every tokenizer of `pipelines`; `flags(n)` then says, per
    prompt of a batch of n, whether any text encoder cut it. The prompts are the first n-text call each
    tokenizer sees (every pipeline encodes the prompt before the negative prompt)."""

    def __init__(self, pipelines: Sequence) -> None:
        self._swapped = [(p, name, getattr(p, name)) for p in pipelines for name in TOKENIZERS
                         if getattr(p, name, None) is not None]
        self._recorders: dict[int, _TruncationRecorder] = {}

    def __enter__(self) -> truncation_counter:
        for pipeline, name, tokenizer in self._swapped:
            recorder = self._recorders.setdefault(id(tokenizer), _TruncationRecorder(tokenizer))
            # object.__setattr__: DiffusionPipeline.__setattr__ would re-register the component in its config
            object.__setattr__(pipeline, name, recorder)
        return self

    def __exit__(self, *exc) -> None:
        for pipeline, name, tokenizer in self._swapped:
            object.__setattr__(pipeline, name, tokenizer)

    def flags(self, n: int) -> list[bool]:
        truncated = [False] * n
        for recorder in self._recorders.values():
            first = next((call for call in recorder.calls if len(call) == n), None)
            truncated = [a or b for a, b in zip(truncated, first or [False] * n, strict=True)]
        return truncated


def safety_flags(output, n: int) -> list[bool | None]:
    """The safety checker's verdict per image, None where no checker ran (SDXL and FLUX pipelines have none
    and return no such field; SD with its checker off returns None; DeepFloyd IF calls it nsfw_detected)."""
    for field in ("nsfw_content_detected", "nsfw_detected"):
        flags = getattr(output, field, None)
        if flags is not None:
            return [bool(f) for f in flags]
    return [None] * n


def call_pipeline(pipeline, spec, children: Sequence[Child]) -> tuple[list, list[bool | None], list[bool]]:
    """Generate a batch: PIL images, the safety checker's verdicts (None: not checked) and whether each prompt
    was truncated by a text encoder.

    `pipeline` is one diffusers pipeline or the list of a cascaded generator's (registry.load_generator):
    the first is called with the entry's size, steps and guidance, each later one with the previous images
    and its cascade stage's settings. Every call gets the prompts, the negative prompt and the children's own
    generators, which each stage continues drawing from, and the entry's call_args."""
    import torch

    stages = list(pipeline) if isinstance(pipeline, list | tuple) else [pipeline]
    # CPU generators: the initial noise of each child is the same on every device.
    generators = [torch.Generator("cpu").manual_seed(c.seed) for c in children]
    common = {"prompt": [c.caption for c in children], "generator": generators}
    if spec.negative_prompt:  # else the pipeline's own default ('' for PixArt, None for most)
        common["negative_prompt"] = [spec.negative_prompt] * len(children)
    nsfw: list[bool | None] = [None] * len(children)
    images = None
    with truncation_counter(stages) as counter:
        for k, stage in enumerate(stages):
            last = k == len(stages) - 1
            if k == 0:
                own = {"height": spec.height, "width": spec.width, "num_inference_steps": spec.steps,
                       "guidance_scale": spec.guidance_scale, **spec.call_args}
            else:
                later = spec.cascade[k - 1]
                own = {"image": images, "num_inference_steps": later.steps, "guidance_scale": later.guidance_scale,
                       **later.call_args}
            output = stage(**common, **own, output_type="pil" if last else "pt")
            images = output.images
            flags = safety_flags(output, len(children))
            nsfw = [a if b is None else bool(a) or b for a, b in zip(nsfw, flags, strict=True)]
    return list(images), nsfw, counter.flags(len(children))


def write_shard(path: Path, shard: Shard, images: Sequence[bytes], nsfw: Sequence[bool | None], *,
                fingerprint: str, extension: str | Sequence[str], stage: str,
                truncated: Sequence[bool] | None = None) -> None:
    """Write one shard atomically: columns child_id, image struct<bytes, path>; metadata: fingerprint, nsfw
    (true, false or null: not checked) and truncated (whether a text encoder cut the prompt). `extension` is
    one for every image, or one per image (an imported set may mix formats); `stage` is the one whose marker
    the children folder carries (prepare_folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.contracts.io import atomic_path

    ids = [c.child_id for c in shard.children]
    extensions = [extension] * len(ids) if isinstance(extension, str) else list(extension)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "child_id": pa.array(ids, pa.string()),
        "image": pa.array([{"bytes": b, "path": f"{i}.{e}"} for i, b, e in zip(ids, images, extensions, strict=True)],
                          image_type),
    }).replace_schema_metadata({"huggingface": HF_FEATURES, "fingerprint": fingerprint,
                                "nsfw": json.dumps([None if n is None else bool(n) for n in nsfw]),
                                "truncated": json.dumps([bool(t) for t in truncated or [False] * len(ids)])})
    with atomic_path(path, kind="file", stage=stage) as tmp:
        pq.write_table(table, tmp, compression="none")


def shard_metadata(path: Path) -> dict[bytes, bytes] | None:
    """The schema metadata of a finished shard, or None if it is unreadable (it is then regenerated)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None


def prepare_folder(folder: Path, shards: Sequence[Shard], fingerprints: dict[str, str], *, stage: str,
                   inputs: Sequence[Path] = ()) -> list[str]:
    """Make `folder` hold only valid finished shards of this plan; return their names.

    The folder is `stage`'s output written in place (stages.contracts.io.claim_folder): a new or empty folder is
    marked as its, one carrying its marker is resumed, anything else (a person's folder, another stage's, one
    holding an input of `inputs`) is an OutputError and nothing in it is touched. Then it removes the manifest
    (readers must never see it beside shards it does not describe), temporaries left by a killed run, shards
    outside the plan, and shards whose fingerprint differs."""
    from stages.contracts.io import claim_folder

    claim_folder(folder, stage, inputs=inputs)
    (folder / MANIFEST).unlink(missing_ok=True)
    for leftover in folder.glob(f".{MANIFEST}.tmp-*"):
        leftover.unlink()
    shard_dir = folder / SHARDS
    shard_dir.mkdir(exist_ok=True)
    kept = []
    for path in sorted(shard_dir.iterdir()):
        metadata = shard_metadata(path) if path.name in fingerprints and path.is_file() else None
        # a shard written before prompt truncation was recorded lacks its flags: made again, not guessed
        if metadata is not None and metadata.get(b"fingerprint", b"").decode() == fingerprints[path.name] \
                and b"truncated" in metadata:
            kept.append(path.name)
        elif path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    return kept


def generate_shards(pipeline, spec, shards: Sequence[Shard], folder: Path, *, fingerprints: dict[str, str],
                    encoding: Encoding, quality: int, batch_size: int, stage: str = "generate",
                    on_batch: Callable[[int], None] = lambda n: None) -> int:
    """Generate and write every shard of `shards` not already in `folder`; return the children generated."""
    generated = 0
    for shard in shards:
        path = folder / SHARDS / shard.name
        if path.exists():
            continue
        images: list[bytes] = []
        nsfw: list[bool | None] = []
        truncated: list[bool] = []
        for batch in batches(shard.children, batch_size):
            pictures, flags, cut = call_pipeline(pipeline, spec, batch)
            images += [encode(p, encoding, quality) for p in pictures]
            nsfw += flags
            truncated += cut
            generated += len(batch)
            on_batch(len(batch))
        write_shard(path, shard, images, nsfw, fingerprint=fingerprints[shard.name], extension=encoding.value,
                    stage=stage, truncated=truncated)
    return generated


def write_manifest(folder: Path, shards: Sequence[Shard], *, alias: str, settings: dict[str, Any], stage: str,
                   extra: dict[str, Sequence[str]] | None = None):
    """Write manifest.parquet (stages.contracts.children's contract) from the finished shards; return it
    as a pandas DataFrame. `extra`: string columns appended after the contract's, one value per child in
    shard order (an import's `original`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.contracts.io import atomic_path

    rows: list[tuple[Child, str, int, bool | None, bool]] = []
    for shard in shards:
        metadata = shard_metadata(folder / SHARDS / shard.name)
        if metadata is None:
            raise FileNotFoundError(f"{folder / SHARDS / shard.name}: shard missing or unreadable after generation")
        flags, cut = json.loads(metadata[b"nsfw"]), json.loads(metadata[b"truncated"])
        rows += [(c, shard.name, r, flags[r], cut[r]) for r, c in enumerate(shard.children)]
    table = pa.table({
        "child_id": pa.array([c.child_id for c, *_ in rows], pa.string()),
        "cluster_id": pa.array([c.cluster_id for c, *_ in rows], pa.int64()),
        "caption_index": pa.array([c.caption_index for c, *_ in rows], pa.int16()),
        "caption": pa.array([c.caption for c, *_ in rows], pa.string()),
        "seed": pa.array([c.seed for c, *_ in rows], pa.int64()),
        "split": pa.array([c.split for c, *_ in rows], pa.string()),
        "shard": pa.array([s for _, s, *_ in rows], pa.string()),
        "row": pa.array([r for _, _, r, *_ in rows], pa.int32()),
        "nsfw": pa.array([n for *_, n, _ in rows], pa.bool_()),
        "generator": pa.array([alias] * len(rows), pa.string()),
        "truncated": pa.array([t for *_, t in rows], pa.bool_()),
        **{name: pa.array(list(values), pa.string()) for name, values in (extra or {}).items()},
    }).replace_schema_metadata({"settings": json.dumps(settings, sort_keys=True)})
    with atomic_path(folder / MANIFEST, kind="file", stage=stage) as tmp:
        pq.write_table(table, tmp)
    return table.to_pandas()


def summarise(manifest) -> dict[str, Any]:
    """The stage's metrics: children per split, safety-checker hits among the checked children (the fraction is
    None when no child was checked), and prompts a text encoder truncated."""
    from stages.contracts.labels import SPLITS

    total = len(manifest)
    checked = manifest["nsfw"].notna()
    hits = int(manifest["nsfw"][checked].astype(bool).sum())
    return {
        "children": {**{s: int((manifest["split"] == s).sum()) for s in SPLITS}, "total": int(total)},
        "nsfw": {"total": int(hits), "checked": int(checked.sum()),
                 "fraction": hits / int(checked.sum()) if checked.any() else None},
        "prompts": {"truncated": int(manifest["truncated"].sum())},
    }
