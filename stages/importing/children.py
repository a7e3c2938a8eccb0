"""From the children a layout holds to the children folder of stages.contracts.children.

The protocol, in order (every bad child is an InputError naming it, or a counted skip with on_bad skip):
1. children are taken in order of `original`, so every later choice is stable; a second row naming the same
   original is a duplicate;
2. each child's parent is found in the clusters table (ParentIndex: source id, image file stem, or the integer
   its trailing digits spell, as COCO ids); none, or more than one: unknown_parent;
3. its image is decoded in full from a bounded read (Pillow reads a header, then decodes under the pixel
   limit; a file is first checked to be a regular file of at most MAX_CHILD_BYTES, so a FIFO never hangs and a
   huge or sparse file is never read): a truncated, special, oversized or non-image file, or a link leading out
   of the root, is unreadable; its content digest (a streaming BLAKE2b of its bytes) is taken;
4. a known caption index must lie in 0..N-1 (else caption_index), and a (parent, index) pair seen before is a
   duplicate; the k-th child of a cluster without an index gets -(k+1) (stages.contracts.children); a child
   with the same bytes as one taken before is a duplicate when both are in one split (counted once) and a leak
   when their parents are in two splits, and a child with the same bytes as a parent's image (real and fake at
   once) is a leak: each an error naming both paths, or a counted skip;
5. the children, sorted by (cluster_id, caption_index), are cut into shards as generate cuts its plan; each
   shard's fingerprint covers the settings and its sources' paths and content digests (never sizes and times,
   which a replaced file can keep), so a killed import keeps its finished shards, a rerun is byte-identical, and
   a shard whose source changed is made again. The bytes copied are checked against the digest taken in step 3.
   Images are copied as their bytes unless `reencode` asks for JPEG (quality 95) or PNG.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError, Skips
from stages.contracts.files import content_digest
from stages.contracts.ids import child_id
from stages.generation.shards import Child, Shard
from stages.importing.layouts import Found, Reader

REASONS = ("unknown_parent", "duplicate", "unreadable", "caption_index", "leak")
TRAILING_DIGITS = re.compile(r"(\d+)$")
# file extensions by Pillow's format name (the image struct's path names the child with one)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class Reencode(StrEnum):
    """none: the original bytes; jpeg95 / png: decoded to RGB and encoded as generate encodes."""

    none = "none"
    jpeg95 = "jpeg95"
    png = "png"


@dataclass(frozen=True)
class Planned:
    child: Child
    found: Found
    extension: str
    digest: str  # of the source's bytes (content_digest)


def _integer(token: str) -> str | None:
    match = TRAILING_DIGITS.search(token)
    return str(int(match.group(1))) if match else None


class ParentIndex:
    """Finds a cluster by the parent id a set uses: the clusters table's source_id, its image's file stem, or the
    integer of their trailing digits (COCO: `COCO_train2014_000000000009`, `000000000009` and `9` are all
    parent 9). A key two parents share is ambiguous and finds neither."""

    def __init__(self, clusters) -> None:
        exact: dict[str, set[int]] = defaultdict(set)
        numeric: dict[str, set[int]] = defaultdict(set)
        for row in clusters.itertuples(index=False):
            cluster = int(row.cluster_id)
            for key in (str(row.source_id), Path(str(row.image_path)).stem):
                exact[key].add(cluster)
                number = _integer(key)
                if number is not None:
                    numeric[number].add(cluster)
        self._exact, self._numeric = exact, numeric

    def find(self, token: str) -> int | str:
        """The cluster id, or why there is none."""
        clusters = self._exact.get(token) or self._numeric.get(_integer(token) or "", set())
        if len(clusters) == 1:
            return next(iter(clusters))
        if clusters:
            return f"parent {token!r} is ambiguous: clusters {sorted(clusters)[:5]} share it"
        return f"parent {token!r} is not in the clusters table (by source id, image file stem or COCO id)"


def check_image(reader: Reader, found: Found, where: str) -> tuple[str, str, str]:
    """Step 3: decode in full from a bounded read (so truncation is caught); the file extension of its format,
    the digest of its bytes, and their SHA-256 (the clusters table's hash of each parent's image)."""
    import hashlib

    from stages.imaging.load import inspect_image

    with reader.open(found, where) as stream:
        info = inspect_image(stream, where=where)
        digest = content_digest(stream)
        stream.seek(0)
        sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
    return EXTENSIONS.get(info.format, info.format.lower() or "img"), digest, sha256


def order(found: Found) -> tuple[str, int]:
    """Step 1's order: by original, rows of one table file by their number."""
    return (found.original.rsplit("#", 1)[0], found.row) if found.row is not None else (found.original, -1)


def where(found: Found, root: Path) -> str:
    if found.row is not None:
        return f"{found.file} row {found.row}"
    return str(root / found.original) if not Path(found.original).is_absolute() else found.original


def assign(found: Sequence[Found], clusters, *, root: Path, reader: Reader, skips: Skips,
           on_child: Callable[[], None] = lambda: None) -> list[Planned]:
    """Steps 1-4 of the protocol: the children to import, sorted by (cluster_id, caption_index)."""
    index = ParentIndex(clusters)
    by_cluster = clusters.set_index("cluster_id")
    n_captions = len(clusters["captions"].iloc[0]) if len(clusters) else 0
    seen: set[str] = set()
    kept: list[tuple[Found, int, str, str, str]] = []
    for child in sorted(found, key=order):
        on_child()
        name = where(child, root)
        if child.original in seen:
            skips.handle(InputError(name, "listed twice"), "duplicate")
            continue
        seen.add(child.original)
        if child.problem:  # known before its parent is looked for (a folder link's name names no parent)
            skips.handle(InputError(name, child.problem), "unreadable")
            continue
        cluster = index.find(child.parent)
        if isinstance(cluster, str):
            skips.handle(InputError(name, cluster, "give the parent's source id, image file stem or COCO id"),
                         "unknown_parent")
            continue
        try:
            extension, digest, sha256 = check_image(reader, child, name)
        except InputError as error:
            skips.handle(error, "unreadable")
            continue
        except OSError as error:
            skips.handle(InputError(name, f"cannot be read ({error.strerror or error})"), "unreadable")
            continue
        if child.caption_index is not None and child.caption_index >= n_captions:
            skips.handle(InputError(name, f"caption index {child.caption_index} is out of range: parents have "
                                          f"{n_captions} captions (0..{n_captions - 1})"), "caption_index")
            continue
        kept.append((child, cluster, extension, digest, sha256))

    taken: dict[tuple[int, int], str] = {}
    unknown: dict[int, int] = defaultdict(int)
    planned = []
    parent_images = dict(zip(clusters.get("image_sha256", []), clusters.get("image_path", []), strict=True))
    copies: dict[str, tuple[str, str]] = {}  # content digest -> (where, split) of the child taken with it
    for child, cluster, extension, digest, sha256 in kept:
        name, split = where(child, root), str(by_cluster.loc[cluster, "split"])
        if child.caption_index is not None and (cluster, child.caption_index) in taken:
            skips.handle(InputError(name, f"duplicate: caption {child.caption_index} of cluster {cluster} is already "
                                          f"imported from {taken[cluster, child.caption_index]}"), "duplicate")
            continue
        if sha256 in parent_images:
            skips.handle(InputError(name, f"is the same image (same bytes) as the parent (real) image "
                                          f"{parent_images[sha256]}: an image cannot be both real and generated"),
                         "leak")
            continue
        if digest in copies:
            other, other_split = copies[digest]
            if other_split == split:
                skips.handle(InputError(name, f"duplicate: the same image (same bytes) as {other}, imported "
                                              "once"), "duplicate")
            else:
                skips.handle(InputError(name, f"is the same image (same bytes) as {other}, whose parent is in the "
                                              f"{other_split} split while this one's is in {split}: a leak between "
                                              "splits"), "leak")
            continue
        copies[digest] = (name, split)
        if child.caption_index is None:
            unknown[cluster] += 1
            caption_index = -unknown[cluster]
        else:
            caption_index = child.caption_index
            taken[cluster, caption_index] = child.original
        parent = by_cluster.loc[cluster]
        caption = child.caption if child.caption is not None else (
            str(parent["captions"][caption_index]) if caption_index >= 0 else "")
        planned.append(Planned(Child(child_id(cluster, caption_index), cluster, caption_index, caption, -1,
                                     str(parent["split"])), child, extension, digest))
    return sorted(planned, key=lambda p: (p.child.cluster_id, p.child.caption_index))


def fingerprints(shards: Sequence[Shard], planned: Sequence[Planned], settings: dict[str, Any]) -> dict[str, str]:
    """Each shard's fingerprint: generate's (settings and children) with its sources' originals and content
    digests added."""
    from stages.generation.shards import shard_fingerprint

    sources = {p.child.child_id: [p.found.original, p.digest] for p in planned}
    return {s.name: shard_fingerprint(s, {**settings, "sources": [sources[c.child_id] for c in s.children]})
            for s in shards}


def encoded(data: bytes, extension: str, reencode: Reencode, name: str) -> tuple[bytes, str]:
    """The bytes to store and their extension."""
    if reencode is Reencode.none:
        return data, extension
    from stages.generation.shards import Encoding, encode
    from stages.imaging.load import load_rgb

    image = load_rgb(data, where=name)
    if reencode is Reencode.jpeg95:
        return encode(image, Encoding.jpeg, 95), "jpg"
    return encode(image, Encoding.png, 95), "png"


def write_shards(folder: Path, shards: Sequence[Shard], planned: Sequence[Planned], *, fingerprints: dict[str, str],
                 root: Path, reencode: Reencode, reader: Reader, stage: str = "import_children",
                 on_child: Callable[[int], None] = lambda n: None) -> int:
    """Write every shard not already in `folder` (prepare_folder kept only valid ones); return the children
    written."""
    from stages.contracts.children import SHARDS
    from stages.generation.shards import write_shard

    by_id = {p.child.child_id: p for p in planned}
    written = 0
    for shard in shards:
        path = folder / SHARDS / shard.name
        if path.exists():
            continue
        images, extensions = [], []
        for child in shard.children:
            plan = by_id[child.child_id]
            name = where(plan.found, root)
            data = reader.read(plan.found, name)
            if content_digest(io.BytesIO(data)) != plan.digest:
                raise InputError(name, "changed while being imported (its bytes differ from those checked)",
                                 "run the import again once the set is complete")
            data, extension = encoded(data, plan.extension, reencode, name)
            images.append(data)
            extensions.append(extension)
            on_child(1)
        write_shard(path, shard, images, [None] * len(images), fingerprint=fingerprints[shard.name],
                    extension=extensions, stage=stage, truncated=[False] * len(images))
        written += len(images)
    return written


def summarise(manifest, clusters, skips: Skips) -> dict[str, Any]:
    """The stage's metrics: children per split, parents by how many children they have, caption indices known
    and unknown, and bad children skipped by reason."""
    from stages.contracts.labels import SPLITS

    per_parent = manifest.groupby("cluster_id").size().reindex(clusters["cluster_id"], fill_value=0)
    n_captions = len(clusters["captions"].iloc[0]) if len(clusters) else 0
    known = int((manifest["caption_index"] >= 0).sum())
    return {
        "children": {**{s: int((manifest["split"] == s).sum()) for s in SPLITS}, "total": int(len(manifest))},
        "parents": {"without_children": int((per_parent == 0).sum()),
                    "partial": int(((per_parent > 0) & (per_parent < n_captions)).sum()),
                    "full": int((per_parent == n_captions).sum()),
                    "over_full": int((per_parent > n_captions).sum())},
        "caption_index": {"known": known, "unknown": int(len(manifest)) - known},
        "skipped": {**skips.as_metrics(REASONS), "total": int(skips.total)},
    }
