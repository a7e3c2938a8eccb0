"""CoDE's inputs: parent and child images as `ImageRef`s, the training dataset of (parent, child) views,
and the evaluation dataset (centre crop without resize, optionally after a test transformation).

Parents are read from their files; children's encoded bytes are read once from their shards and held in
memory (one generator's children at COCO scale are a few GB of JPEG/PNG bytes)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.code import augment as aug
from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.imaging.transforms import Transform, apply_transform

# The robustness test of the CoDE evaluation: the shared transforms (also the shipped detector's), applied to
# the decoded test image before the evaluation's centre crop.
TEST_TRANSFORMS: tuple[str, ...] = tuple(t.value for t in Transform if t is not Transform.clean)


@dataclass(frozen=True)
class ImageRef:
    """One image: a parent (source = its file path) or a child (source = its encoded bytes)."""

    key: str  # parent_id, or "<generator>/<child_id>"
    label: int  # REAL or FAKE
    cluster_id: int
    split: str
    generator: str  # "" for parents
    source: str | bytes
    sha256: str = ""  # parents: the clusters table's image_sha256 of the file; children: "" (source is the bytes)

    def load(self):
        from stages.imaging.load import load_rgb

        if isinstance(self.source, bytes):
            return load_rgb(self.source, where=self.key)
        return load_rgb(Path(self.source), where=f"{self.key}: {self.source}")


def read_images(clusters_path: Path, children_root: Path, generators: Sequence[str],
                splits: Sequence[str]) -> list[ImageRef]:
    """Parents and the children of `generators` in `splits`, parents first, each in id order."""
    from stages.contracts.children import iter_image_bytes, read_manifest
    from stages.contracts.clusters import read_clusters
    from stages.contracts.ids import child_id, parent_id

    if len(set(generators)) != len(generators):  # a generator read twice would count its children twice
        raise InputError("--generators", f"names a generator twice: {list(generators)}")
    table = read_clusters(clusters_path)
    clusters = table[table["split"].isin(list(splits))].sort_values("cluster_id")
    refs = [ImageRef(parent_id(int(row.cluster_id)), REAL, int(row.cluster_id), row.split, "", str(row.image_path),
                     str(row.image_sha256)) for row in clusters.itertuples()]
    split_of = dict(zip(clusters["cluster_id"].astype(int), clusters["split"], strict=True))
    for generator in generators:
        folder = children_root / generator
        manifest = read_manifest(folder)
        known = manifest["cluster_id"].isin(table["cluster_id"])
        if not known.all():
            bad = manifest.loc[~known, "child_id"].iloc[0]
            raise InputError(str(folder), f"child {bad} belongs to a cluster not in {clusters_path}",
                             "the children were generated from another clusters table; rerun generate")
        manifest = manifest[manifest["cluster_id"].isin(list(split_of))]
        for row in manifest.itertuples():
            if row.child_id != child_id(int(row.cluster_id), int(row.caption_index)):
                raise InputError(f"{folder}: {row.child_id}", "child id does not match its cluster and caption index")
            if row.split != split_of[int(row.cluster_id)]:
                raise InputError(f"{folder}: {row.child_id}", f"split {row.split!r} differs from its parent's "
                                 f"{split_of[int(row.cluster_id)]!r}; rerun generate")
        rows = manifest.set_index("child_id")
        for cid, data in iter_image_bytes(folder, list(manifest["child_id"])):
            row = rows.loc[cid]
            refs.append(ImageRef(f"{generator}/{cid}", FAKE, int(row["cluster_id"]), str(row["split"]), generator,
                                 data))
    return refs


def make_pairs(refs: Sequence[ImageRef], split: str) -> list[tuple[ImageRef, list[ImageRef]]]:
    """(parent, its children) for every parent of `split` that has at least one child."""
    children: dict[int, list[ImageRef]] = {}
    for ref in refs:
        if ref.label == FAKE and ref.split == split:
            children.setdefault(ref.cluster_id, []).append(ref)
    return [(ref, children[ref.cluster_id]) for ref in refs
            if ref.label == REAL and ref.split == split and ref.cluster_id in children]


@dataclass(frozen=True)
class ViewConfig:
    """How the training views are made (code_train.*; the released recipe's values in the comments)."""

    image_size: int  # 224
    local_size: int  # 224 (the paper: 96)
    num_transform: int  # 2
    global_scale: tuple[float, float]  # (0.4, 1.0)
    local_scale: tuple[float, float]  # (0.05, 0.4)
    crop_pct: float  # 0.9

    def __post_init__(self) -> None:
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise InputError(name, f"is ({low}, {high}); expected 0 < min <= max <= 1")
        if not 0 < self.crop_pct <= 1:
            raise InputError("crop_pct", f"is {self.crop_pct}; expected 0 < crop_pct <= 1")
        if not 0 <= self.num_transform <= len(aug.AUGMENTATIONS):
            raise InputError("num_transform", f"is {self.num_transform}; expected 0..{len(aug.AUGMENTATIONS)}")


def make_views(img, rng: np.random.Generator, config: ViewConfig) -> dict[str, object]:
    """The four views of one decoded image: plain, augmented, global crop and local crop, as (3, S, S) uint8
    tensors ((3, L, L) for the local crop; `aug.normalize` makes them the network's input, in the training
    process). Each augmented view draws its own augmentations, all from the same decoded image."""
    size, local = config.image_size, config.local_size
    finish = aug.resize_center_crop
    return {
        "plain": aug.to_uint8(finish(img, size, config.crop_pct)),
        "aug": aug.to_uint8(finish(aug.augment(img, rng, config.num_transform), size, config.crop_pct)),
        "global": aug.to_uint8(finish(aug.augment(aug.random_resized_crop(img, size, config.global_scale, rng),
                                                  rng, config.num_transform), size, config.crop_pct)),
        "local": aug.to_uint8(finish(aug.augment(aug.random_resized_crop(img, local, config.local_scale, rng),
                                                 rng, config.num_transform), local, config.crop_pct)),
    }


class PairViews:
    """A map-style dataset of (parent, child) pairs; item i of epoch e is drawn from rng([seed, stream, e, i]),
    so every view is reproducible whatever the worker count, and a resumed run sees the same data.

    Each epoch visits every parent once in a seeded order, with one of its children drawn at random (the
    released recipe pairs each real image with one of its generated images at random). Each image of a pair
    is decoded once and its four views made from that decode.

    An index is i (of the epoch set by `use_epoch`) or (epoch, i): `EpochIndices` hands loader workers the
    epoch with each index, so persistent workers (started once per run, holding a copy of the dataset made
    at their start) make every epoch's views right."""

    def __init__(self, pairs: Sequence[tuple[ImageRef, list[ImageRef]]], config: ViewConfig, *, seed: int,
                 stream: int = 0, shuffle: bool = True) -> None:
        self.pairs, self.config, self.seed, self.stream, self.shuffle = list(pairs), config, seed, stream, shuffle
        self.use_epoch(0)

    def use_epoch(self, epoch: int) -> None:
        # not named set_epoch: accelerate's loader calls a dataset's set_epoch with its own iteration count,
        # which restarts at 0 in a resumed process and would replay epoch 0's data
        self.epoch = epoch
        order = np.random.default_rng([self.seed, self.stream, epoch]).permutation(len(self.pairs))
        self.order = order if self.shuffle else np.arange(len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def order_of(self, epoch: int) -> np.ndarray:
        if epoch != self.epoch:  # a worker's copy meets a later epoch: move it there (one permutation an epoch)
            self.use_epoch(epoch)
        return self.order

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, object]:
        epoch, index = (int(index[0]), int(index[1])) if isinstance(index, tuple | list) else (self.epoch, index)
        rng = np.random.default_rng([self.seed, self.stream, epoch, index])
        parent, children = self.pairs[self.order_of(epoch)[index]]
        child = children[int(rng.integers(len(children)))]
        real, fake = make_views(parent.load(), rng, self.config), make_views(child.load(), rng, self.config)
        return {"real": real["plain"], "fake": fake["plain"], "aug_real": real["aug"], "aug_fake": fake["aug"],
                "global_real": real["global"], "local_real": real["local"], "global_fake": fake["global"],
                "local_fake": fake["local"]}


class EpochIndices:
    """The sampler of a `PairViews` loader: (epoch, i) for i in order, with the dataset's epoch when iteration
    starts (in the training process, where `use_epoch` was called)."""

    def __init__(self, dataset: PairViews) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch = self.dataset.epoch
        return iter([(epoch, i) for i in range(len(self.dataset))])


class EvalImages:
    """Images for frozen features: an optional test transformation (seeded per image), then the centre
    crop of image_size without resizing (padded with black where the image is smaller)."""

    def __init__(self, refs: Sequence[ImageRef], image_size: int, *, transform: str = aug.CLEAN, seed: int = 0):
        if transform != aug.CLEAN and transform not in TEST_TRANSFORMS:
            raise ValueError(f"unknown transformation {transform!r}; known: {[aug.CLEAN, *TEST_TRANSFORMS]}")
        self.refs, self.image_size, self.transform, self.seed = list(refs), image_size, transform, seed

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int):
        ref = self.refs[index]
        img = ref.load()
        if self.transform != aug.CLEAN:
            seed = np.random.SeedSequence([self.seed, zlib.crc32(ref.key.encode()),
                                           zlib.crc32(self.transform.encode())]).generate_state(1)[0]
            img = apply_transform(self.transform, img, seed=int(seed))
        return aug.to_tensor(aug.center_crop(img, self.image_size))


def extract_features(model, dataset: EvalImages, *, batch_size: int = 64, num_workers: int = 0, device=None,
                     progress: bool = True, desc: str = "features") -> np.ndarray:
    """Frozen features of every image of `dataset`, in order: (N, D) float32."""
    import torch
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    from stages.contracts.runtime import checked_batches, data_loader

    loader = data_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for batch in checked_batches(tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)):
            out.append(model(batch.to(device)).float().cpu().numpy())  # (B, 3, S, S) -> (B, D)
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
