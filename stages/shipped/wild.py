"""Images from the wild, in batches: expanding the paths a user typed, reading each file on its own so a bad
one becomes an error row instead of a crash, and embedding the good ones with a backbone.

A backbone here is anything with a `preprocess` (PIL image -> (3, H, W) tensor) and an `embed`
((B, 3, H, W) -> (B, D) tensor), the interface of the backbone registry (stages.embedding.backbones).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from stages.contracts.device import resolve_device
from stages.contracts.errors import InputError, Skips
from stages.imaging.load import MAX_PIXELS, JpegDecode, load_rgb, special_kind
from stages.imaging.transforms import Transform, apply_transform


class Backbone(Protocol):
    spec: dict[str, Any]

    def preprocess(self, image: Any) -> Any: ...  # PIL image -> (3, H, W) float tensor

    def embed(self, pixels: Any) -> Any: ...  # (B, 3, H, W) -> (B, D), no gradient


@dataclass(frozen=True)
class Input:
    """One row of `detect`'s output: a file to read, or an argument that named nothing readable."""

    path: str
    problem: str | None = None


# Why a file met inside a folder or a glob is left out (counted, never a row): detect's summary names them.
SKIP_REASONS = ("not_an_image", "special_file", "broken_link")


def image_extensions() -> frozenset[str]:
    """File name suffixes of the formats Pillow can open (``.jpg``, ``.png``, ``.webp``, ...), lower case."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def expand_inputs(arguments: Sequence[str], skips: Skips | None = None) -> list[Input]:
    """Files as given; folders recursively (every non-hidden image file, sorted); globs (``**`` recurses).

    An argument that names nothing (a missing file, a glob without match, an empty folder) becomes one
    Input with its problem, so it gets a row like any other failure; so does an explicit argument that is
    not a regular file (a FIFO, a socket, a device: never opened, so never a hang). Inside folders and
    glob matches, files whose suffix is not an image format, special files and broken links are left out
    and counted in `skips` (reasons SKIP_REASONS). Walks follow links to folders but enter each folder
    once, so a link loop ends. A file reached twice is listed once."""
    skips = skips if skips is not None else Skips(skip=True)
    extensions = image_extensions()
    inputs: list[Input] = []
    seen: set[str] = set()
    skipped: set[str] = set()

    def add(path: Path, shown: str) -> None:
        key = _identity(path)
        if key not in seen:
            seen.add(key)
            inputs.append(Input(shown))

    def add_walked(path: Path) -> None:
        reason = _leave_out(path, extensions)
        if not reason:
            add(path, str(path))
        elif _identity(path) not in skipped:  # a named file still gets its row: skips are kept apart
            skipped.add(_identity(path))
            skips.handle(InputError(str(path), reason.replace("_", " ")), reason)

    for argument in arguments:
        path = Path(argument)
        if _is_dir(path):
            files = _folder_files(path)
            if not files:
                inputs.append(Input(argument, "folder holds no files"))
            for file in files:
                add_walked(file)
        elif os.path.lexists(path) and not glob.has_magic(argument):
            kind = special_kind(path)
            if kind:
                inputs.append(Input(argument, f"not a regular file ({kind}); not read"))
            else:
                add(path, argument)
        elif glob.has_magic(argument):
            matches = sorted(_glob(argument), key=str)
            if not matches:
                inputs.append(Input(argument, "no file matches this pattern"))
            for match in matches:
                for file in _folder_files(match) if _is_dir(match) else [match]:
                    add_walked(file)
        else:
            inputs.append(Input(argument, "file not found"))
    return inputs


def _identity(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a link loop: Python 3.11 raises RuntimeError
        return os.path.abspath(path)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _leave_out(path: Path, extensions: frozenset[str]) -> str | None:
    """The skip reason of a file met in a walk, or None to score it."""
    kind = special_kind(path)
    if kind:
        return "broken_link" if "link" in kind else "special_file"
    return None if path.suffix.lower() in extensions else "not_an_image"


def _walk(folder: Path, visited: set[tuple[int, int]]) -> Iterator[Path]:
    """Every non-hidden entry below `folder` (folders too, before their contents), entering each folder once
    (by device and inode), so links that loop are followed no further than their first visit."""
    try:
        info = folder.stat()
    except OSError:
        return
    if (info.st_dev, info.st_ino) in visited:
        return
    visited.add((info.st_dev, info.st_ino))
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files and folders (.DS_Store, .git) are not images a user meant to score
        path = Path(entry.path)
        yield path
        if _is_dir(path):
            yield from _walk(path, visited)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in _walk(folder, set()) if not _is_dir(p))


def _glob(pattern: str) -> Iterator[Path]:
    """Paths matching a glob pattern (``*``, ``?``, ``[...]`` within a name, ``**`` for any depth), the way
    `glob.glob(recursive=True)` matches them, but entering each folder at most once per ``**``: the
    standard glob follows looping links forever."""
    parts = Path(pattern).parts
    split = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = Path(*parts[:split]) if split else Path()
    yield from _match(root, parts[split:])


def _match(base: Path, parts: Sequence[str]) -> Iterator[Path]:
    if not parts:
        yield base
        return
    part, rest = parts[0], parts[1:]
    if part == "**":  # zero or more folders
        for folder in [base, *(p for p in _walk(base, set()) if _is_dir(p))]:
            yield from _match(folder, rest)
        return
    if not glob.has_magic(part):
        if os.path.lexists(base / part):
            yield from _match(base / part, rest)
        return
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return
    for name in names:
        hidden = name.startswith(".") and not part.startswith(".")
        if fnmatch.fnmatchcase(name, part) and not hidden and (not rest or _is_dir(base / name)):
            yield from _match(base / name, rest)


class ImageItems:
    """A map-style dataset: item i -> (i, (T, 3, H, W) tensor of its T transformed versions, or None; error).

    Each item is read alone, inside the DataLoader worker: any failure to read, decode or preprocess it is
    returned as its error message, so one bad file never stops a batch.

    `draft`: the shorter side the preprocessing resizes to, for draft decoding of JPEGs (stages.imaging.load;
    None: full decode). Only the clean version is made from the draft decode: the other transforms (crops,
    half size, re-compression) change the scale or the pixels before the preprocessing, so they start from
    the full decode, as without draft (a second decode, only when both are asked for)."""

    def __init__(self, sources: Sequence[Path | bytes | InputError], names: Sequence[str],
                 preprocess: Callable[[Any], Any], *, transforms: Sequence[Transform] = (Transform.clean,),
                 seeds: Sequence[int] | None = None, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> None:
        self.sources, self.names, self.preprocess = sources, names, preprocess
        self.transforms, self.max_pixels, self.draft = tuple(transforms), max_pixels, draft
        self.seeds = seeds if seeds is not None else range(len(sources))

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        import torch

        source = self.sources[index]
        try:
            if isinstance(source, InputError):
                raise source
            if isinstance(source, Path) and source.is_file() and source.stat().st_size == 0:
                raise InputError(self.names[index], "empty file")
            full = drafted = None
            if self.draft and Transform.clean in self.transforms:
                drafted = load_rgb(source, where=self.names[index], max_pixels=self.max_pixels, draft=self.draft)
            if drafted is None or any(t != Transform.clean for t in self.transforms):
                full = load_rgb(source, where=self.names[index], max_pixels=self.max_pixels)
            views = [self.preprocess(drafted if t == Transform.clean and drafted is not None else
                                     apply_transform(t, full, seed=int(self.seeds[index])))
                     for t in self.transforms]
            return index, torch.stack(views), None  # (T, 3, H, W)
        except InputError as error:
            return index, None, error.problem
        except Exception as error:  # noqa: BLE001 - a file from the wild may break a preprocessing step in any way
            return index, None, f"cannot be preprocessed ({type(error).__name__}: {error})"


def collate(batch: list[tuple[int, Any, str | None]]) -> tuple[list[int], Any, list[int], dict[int, str]]:
    """-> all indices, (B_ok, T, 3, H, W) tensor of the good ones (or None), their indices, errors by index."""
    import torch

    good = [(i, x) for i, x, _ in batch if x is not None]
    errors = {i: e for i, x, e in batch if x is None}
    pixels = torch.stack([x for _, x in good]) if good else None
    return [i for i, _, _ in batch], pixels, [i for i, _ in good], errors


@dataclass
class Embedded:
    """One item's result: its (T, D) embeddings (one per transform), or its error."""

    index: int
    embeddings: Any = None  # numpy (T, D)
    error: str | None = None


def embed_items(backbone: Backbone, items: ImageItems, *, batch_size: int = 32, workers: int = 2,
                progress: bool = True, description: str = "embedding") -> Iterator[Embedded]:
    """Embed every item with the backbone, yielding results in item order (errors included)."""
    import torch
    from tqdm import tqdm

    from stages.contracts.runtime import checked_batches, data_loader

    loader = data_loader(items, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                         persistent_workers=False, prefetch_factor=4 if workers else None,
                         pin_memory=getattr(backbone, "device", None) is not None and backbone.device.type == "cuda")
    with tqdm(total=len(items), desc=description, unit="img", disable=not progress) as bar, torch.inference_mode():
        for indices, pixels, good, errors in checked_batches(loader):
            features = {}
            if pixels is not None:
                b, t = pixels.shape[:2]
                flat = backbone.embed(pixels.flatten(0, 1))  # (B * T, 3, H, W) -> (B * T, D)
                features = dict(zip(good, flat.float().reshape(b, t, -1).cpu().numpy(), strict=True))
            for index in indices:
                yield Embedded(index, features.get(index), errors.get(index))
            bar.update(len(indices))


class RegistryBackbone:
    """A backbone of the registry (stages.embedding.backbones) behind the `Backbone` interface, on a device.

    `spec` holds the fields a detector artifact records (stages.shipped.artifact.describe_backbone), taken
    from the same attributes the embed stage writes into its caches, so a detector compares like with like."""

    def __init__(self, loaded: Any, device: str = "cpu") -> None:
        import torch

        from stages.shipped.artifact import describe_backbone

        self.loaded, self.device = loaded, torch.device(resolve_device(device))
        self.spec = describe_backbone(loaded.attrs())
        self.memory_format = torch.channels_last if loaded.spec.channels_last else torch.contiguous_format
        self.encoder = loaded.image_encoder.to(self.device, memory_format=self.memory_format).eval()

    def draft_side(self, decode: str) -> int | None:
        """The `draft` side of `load_rgb` under a JpegDecode value: the preprocessing's resize, or None."""
        from stages.embedding.backbones import resize_side

        return resize_side(self.loaded.transform) if decode == JpegDecode.draft else None

    def preprocess(self, image: Any) -> Any:
        return self.loaded.transform(image)  # PIL -> (3, H, W)

    def embed(self, pixels: Any) -> Any:
        import torch

        with torch.inference_mode():  # non_blocking: a pinned batch (pin_memory on CUDA) copies while we queue
            return self.encoder(pixels.to(self.device, memory_format=self.memory_format, non_blocking=True))


def load_registry_backbone(alias: str, registry: Path, device: str = "cpu") -> RegistryBackbone:
    """Look `alias` up in the registry file (or the entries registered in-process) and load it offline."""
    from stages.embedding.backbones import get_spec, load_backbone

    try:
        spec = get_spec(alias, registry)
    except KeyError as error:
        raise InputError(str(registry), str(error.args[0])) from error
    return RegistryBackbone(load_backbone(spec), device)


def load_checked(detector_path: Path, registry: Path, device: str = "cpu"):
    """The detector and the registry's backbone for it, or an InputError if they do not belong together."""
    from stages.shipped.artifact import check_backbone, load_detector

    try:
        detector = load_detector(detector_path)
    except InputError:  # names its file already
        raise
    except ValueError as error:
        raise InputError(str(detector_path), str(error)) from error
    if detector.backbone.get("library") == "transformers_vit":  # a converted detector carries its backbone
        from stages.shipped.artifact import BACKBONE_FILE
        from stages.shipped.vit import ArtifactViT

        return detector, ArtifactViT(detector.backbone, Path(detector_path) / BACKBONE_FILE, device)
    backbone = load_registry_backbone(detector.backbone["alias"], registry, device)
    try:
        check_backbone(detector, backbone.spec, where="the registry's backbone")
    except ValueError as error:
        raise InputError(str(detector_path), str(error),
                         f"{registry} changed since this detector was trained: retrain it") from error
    return detector, backbone


def draft_for(backbone: Backbone, decode: str) -> int | None:
    """The `draft` side of `load_rgb` for `backbone` under a JpegDecode value (None: full decoding, or a backbone
    that cannot tell its preprocessing's resize)."""
    return backbone.draft_side(decode) if hasattr(backbone, "draft_side") else None
