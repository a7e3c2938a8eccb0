"""The API behind `import parentage` (see the package docstring). Thin on purpose: the artifact, the readers
and the scoring are the pipeline's own (stages.shipped, stages.contracts), so the API, `parentage detect` and
the benchmark stage score an image alike."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# the registry inside the package: a detector's backbone is loaded from it by the alias it records
REGISTRY = Path(__file__).resolve().parents[1] / "stages" / "embedding" / "backbones.yaml"


@dataclass(frozen=True)
class Scores:
    """One entry per image, in the order given. An image that could not be read has logit and probability NaN,
    label -1 and its reason in `errors`."""

    logit: np.ndarray  # (N,) float64: the head's decision; rank and threshold on it
    probability: np.ndarray  # (N,) float64: sigmoid(logit)
    label: np.ndarray  # (N,) int8: 1 fake (logit >= the detector's threshold), 0 real, -1 unread
    errors: list[str | None]

    def __len__(self) -> int:
        return len(self.logit)


class Detector:
    """A detector artifact (the pipeline's `data/detector`, or a converted published detector) with its
    backbone, ready to score images."""

    def __init__(self, artifact: Any, backbone: Any, path: Path) -> None:
        self.artifact, self.backbone, self.path = artifact, backbone, path

    @classmethod
    def load(cls, path: str | Path, *, registry: str | Path = REGISTRY, device: str = "cpu") -> Detector:
        """Read the artifact folder (JSON and safetensors: nothing in it is executed) and load its backbone
        offline: from `registry` by the alias it records (it must be the backbone it was trained on), or from the
        artifact itself for a converted detector. Raises `stages.contracts.errors.InputError` naming the file."""
        from stages.shipped.wild import load_checked

        artifact, backbone = load_checked(Path(path), Path(registry), device)
        return cls(artifact, backbone, Path(path))

    @property
    def id(self) -> str:
        return self.artifact.id

    @property
    def threshold(self) -> float:
        """On the logit: fake where logit >= threshold."""
        return float(self.artifact.threshold)

    @property
    def caveat(self) -> str:
        """'' or what it was trained on that its scores should be read with (random-weight generators)."""
        return self.artifact.caveat

    def rows(self, paths: Sequence[str | Path], *, batch_size: int = 32, workers: int = 0, progress: bool = False,
             max_pixels: int | None = None, jpeg_decode: str | None = None) -> Iterator[Any]:
        """`parentage detect`'s rows (stages.shipped.rows.Row) for image files, one per path, errors included."""
        from stages.imaging.load import MAX_PIXELS, JpegDecode
        from stages.shipped.rows import score_inputs
        from stages.shipped.wild import Input

        inputs = [Input(str(p)) if isinstance(p, str | Path) else p for p in paths]
        yield from score_inputs(self.artifact, self.backbone, inputs, batch_size=batch_size, workers=workers,
                                max_pixels=max_pixels or MAX_PIXELS, progress=progress,
                                jpeg_decode=JpegDecode(jpeg_decode) if jpeg_decode else None)

    def embed(self, images: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """(N, D) backbone embeddings of PIL images or image tensors ((3, H, W) or (B, 3, H, W); float in [0, 1]
        or uint8), each turned into an 8-bit RGB image and preprocessed as a file would be."""
        import torch

        pictures = [picture for image in images for picture in _pictures(image)]
        out = []
        with torch.inference_mode():
            for start in range(0, len(pictures), batch_size):
                batch = torch.stack([self.backbone.preprocess(p) for p in pictures[start:start + batch_size]])
                out.append(self.backbone.embed(batch).float().cpu().numpy())  # (B, 3, H, W) -> (B, D)
        return np.concatenate(out) if out else np.zeros((0, int(self.artifact.backbone["dim"])), np.float32)

    def score(self, images: Any, *, batch_size: int = 32, workers: int = 0) -> Scores:
        """Score a batch: file paths (str or Path), PIL images and image tensors, mixed in any order (a single
        one is a batch of one; a (B, 3, H, W) tensor counts as B images). Files are read by detect's reader
        (every failure an entry with its error, never an exception)."""
        from stages.heads.linear import sigmoid

        items = [images] if isinstance(images, str | Path) or not isinstance(images, Sequence) else list(images)
        entries: list[tuple[str, Any]] = []
        for item in items:
            if isinstance(item, str | Path):
                entries.append(("path", item))
            else:
                entries.extend(("image", picture) for picture in _pictures(item))
        logits = np.full(len(entries), np.nan)
        errors: list[str | None] = [None] * len(entries)
        paths = [i for i, (kind, _) in enumerate(entries) if kind == "path"]
        for i, row in zip(paths, self.rows([entries[i][1] for i in paths], batch_size=batch_size, workers=workers),
                          strict=True):
            logits[i], errors[i] = (np.nan if row.logit is None else row.logit), row.error
        pictures = [i for i, (kind, _) in enumerate(entries) if kind == "image"]
        if pictures:
            embeddings = self.embed([entries[i][1] for i in pictures], batch_size=batch_size)
            logits[pictures] = self.artifact.decision(embeddings)
        read = ~np.isnan(logits)
        labels = np.full(len(entries), -1, dtype=np.int8)
        labels[read] = self.artifact.predict(logits[read])
        return Scores(logit=logits, probability=np.where(read, sigmoid(np.nan_to_num(logits)), np.nan),
                      label=labels, errors=errors)


def _pictures(image: Any) -> list[Any]:
    """PIL images from a PIL image or an image tensor ((3, H, W) or (B, 3, H, W); float in [0, 1] or uint8)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return [image.convert("RGB")]
    import torch

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"cannot score a {type(image).__name__}; pass a path, a PIL image or an image tensor")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"an image tensor is (3, H, W) or (B, 3, H, W); got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = image.permute(0, 2, 3, 1).cpu().numpy()  # (B, 3, H, W) -> (B, H, W, 3)
    return [Image.fromarray(a, "RGB") for a in arrays]


@dataclass(frozen=True)
class Embeddings:
    """An embedding cache (data/embeddings/<backbone>/<set>.h5) as arrays, row-aligned (checked on reading)."""

    embeddings: np.ndarray  # (N, D) float32
    ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int8: 0 real, 1 generated, -1 caption
    cluster_ids: np.ndarray  # (N,) int64
    caption_index: np.ndarray  # (N,) int16: -1 for parents
    split: np.ndarray  # (N,) str: train / val / test
    attrs: dict[str, Any]  # backbone, library, architecture, weights, preprocessing, dim, ...

    def __len__(self) -> int:
        return len(self.ids)


def read_embeddings(path: str | Path) -> Embeddings:
    """Read a cache written by the embed stage; FileNotFoundError / ValueError name the file."""
    from stages.contracts.embeddings import read_embeddings as read_table

    table = read_table(path)
    return Embeddings(embeddings=table.embeddings, ids=table.id, labels=table.label, cluster_ids=table.cluster_id,
                      caption_index=table.caption_index, split=table.split, attrs=table.attrs)
