"""Semantic / style disentanglement (paper §3.4): two linear maps of the backbone features, S (semantics) and
T (style), trained with supervised contrastive losses.

    L_c  = SupCon with cluster ids as labels      (pulls a cluster together)
    L_fr = SupCon with real / fake as labels      (pulls reals together and fakes together)
    L_T  = L_fr(T x) - L_c(T x)                   T: real vs fake, whatever the cluster
    L_S  = L_c(S x) - L_fr(S x)                   S: the cluster, whatever real or fake

Inputs are l2-normalised backbone features (their scale differs across backbones); outputs are normalised
before the loss. A batch is made of whole clusters (batch_size // (N+1) of them, drawn in a seeded order
each epoch), otherwise L_c has no positives. Partial clusters (an imported set, stages.study.clusters) come
padded to M elements with a (K, M) mask of the elements present: a batch holds batch_size // M clusters and
only their present elements; clusters without children are left out of training (they have no L_c positive).
S and T share nothing, so one AdamW step on L_T + L_S is two independent optimisations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.contracts.device import resolve_device
from stages.contracts.labels import FAKE, REAL
from stages.study.clusters import PARENT
from stages.study.supcon import supcon_losses


@dataclass(frozen=True)
class DisentangleConfig:
    """How S and T train; the disentangle stage fills every field from params.yaml (disentangle.*)."""

    epochs: int  # paper: 25
    batch_size: int  # paper: 1024 (rounded down to whole clusters)
    lr: float  # paper: 1e-3
    weight_decay: float  # the paper gives none; AdamW's default is 0.01
    temperature: float  # the paper gives none; SupCon's default is 0.07
    seed: int
    device: str  # a torch device; resolve "auto" with `pick_device`


def pick_device(name: str) -> str:
    """"auto" -> the GPU when one is visible, else the CPU; anything else is checked (stages.contracts.device)."""
    return resolve_device(name, "disentangle --device")


class Projections(nn.Module):
    """S and T: bias-free linear maps D -> D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.semantic = nn.Linear(dim, dim, bias=False)  # S
        self.style = nn.Linear(dim, dim, bias=False)  # T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) -> S x, T x: (B, D) each, l2-normalised."""
        x = nn.functional.normalize(x, dim=-1)
        return (nn.functional.normalize(self.semantic(x), dim=-1),
                nn.functional.normalize(self.style(x), dim=-1))


def cluster_batches(n_clusters: int, clusters_per_batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of whole clusters, shuffled, `clusters_per_batch` at a time (the last batch may be smaller,
    but never a single cluster, which would leave L_fr's reals without a positive)."""
    order = torch.randperm(n_clusters, generator=generator)
    for start in range(0, n_clusters, clusters_per_batch):
        batch = order[start:start + clusters_per_batch]
        if len(batch) >= 2:
            yield batch


def batch_labels(n_clusters: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k*M,) cluster labels (0..k-1 repeated) and real/fake labels for k clusters laid out (k, M)."""
    cluster = torch.arange(n_clusters).repeat_interleave(size)
    real_fake = torch.full((n_clusters, size), FAKE)
    real_fake[:, PARENT] = REAL
    return cluster, real_fake.reshape(-1)


def train_projections(train: np.ndarray, config: DisentangleConfig, *, present: np.ndarray | None = None,
                      progress: bool = True) -> tuple[Projections, list[dict[str, float]]]:
    """Train S and T on (K, M, D) training clusters; returns the model and per-epoch mean losses.

    `present` (K, M) marks the elements of partial clusters (None: every position is one)."""
    from tqdm.auto import tqdm

    if present is not None and present.all():
        present = None  # full clusters: the plain batches
    if present is not None:
        with_children = present[:, PARENT + 1:].any(axis=1)
        train, present = train[with_children], present[with_children]
    k, m, d = train.shape
    per_batch = config.batch_size // m
    if per_batch < 2:
        raise ValueError(f"--batch-size {config.batch_size} holds fewer than 2 clusters of {m} elements; "
                         f"expected at least {2 * m}")
    if k < 2:
        raise ValueError(f"{k} training clusters; disentanglement needs at least 2")
    torch.manual_seed(config.seed)
    device = torch.device(pick_device(config.device))
    model = Projections(d).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.999),
                                  weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    data = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))  # (K, M, D)
    history = []
    for epoch in tqdm(range(config.epochs), desc="disentangle", unit="epoch", disable=not progress):
        sums = dict.fromkeys(("loss_T", "loss_S", "l_fr_T", "l_c_T", "l_c_S", "l_fr_S"), 0.0)
        batches = 0
        for index in cluster_batches(k, per_batch, generator):
            x = data[index].reshape(-1, d)  # (k*M, D)
            cluster, real_fake = batch_labels(len(index), m)
            if present is not None:  # the elements there are, padding left out
                keep = torch.from_numpy(present[index.numpy()].reshape(-1))
                x, cluster, real_fake = x[keep], cluster[keep], real_fake[keep]
            x = x.to(device, non_blocking=True)
            cluster, real_fake = cluster.to(device), real_fake.to(device)
            semantic, style = model(x)
            l_fr_t, l_c_t = supcon_losses(style, [real_fake, cluster], config.temperature)
            l_c_s, l_fr_s = supcon_losses(semantic, [cluster, real_fake], config.temperature)
            loss_t, loss_s = l_fr_t - l_c_t, l_c_s - l_fr_s
            optimizer.zero_grad(set_to_none=True)
            (loss_t + loss_s).backward()
            optimizer.step()
            for key, value in zip(sums, (loss_t, loss_s, l_fr_t, l_c_t, l_c_s, l_fr_s), strict=True):
                sums[key] += value.item()
            batches += 1
        history.append({"epoch": float(epoch + 1), **{key: value / batches for key, value in sums.items()}})
    return model.cpu(), history


@torch.inference_mode()
def project(model: Projections, clusters: np.ndarray, *, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(K, M, D) -> S and T projections, (K, M, D) each, l2-normalised."""
    k, m, d = clusters.shape
    flat = clusters.reshape(k * m, d)
    semantic, style = np.empty_like(flat, dtype=np.float32), np.empty_like(flat, dtype=np.float32)
    for start in range(0, len(flat), chunk):
        s, t = model(torch.from_numpy(np.ascontiguousarray(flat[start:start + chunk], dtype=np.float32)))
        semantic[start:start + chunk], style[start:start + chunk] = s.numpy(), t.numpy()
    return semantic.reshape(k, m, d), style.reshape(k, m, d)


def save_projections(path: Path, model, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from stages.contracts.io import atomic_path, safetensors_metadata

    tensors = {"S": model.semantic.weight.detach().contiguous(), "T": model.style.weight.detach().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=safetensors_metadata(metadata))


def load_projections(path: Path):
    """The S and T maps saved by this stage."""
    from safetensors.torch import load_file

    from stages.contracts.files import regular_or_absent

    if not regular_or_absent(path, what="S and T projections").is_file():
        raise FileNotFoundError(f"{path}: no projections here; the disentangle stage writes them (dvc repro)")
    tensors = load_file(str(path))
    model = Projections(tensors["S"].shape[0])
    model.semantic.weight.data.copy_(tensors["S"])
    model.style.weight.data.copy_(tensors["T"])
    return model.eval()

