"""Embedding one set of rows (parents, one generator's children, or captions) with one backbone.

Protocol, so a run is fast, bounded in memory, resumable and distributable with the same result:

1. The rows are cut into fixed chunks of `chunk_size` (by position in the source order) and each chunk
   into batches of `batch_size`. Missing chunk i belongs to process i % world_size (every process of every
   machine), so the batches a row sees do not depend on how many processes run. Processes wait for each
   other only in `stages.compute.processes` barriers, which name a process that stopped.
2. DataLoader workers read, decode and preprocess whole batches; the model runs under inference mode
   (channels-last for conv nets, autocast on GPU). A finished chunk is written as a part file
   (temporary name, then rename) in a parts folder beside the output.
3. A rerun finds the parts whose fingerprint (backbone, source table with each row's content: the parent
   image's sha256, the children shard's own fingerprint; batching, bad-input policy) matches and skips
   them: a kill at any moment loses at most the chunks in flight.
4. When every part exists, the main process streams them, in order, into the final HDF5 cache (again
   under a temporary name) and removes the parts folder. Memory holds one chunk, never the whole set.
   A run stopped by bad input removes its parts (its fix changes the fingerprint, so they are never reused),
   and each run sweeps the parts folders beside its output whose cache already holds their fingerprint
   (a kill between the merge and the cleanup).

Bad rows (a missing or corrupt image) go through `Skips`: the run stops naming the id and file, or the
row is left out, counted, and listed in the cache's `skipped_ids` attribute.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from stages.compute.processes import processes
from stages.contracts.embeddings import CAPTION_LABEL, ROW_FIELDS, write_embeddings, write_embeddings_streamed
from stages.contracts.errors import InputError, Skips
from stages.contracts.io import atomic_path
from stages.contracts.labels import FAKE, PARENT_CAPTION_INDEX, REAL
from stages.contracts.runtime import WorkerError, checked_batches, data_loader
from stages.embedding.backbones import Backbone, resize_side

SKIP_REASONS = ("missing_file", "unreadable_image")
# where a row's input is (image path / shard file + row / caption text) and what it holds: the image's sha256 from
# the clusters table, the shard's own fingerprint, or nothing for a caption (its text is the source)
SOURCE_COLUMNS = ("source", "row", "content")


class Precision(StrEnum):
    """Compute precision: auto = bf16 autocast on GPU, fp32 on CPU."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass(frozen=True)
class RunConfig:
    """How the embed stage runs; every value but `progress` comes from params.yaml (embed.*)."""

    batch_size: int
    chunk_size: int
    workers: int
    precision: Precision
    skip_bad: bool
    progress: bool = True
    jpeg_draft: bool = False  # embed.jpeg_decode=draft: JPEGs decoded reduced (stages.imaging.load, "draft")
    device_decode: bool = False  # embed.jpeg_decode=gpu: JPEGs decoded on the run's device (stages.imaging.gpu)


# ------------------------------------------------------------------------------------------------ rows
def parent_rows(clusters):
    """One row per parent, in cluster order."""
    import pandas as pd

    from stages.contracts.ids import parent_id

    return pd.DataFrame({
        "id": [parent_id(c) for c in clusters["cluster_id"]], "cluster_id": clusters["cluster_id"].astype("int64"),
        "label": REAL, "caption_index": PARENT_CAPTION_INDEX, "split": clusters["split"].astype(str),
        "source": clusters["image_path"].astype(str), "row": -1,
        "content": clusters["image_sha256"].astype(str)}).reset_index(drop=True)


def caption_rows(clusters):
    """One row per (parent, caption index), in cluster then caption order."""
    import pandas as pd

    from stages.contracts.ids import caption_id

    records = [(caption_id(cluster, index), cluster, CAPTION_LABEL, index, split, text, -1, "")
               for cluster, split, captions in zip(clusters["cluster_id"], clusters["split"], clusters["captions"],
                                                   strict=True)
               for index, text in enumerate(captions)]
    return pd.DataFrame(records, columns=[*ROW_FIELDS, *SOURCE_COLUMNS])


def child_rows(children: Path, clusters):
    """One row per child, in manifest order, checked against the clusters table (a stale children folder
    made from another clusters table raises instead of being embedded)."""
    import pandas as pd

    from stages.contracts.children import read_manifest

    manifest = read_manifest(children)
    known = dict(zip(clusters["cluster_id"], clusters["split"], strict=True))
    stale = [(c, s) for c, s in zip(manifest["cluster_id"], manifest["split"], strict=True) if known.get(c) != s]
    if stale:
        raise InputError(str(children), f"{len(stale)} children belong to clusters absent from the clusters table "
                         f"or with another split, e.g. cluster {stale[0][0]}", "rerun generate (dvc repro)")
    return pd.DataFrame({
        "id": manifest["child_id"].astype(str), "cluster_id": manifest["cluster_id"].astype("int64"), "label": FAKE,
        "caption_index": manifest["caption_index"].astype("int16"), "split": manifest["split"].astype(str),
        "source": manifest["shard"].astype(str), "row": manifest["row"].astype("int64"),
        "content": manifest["shard"].map(shard_fingerprints(children, manifest["shard"].unique()))}
    ).reset_index(drop=True)


def shard_fingerprints(children: Path, shards: Sequence[str]) -> dict[str, str]:
    """Each shard's own fingerprint (written by generate: it covers the settings, model and children that
    decide its bytes), or the sha256 of its bytes when it has none; so an embedding part made from other
    children never matches, even under the same ids and shard names."""
    import pyarrow.parquet as pq

    out = {}
    for name in shards:
        path = children / "shards" / name
        try:
            stamp = (pq.read_schema(path).metadata or {}).get(b"fingerprint", b"").decode()
        except (OSError, ValueError) as error:
            raise InputError(str(path), f"the shard cannot be read ({error})", "rerun generate") from error
        out[name] = stamp or "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def expected_ids(rows, skipped_ids: Sequence[str] = ()) -> list[str]:
    """The ids a cache of these rows holds: every row but the skipped ones, in order."""
    skipped = set(skipped_ids)
    return [i for i in rows["id"] if i not in skipped]


# ----------------------------------------------------------------------------------------- the batches
def _batches(n: int, chunk_size: int, batch_size: int, chunks: Sequence[int]) -> list[tuple[int, int, int]]:
    """(chunk, start, end) of every batch of the given chunks; batches never cross a chunk boundary."""
    out = []
    for chunk in chunks:
        start, end = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
        out += [(chunk, s, min(end, s + batch_size)) for s in range(start, end, batch_size)]
    return out


class BatchSource:
    """Map-style dataset whose item b is batch b, read and preprocessed in a DataLoader worker.

    Returns {"ids", "inputs" (B, 3, H, W) images or (B, L) tokens, "bad": [(id, where, problem, reason)]}.
    `draft`: the shorter side the transform resizes to, for draft decoding of JPEGs (None: full decode).
    `encoded` (embed.jpeg_decode=gpu): the JPEGs the device can decode are not decoded here but returned as
    their bytes, "encoded": [(position in ids, where, bytes)], and "inputs" holds the other images only, in
    order ("cpu": their positions in ids); `decode_on_device` finishes the batch in the training process."""

    def __init__(self, rows, batches: Sequence[tuple[int, int, int]], *, transform=None, tokenizer=None,
                 children: Path | None = None, draft: int | None = None, encoded: bool = False) -> None:
        self.ids = rows["id"].tolist()
        self.source = rows["source"].tolist()
        self.row = rows["row"].tolist()
        self.batches = list(batches)
        self.transform, self.tokenizer, self.children, self.draft = transform, tokenizer, children, draft
        self.encoded = encoded
        self._shard: tuple[str, list[str], Any] | None = None  # one shard's ids and image column, per worker

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        _, start, end = self.batches[index]
        ids = self.ids[start:end]
        if self.tokenizer is not None:
            return {"ids": ids, "inputs": self.tokenizer(self.source[start:end]), "bad": []}
        good, tensors, bad, cpu, encoded = [], [], [], [], []
        for position in range(start, end):
            try:
                data = self._encoded(position) if self.encoded else None
                if data is not None:
                    encoded.append((len(good), self._where(position), data))
                else:
                    tensors.append(self.transform(self._image(position)))
                    cpu.append(len(good))
                good.append(self.ids[position])
            except InputError as error:
                bad.append((self.ids[position], error.where, error.problem, bad_reason(error)))
        inputs = torch.stack(tensors) if tensors else torch.zeros(0)
        if self.encoded:
            return {"ids": good, "inputs": inputs, "bad": bad, "cpu": cpu, "encoded": encoded}
        return {"ids": good, "inputs": inputs, "bad": bad}

    def _where(self, position: int) -> str:
        row_id, source = self.ids[position], self.source[position]
        return f"{row_id} ({source})" if self.children is None else f"{row_id} ({self.children / 'shards' / source})"

    def _encoded(self, position: int) -> bytes | None:
        """The file's bytes when the device can decode it, else None (then it is read here, on the CPU)."""
        from stages.imaging.gpu import gpu_decodable
        from stages.imaging.load import special_kind

        row_id, source = self.ids[position], self.source[position]
        if self.children is not None:
            data = self._child_bytes(self.children / "shards" / source, self.row[position], row_id)
        else:
            path = Path(source)
            if special_kind(path) or not path.is_file():
                return None  # the CPU reader names what it is
            try:
                data = path.read_bytes()
            except OSError:
                return None
        return data if gpu_decodable(data) else None

    def _image(self, position: int):
        from stages.imaging.load import load_rgb

        row_id, source = self.ids[position], self.source[position]
        if self.children is None:
            return load_rgb(Path(source), where=f"{row_id} ({source})", draft=self.draft)
        shard = self.children / "shards" / source
        return load_rgb(self._child_bytes(shard, self.row[position], row_id), where=f"{row_id} ({shard})",
                        draft=self.draft)

    def _child_bytes(self, shard: Path, row: int, child: str) -> bytes:
        import pyarrow.parquet as pq

        if self._shard is None or self._shard[0] != str(shard):
            try:
                table = pq.read_table(shard, columns=["child_id", "image"], memory_map=True)
            except (OSError, ValueError) as error:
                raise InputError(f"{child} ({shard})", f"the shard cannot be read ({error})") from error
            self._shard = (str(shard), table.column("child_id").to_pylist(), table.column("image"))
        _, ids, images = self._shard
        if row >= len(ids) or ids[row] != child:
            raise InputError(f"{child} ({shard})", f"row {row} of the shard does not hold this child",
                             "the children folder is inconsistent; rerun generate")
        data = images[row].as_py()["bytes"]
        if data is None:
            raise InputError(f"{child} ({shard})", "has no image bytes")
        return data


def bad_reason(error: InputError) -> str:
    return "missing_file" if error.problem == "file not found" else "unreadable_image"


def decode_on_device(batch: dict[str, Any], device, transform, tensor_transform) -> tuple[Any, list[str], list]:
    """A `BatchSource(encoded=True)` batch made whole: its JPEGs decoded on `device` in one call
    (stages.imaging.gpu) and preprocessed there, merged in order with the images the workers read. A file
    the device cannot decode is read on the CPU (load_rgb), as without the option; one that fails there too
    becomes a bad row. Returns ((B, 3, H, W) inputs on `device`, their ids, the new bad rows)."""
    import torch

    from stages.imaging.gpu import decode_batch
    from stages.imaging.load import load_rgb

    ids, encoded = batch["ids"], batch["encoded"]
    slots: list[Any] = [None] * len(ids)
    cpu_inputs = batch["inputs"].to(device, non_blocking=True) if batch["cpu"] else None
    for k, slot in enumerate(batch["cpu"]):
        slots[slot] = cpu_inputs[k]
    bad = []
    for (slot, where, data), pixels in zip(encoded, decode_batch([e[2] for e in encoded], device), strict=True):
        try:
            slots[slot] = (tensor_transform(pixels) if pixels is not None
                           else transform(load_rgb(data, where=where)).to(device))
        except InputError as error:
            bad.append((ids[slot], error.where, error.problem, bad_reason(error)))
    kept = [k for k, s in enumerate(slots) if s is not None]
    inputs = torch.stack([slots[k] for k in kept]) if kept else torch.zeros(0, device=device)
    return inputs, [ids[k] for k in kept], bad


# ----------------------------------------------------------------------------------------------- parts
def fingerprint(backbone: Backbone, rows, *, kind: str, config: RunConfig, device: str) -> str:
    """What a part depends on: a part made under another fingerprint is never reused."""
    content = hashlib.sha256(rows.to_csv(index=False).encode())
    settings = {"kind": kind, "backbone": backbone.spec.as_dict(), "attrs": backbone.attrs(),
                "batch": config.batch_size, "chunk": config.chunk_size, "skip": config.skip_bad,
                "precision": config.precision.value, "device": device}
    if config.jpeg_draft:  # only when on: caches made before the option keep their fingerprint
        settings["jpeg_draft"] = True
    if config.device_decode:
        settings["device_decode"] = True
    content.update(json.dumps(settings, sort_keys=True).encode())
    return content.hexdigest()[:16]


def _part_path(parts: Path, chunk: int) -> Path:
    return parts / f"part-{chunk:06d}.npz"


def _write_part(path: Path, embeddings: np.ndarray, ids: list[str], bad: list[tuple[str, str, str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, embeddings=embeddings.astype(np.float32), ids=np.asarray(ids, dtype=str),
                 bad=np.asarray(bad, dtype=str).reshape(len(bad), 4))


def _read_part(path: Path) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
    with np.load(path) as part:
        return part["embeddings"], part["ids"].tolist(), [tuple(b) for b in part["bad"].tolist()]


def _prepare_parts(parts: Path, print_: str, state) -> None:
    """Main process: keep the parts folder if it was made under this fingerprint, else start it afresh."""
    if state.is_main_process:
        stamp = parts / "fingerprint"
        if parts.exists() and (not stamp.is_file() or stamp.read_text() != print_):
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamp) as tmp:  # a full disk is then named, and leaves no half-written stamp
            tmp.write_text(print_)
    processes(state).barrier(f"the main process to prepare {parts}")


# ---------------------------------------------------------------------------------------------- engine
def _autocast(device, precision: Precision):
    import contextlib

    import torch

    if device.type != "cuda" or precision is Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.float16 if precision is Precision.fp16 else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def _run_chunks(rows, backbone: Backbone, *, kind: str, parts: Path, chunks: Sequence[int], config: RunConfig,
                children: Path | None, device, skips: Skips, desc: str, position: int) -> None:
    import torch
    from tqdm.auto import tqdm

    n = len(rows)
    batches = _batches(n, config.chunk_size, config.batch_size, chunks)
    if not batches:
        return
    text = kind == "captions"
    encoder = backbone.text_encoder if text else backbone.image_encoder
    channels_last = backbone.spec.channels_last and not text
    encoder = encoder.to(device, memory_format=torch.channels_last) if channels_last else encoder.to(device)
    tensor_transform = None
    if config.device_decode and not text:
        from stages.imaging.gpu import tensor_preprocess

        tensor_transform = tensor_preprocess(backbone.transform)  # None: a transform with no tensor form
    source = BatchSource(rows, batches, transform=None if text else backbone.transform,
                         tokenizer=backbone.tokenizer if text else None, children=children,
                         draft=resize_side(backbone.transform) if config.jpeg_draft and not text else None,
                         encoded=tensor_transform is not None)
    loader = data_loader(source, batch_size=None, shuffle=False, num_workers=config.workers,
                         pin_memory=device.type == "cuda", persistent_workers=False)
    unit = "caption" if text else "img"
    total = sum(end - start for _, start, end in batches)
    chunk_of = [chunk for chunk, _, _ in batches]
    last_of_chunk = {chunk: i for i, chunk in enumerate(chunk_of)}
    pending: list[np.ndarray] = []
    pending_ids: list[str] = []
    pending_bad: list[tuple[str, str, str, str]] = []
    with tqdm(total=total, desc=desc, unit=unit, position=position, disable=not config.progress) as bar, \
            torch.inference_mode():
        for index, batch in enumerate(checked_batches(loader)):
            for row_id, where, problem, reason in batch["bad"]:
                skips.handle(InputError(where, problem), reason)
                pending_bad.append((row_id, where, problem, reason))
            if "encoded" in batch:
                inputs, batch["ids"], late = decode_on_device(batch, device, backbone.transform, tensor_transform)
                for row_id, where, problem, reason in late:
                    skips.handle(InputError(where, problem), reason)
                    pending_bad.append((row_id, where, problem, reason))
                batch["bad"] = batch["bad"] + late
            else:
                inputs = batch["inputs"]
            if len(batch["ids"]):
                inputs = inputs.to(device, non_blocking=True)
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with _autocast(device, config.precision):
                    features = encoder(inputs)  # (B, D)
                pending.append(features.float().cpu().numpy())
                pending_ids += batch["ids"]
            bar.update(len(batch["ids"]) + len(batch["bad"]))
            chunk = chunk_of[index]
            if last_of_chunk[chunk] == index:
                embeddings = np.concatenate(pending) if pending else np.zeros((0, backbone.dim), np.float32)
                _write_part(_part_path(parts, chunk), embeddings, pending_ids, pending_bad)
                pending, pending_ids, pending_bad = [], [], []


def embed_rows(rows, backbone: Backbone, out: Path, *, kind: str, attrs: dict[str, Any], config: RunConfig,
               state, parts: Path | None = None, children: Path | None = None) -> dict[str, Any] | None:
    """Embed `rows` into the cache `out` (protocol in the module docstring). Every process calls it; the
    main process returns {"rows", "skipped": {reason: count}, "skipped_ids"}, the others None."""
    parts = parts or out.with_name(f".{out.name}.parts")
    device = state.device
    print_ = fingerprint(backbone, rows, kind=kind, config=config, device=device.type)
    if state.is_main_process:
        sweep_finished_parts(out.parent)
    _prepare_parts(parts, print_, state)
    n_chunks = -(-len(rows) // config.chunk_size)
    mine = [c for c in range(state.process_index, n_chunks, state.num_processes)
            if not _part_path(parts, c).is_file()]
    done = sum(_part_path(parts, c).is_file() for c in range(n_chunks))
    if done and state.is_main_process:
        print(f"{out}: resuming, {done} of {n_chunks} chunks already done", file=sys.stderr)
    skips = Skips(skip=config.skip_bad)
    rank = f" [{state.process_index}]" if state.num_processes > 1 else ""
    desc = f"{attrs['backbone']} {attrs['image_set']}{rank}"
    try:
        _run_chunks(rows, backbone, kind=kind, parts=parts, chunks=mine, config=config, children=children,
                    device=device, skips=skips, desc=desc, position=state.process_index)
    except WorkerError:  # the machine, not the input: the rerun with fewer workers resumes from these parts
        raise
    except InputError:
        # bad input stopped the run: whatever fixes it (another image, on_bad=skip) changes the fingerprint, so
        # these parts could never be reused. A kill or a crash keeps them: the rerun resumes from them. With
        # several processes the others may still be writing into the folder; their next run's sweep removes it.
        if state.num_processes == 1:
            shutil.rmtree(parts, ignore_errors=True)
        raise
    processes(state).barrier(f"every part of {parts}")
    if not state.is_main_process:
        return None
    summary = _merge(rows, parts, n_chunks, out, dim=backbone.dim, attrs={**attrs, "fingerprint": print_})
    shutil.rmtree(parts)
    return summary


def sweep_finished_parts(folder: Path) -> list[Path]:
    """Remove the parts folders (``.<name>.parts``) in `folder` whose cache ``<name>`` is finished: it records
    the fingerprint the parts were made under (a run killed after its merge, before removing them). Parts of
    an unfinished cache are left for their own run to resume. Returns what was removed."""
    import h5py

    removed = []
    for parts in sorted(folder.glob(".*.parts")) if folder.is_dir() else ():
        stamp, cache = parts / "fingerprint", folder / parts.name[1:-len(".parts")]
        if not (parts.is_dir() and stamp.is_file() and cache.is_file()):
            continue
        try:
            with h5py.File(cache, "r") as f:
                finished = f.attrs.get("fingerprint")
        except OSError:  # not a readable cache: not ours to judge
            continue
        finished = finished.decode() if isinstance(finished, bytes) else finished
        if finished == stamp.read_text():
            shutil.rmtree(parts, ignore_errors=True)
            removed.append(parts)
    return removed


def _merge(rows, parts: Path, n_chunks: int, out: Path, *, dim: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """Stream the parts, in order, into the cache; check every row is either embedded or skipped."""
    bad: list[tuple[str, ...]] = []
    kept: list[str] = []
    for chunk in range(n_chunks):
        path = _part_path(parts, chunk)
        if not path.is_file():
            raise RuntimeError(f"{path}: part missing after every process finished (a process failed?)")
        _, ids, part_bad = _read_part(path)
        kept += ids
        bad += part_bad
    skipped_ids = [b[0] for b in bad]
    if kept != expected_ids(rows, skipped_ids):
        shutil.rmtree(parts)  # inconsistent parts are never reusable
        raise RuntimeError(f"{parts}: the parts do not cover the rows in order; they are removed, rerun")
    mask = ~rows["id"].isin(set(skipped_ids)).to_numpy()
    table = {name: rows[name].to_numpy()[mask] for name in ROW_FIELDS}

    def blocks() -> Iterator[np.ndarray]:
        for chunk in range(n_chunks):
            yield _read_part(_part_path(parts, chunk))[0]

    reasons = [b[3] for b in bad]
    counts = {reason: reasons.count(reason) for reason in SKIP_REASONS}
    write_embeddings_streamed(out, table, blocks(), dim=dim, attrs={
        **attrs, "skipped_ids": skipped_ids, "skipped": len(skipped_ids)})
    return {"rows": int(mask.sum()), "skipped": counts, "skipped_ids": skipped_ids,
            "skipped_examples": [f"{b[1]}: {b[2]}" for b in bad[:5]]}


def write_empty_captions(out: Path, attrs: dict[str, Any]) -> None:
    """The captions cache of a backbone without a text tower: 0 rows, attribute text_tower=False."""
    from stages.contracts.embeddings import EmbeddingTable

    empty = EmbeddingTable(np.zeros((0, 0), np.float32), [], [], [], [], [],
                           attrs={**attrs, "text_tower": False, "dim": 0, "skipped_ids": [], "skipped": 0})
    write_embeddings(out, empty)

