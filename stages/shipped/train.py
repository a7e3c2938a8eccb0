"""The shipped detector's life in the pipeline: train it from embedding caches, measure it per split and
generator, and measure it again on transformed test images (the robustness grid)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.contracts.embeddings import EmbeddingTable, check_alignment, read_embeddings, row_ids, same_backbone
from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.heads.metrics import COUNTS, INTERVALS, METRICS, TPR_AT_FPR, bounds, classification_metrics
from stages.imaging.transforms import Transform
from stages.shipped.artifact import Detector, describe_backbone
from stages.shipped.head_fit import C_GRID, fit_detector_head
from stages.uncertainty.bootstrap import Bootstrap

PARENTS = "parents"
ALL = "all"
# the metrics key set without the TPRs (few test reals), each interval's bounds beside its figure, the counts
ROBUSTNESS_COLUMNS = ("transform", "generator",
                      *(c for m in METRICS if m not in TPR_AT_FPR
                        for c in ((m, *bounds(m)) if m in INTERVALS else (m,))),
                      *COUNTS, "count")


def read_tables(folder: Path, generators: Sequence[str]) -> dict[str, EmbeddingTable]:
    """parents.h5 and <gen>.h5 of one backbone, checked: one backbone, parents REAL, children FAKE."""
    if not generators:
        raise InputError("model.generators", "is empty; the detector needs children to learn from")
    if len(set(generators)) != len(generators):
        raise InputError("model.generators", f"{list(generators)} repeats an alias")
    tables = {PARENTS: read_embeddings(folder / f"{PARENTS}.h5")}
    tables.update({gen: read_embeddings(folder / f"{gen}.h5") for gen in generators})
    same_backbone(tables)
    for name, table in tables.items():
        check_alignment(table, row_ids(table), where=f"{folder / name}.h5")
        expected = REAL if name == PARENTS else FAKE
        if not (table.label == expected).all():
            raise InputError(f"{folder / name}.h5", f"holds labels other than {expected}; expected only the "
                             f"{'parents' if expected == REAL else 'children'} of one set")
    return tables


def _pool(tables: dict[str, EmbeddingTable], split: str,
          generators: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) embeddings, (N,) labels and (N,) cluster ids of a split: its parents, then each generator's
    children. Arrays, not one EmbeddingTable: children of two generators share ids (the alias qualifies them)."""
    rows = [tables[name].split_rows(split) for name in (PARENTS, *generators)]
    return tuple(np.concatenate([getattr(r, column) for r in rows])  # type: ignore[return-value]
                 for column in ("embeddings", "label", "cluster_id"))


def content_hash(table: EmbeddingTable) -> str:
    """sha256 of a table's ids, labels, splits and embeddings: what the detector was trained on."""
    import hashlib

    digest = hashlib.sha256(table.embeddings.tobytes())
    for column in (table.id, table.label, table.split):
        digest.update("\n".join(map(str, column.tolist())).encode())
    return digest.hexdigest()


def train(folder: Path, generators: Sequence[str], *, head: str = "logreg", seed: int = 0,
          random_weight_generators: Sequence[str] = ()) -> tuple[Detector, dict[str, EmbeddingTable]]:
    """Fit the detector on train (C and threshold on val; stages.shipped.head_fit); return it and the tables.

    `seed` is recorded (it seeds the robustness test's random crop); L-BFGS itself draws nothing. The
    `random_weight_generators` (those of `generators` whose weights are random) are recorded, so the detector
    can say what it is (Detector.caveat)."""
    from importlib.metadata import version

    if head != "logreg":
        raise InputError("model.head", f"unknown head {head!r}; known: ['logreg']")
    tables = read_tables(folder, generators)
    (x_train, y_train, _), (x_val, y_val, _) = _pool(tables, "train", generators), _pool(tables, "val", generators)
    try:
        fit = fit_detector_head(x_train, y_train, x_val, y_val)
    except ValueError as error:  # a split without real or without fake images
        raise InputError(str(folder), str(error)) from error
    attrs = tables[PARENTS].attrs
    counts = {split: {"real": int((labels == REAL).sum()), "fake": int((labels == FAKE).sum())}
              for split, labels in (("train", y_train), ("val", y_val))}
    trained_on = {
        "generators": list(generators),
        "random_weight_generators": [g for g in generators if g in set(random_weight_generators)],
        "counts": counts,
        "embeddings": {name: {"rows": len(t), "sha256": content_hash(t)} for name, t in tables.items()},
        "protocol": "logistic regression (L2, L-BFGS, balanced class weights) on standardised train embeddings; "
                    "C by val AUC; threshold on the logit maximising val balanced accuracy (ties: nearest 0)",
        "c_grid": list(C_GRID),
        "val_auc_by_c": fit.val_auc_by_c,
        "seed": seed,
    }
    versions = {**attrs.get("versions", {}), **{name: version(name) for name in ("parentage", "numpy", "scikit-learn",
                                                                                  "safetensors")}}
    detector = Detector(backbone=describe_backbone(attrs), head=fit.head, threshold=fit.threshold,
                        trained_on=trained_on, versions=versions)
    return detector, tables


def evaluate(detector: Detector, tables: dict[str, EmbeddingTable],
             bootstrap: Bootstrap | None = None) -> dict[str, Any]:
    """Metrics on val and test: per generator (its children with the split's parents) and all together; with
    `bootstrap`, the headline figures' intervals (clusters resampled)."""
    generators = [name for name in tables if name != PARENTS]
    # the threshold (a logit) stays in the artifact: chosen between neighbouring val scores, it is not a figure
    # that holds across machines; C is a grid value, keyed `c` like the probe's
    result: dict[str, Any] = {"c": detector.head.params.get("C")}
    for split in ("val", "test"):
        result[split] = {}
        for name, gens in [*((g, [g]) for g in generators), (ALL, generators)]:
            x, y, cluster = _pool(tables, split, gens)
            result[split][name] = measure(detector, detector.decision(x), y, cluster, bootstrap)
    result["train_count"] = int(len(_pool(tables, "train", generators)[1]))
    return result


def measure(detector: Detector, decisions: np.ndarray, labels: np.ndarray,
            cluster_id: np.ndarray, bootstrap: Bootstrap | None = None) -> dict[str, float | None]:
    """The toolkit's metrics (stages.heads.metrics) at the detector's threshold, plus the number of images; the
    intervals (with `bootstrap`) resample clusters: a parent and its children are not independent."""
    return {**classification_metrics(decisions, labels, threshold=detector.threshold, cluster_id=cluster_id,
                                     units=cluster_id, bootstrap=bootstrap),
            "count": len(labels)}


# ------------------------------------------------------------------------------------------ robustness
@dataclass
class Robustness:
    rows: list[dict[str, Any]]
    clean_max_abs_diff: float | None  # clean re-embedding against the cache: the detect path's consistency


def _seed(item_id: str, seed: int) -> int:
    # a stable per-image seed (Python's hash() is salted per process)
    return zlib.crc32(f"{seed}:{item_id}".encode())


def _test_sources(clusters: Path, children: Path,
                  generators: Sequence[str]) -> Iterator[tuple[str, str, int, Any]]:
    """(set, id, cluster id, Path or bytes) of every test image: parents from the clusters table, then each
    generator's children."""
    from stages.contracts.children import iter_image_bytes, read_manifest
    from stages.contracts.clusters import read_clusters
    from stages.contracts.ids import parent_id

    frame = read_clusters(clusters)
    for row in frame[frame["split"] == "test"].itertuples():
        yield PARENTS, parent_id(int(row.cluster_id)), int(row.cluster_id), Path(row.image_path)
    for gen in generators:
        manifest = read_manifest(children / gen)
        test = manifest[manifest["split"] == "test"]
        cluster_of = dict(zip(test["child_id"], test["cluster_id"], strict=True))
        for child, data in iter_image_bytes(children / gen, test["child_id"].tolist()):
            yield gen, child, int(cluster_of[child]), data


def robustness_rows(detector: Detector, backbone, clusters: Path, children: Path, generators: Sequence[str],
                    transforms: Sequence[Transform], *, tables: dict[str, EmbeddingTable], seed: int = 0,
                    batch_size: int = 32, workers: int = 2, progress: bool = True,
                    bootstrap: Bootstrap | None = None) -> Robustness:
    """Embed every test image after each transform and score it; one row per (transform, generator | all)."""
    from stages.shipped.wild import ImageItems, draft_for, embed_items

    transforms = list(dict.fromkeys([Transform.clean, *transforms]))
    sets, ids, cluster_ids, sources = zip(*_test_sources(clusters, children, generators), strict=True)
    # the clean images decoded the way the training caches were (embed.jpeg_decode, recorded in the detector)
    draft = draft_for(backbone, detector.jpeg_decode)
    items = ImageItems(list(sources), [f"{s}:{i}" for s, i in zip(sets, ids, strict=True)], backbone.preprocess,
                       transforms=transforms, seeds=[_seed(i, seed) for i in ids], draft=draft)
    embedded = np.zeros((len(transforms), len(items), detector.head.dim), dtype=np.float32)  # (T, N, D)
    for result in embed_items(backbone, items, batch_size=batch_size, workers=workers, progress=progress,
                              description="robustness"):
        if result.error is not None:
            source = sources[result.index]
            where = items.names[result.index] + (f" ({source})" if isinstance(source, Path) else "")
            raise InputError(where, result.error, "test images were readable when embedded: this one has changed "
                             "since; restore it, or rerun the stages from clusters on")
        embedded[:, result.index] = result.embeddings
    sets, ids, cluster_ids = np.asarray(sets), np.asarray(ids), np.asarray(cluster_ids)
    labels = np.where(sets == PARENTS, REAL, FAKE)
    rows = []
    for t, transform in enumerate(transforms):
        decisions = detector.decision(embedded[t])
        for name, gens in [*((g, [g]) for g in generators), (ALL, list(generators))]:
            mask = np.isin(sets, [PARENTS, *gens])
            rows.append({"transform": transform.value, "generator": name,
                         **measure(detector, decisions[mask], labels[mask], cluster_ids[mask], bootstrap)})
    return Robustness(rows, _clean_difference(embedded[0], sets, ids, tables))


def _clean_difference(clean: np.ndarray, sets: np.ndarray, ids: np.ndarray,
                      tables: dict[str, EmbeddingTable]) -> float | None:
    """Largest |clean re-embedding - cached embedding| over the test images found in the caches."""
    worst = None
    for name, table in tables.items():
        position = {i: k for k, i in enumerate(table.id.tolist())}
        picked = [(k, position[i]) for k, (s, i) in enumerate(zip(sets, ids, strict=True))
                  if s == name and i in position]
        if picked:
            mine, theirs = zip(*picked, strict=True)
            gap = float(np.abs(clean[list(mine)] - table.embeddings[list(theirs)]).max())
            worst = gap if worst is None else max(worst, gap)
    return worst


def write_robustness(target: Path, rows: list[dict[str, Any]]) -> None:
    """The grid as CSV plot data (DVC plots, the report): one row per transform and generator."""
    import csv

    from stages.contracts.io import atomic_path, csv_cell

    with atomic_path(target) as tmp, tmp.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=ROBUSTNESS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(row.get(k)) for k in ROBUSTNESS_COLUMNS})

