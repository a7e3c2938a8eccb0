"""Scoring a benchmark's entries (stages.external.sets) with several detectors, and its results: metrics per
detector and generator, the detector x generator x transform grid, the ROC points and the per-image scores.

A *detector* here is a name with a backbone (stages.shipped.wild.Backbone: preprocess and embed), a function
from (M, D) embeddings to (M,) scores (higher = more likely generated) and a threshold on those scores (FAKE
where score >= threshold, stages.heads.threshold): the shipped detector (its logit and threshold) and each of
CoDE's heads. Every image is read once per backbone by detect's reader (stages.shipped.wild.ImageItems), after
each transform of the robustness grid (stages.imaging.transforms, seeded per image); an image that cannot be read
(missing, empty, truncated, not an image, a decompression bomb, a special file) is counted and listed, never
scored and never a crash. An image one backbone reads and another cannot is left out of every detector's
figures, so all of them are measured on the same images.

Groups: each generator's images with the shared reals (stages.external.sets.SHARED), and OVERALL (every image).


Duplicates (`find_duplicates`): every readable image's content is hashed (BLAKE2b, stages.contracts.files). Copies
of one image within a class count once in every group (the first in the set's order is kept: a GenImage-style set
that repeats its reals per generator counts each photograph once in the overall row, once per generator in that
generator's); an image present both as real and as fake is an error naming both paths, or, with `Duplicates.exclude`,
every copy of it is left out of every figure. Both are counted in the metrics (`duplicates`).
Metrics (stages.heads.metrics, with the TPR at 1 % and 5 % FPR; the AUC, balanced and overall accuracy and the
TPRs each with its 95 % bootstrap interval, images resampled: docs/intervals.md): clean images only; the
transformed ones are plot data (the grid), as in code_eval. ROC points keep each detector's thresholds on its own
score scale (the shipped detector's logit, CoDE's heads' scales of stages.code.heads.SCALES), named in every row.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.external.sets import SHARED, Entry
from stages.heads.metrics import COUNTS, INTERVALS, METRICS, bounds, classification_metrics, roc_points
from stages.imaging.load import MAX_PIXELS
from stages.imaging.transforms import Transform
from stages.shipped.wild import Backbone
from stages.uncertainty.bootstrap import Bootstrap

OVERALL = "overall"
SHIPPED = "shipped"
# why an image was not scored; the folder walk's reasons (stages.shipped.wild.SKIP_REASONS) and `unreadable`
SKIP_REASONS = ("not_an_image", "special_file", "broken_link", "unreadable")
# the metrics key set (no full-cluster accuracy: an external set has no clusters), each interval's bounds beside
# its figure
FIGURE_COLUMNS = tuple(c for m in METRICS if m != "full_cluster_accuracy"
                       for c in ((m, *bounds(m)) if m in INTERVALS else (m,)))
GRID_COLUMNS = ("detector", "generator", "transform", *FIGURE_COLUMNS, *COUNTS, "threshold")
# chunk of images whose embeddings are scored together (CoDE's 1-NN head is slow one image at a time)
SCORE_CHUNK = 1024


class Duplicates(StrEnum):
    """What an image present both as real and as fake does (copies within a class always count once)."""

    error = "error"  # stop, naming both paths
    exclude = "exclude"  # leave every copy out of every figure, counted


@dataclass
class Repeats:
    """The set's content duplicates: each entry's digest (None: not read here), and what is left out."""

    digests: list[str | None]
    real_and_fake: set[int] = field(default_factory=set)  # entries whose content is also in the other class

    def counts(self, entries: Sequence[Entry]) -> dict[str, int]:
        """`within_class`: copies beyond the first of an image in its class, over the whole set (each counts
        once); `real_and_fake`: entries left out for being in both classes."""
        everything = np.ones(len(entries), dtype=bool)
        kept = first_copies(entries, self, everything)
        hashed = np.array([d is not None for d in self.digests], dtype=bool)
        left_out = np.isin(np.arange(len(entries)), list(self.real_and_fake))
        return {"within_class": int((hashed & ~left_out & ~kept).sum()), "real_and_fake": int(left_out.sum())}


def find_duplicates(entries: Sequence[Entry], rule: Duplicates) -> Repeats:
    """Hash every entry's bytes and find copies (module docstring). Raises InputError naming a real and a fake
    path of the same content when `rule` is error."""
    from stages.contracts.files import file_digest

    digests = [None if e.problem else file_digest(e.path) for e in entries]
    first: dict[tuple[str, int], int] = {}
    for i, (digest, entry) in enumerate(zip(digests, entries, strict=True)):
        if digest is not None:
            first.setdefault((digest, entry.label), i)
    both = {d for d, label in first if label == REAL and (d, FAKE) in first}
    if both and rule is Duplicates.error:
        digest = min(both, key=lambda d: first[d, REAL])
        raise InputError(entries[first[digest, FAKE]].path, f"is the same image (same bytes) as the real "
                         f"{entries[first[digest, REAL]].path}, and {len(both)} image(s) in all are both real and fake",
                         "fix the set, or set the benchmark's duplicates: exclude to leave them out (counted)")
    return Repeats(digests, {i for i, d in enumerate(digests) if d in both})


def first_copies(entries: Sequence[Entry], repeats: Repeats, mask: np.ndarray) -> np.ndarray:
    """`mask` without the entries left out (real and fake) and without every copy of an image after its first
    among the masked entries of its class."""
    kept = mask.copy()
    seen: set[tuple[str, int]] = set()
    for i in np.flatnonzero(mask):
        digest = repeats.digests[i]
        if i in repeats.real_and_fake:
            kept[i] = False
        elif digest is not None:
            kept[i] = (digest, entries[i].label) not in seen
            seen.add((digest, entries[i].label))
    return kept


@dataclass
class Scorer:
    """One detector: its scores come from `backbone` embeddings through `score`; FAKE where score >= threshold."""

    name: str
    backbone: Backbone
    score: Callable[[np.ndarray], np.ndarray]  # (M, D) -> (M,)
    threshold: float
    draft: int | None = None  # draft decoding of JPEGs as the detector's training images were (ImageItems)
    scale: str = "logit"  # what the score is (its ROC thresholds stay on this scale)
    id: str = ""  # which detector: an artifact's id, CoDE's heads by their model's digest
    caveat: str = ""  # what its training makes its scores mean (random weights), "" for none

    def record(self) -> dict[str, Any]:
        """What the metrics file says of this detector, so a result names what produced it: id, threshold (on its
        score scale, at the plot data's precision: a fitted value, not a figure that holds across machines),
        scale and caveat."""
        from stages.contracts.io import plot_cell

        return {"id": self.id, "threshold": plot_cell(float(self.threshold)), "scale": self.scale,
                "caveat": self.caveat or None}


@dataclass
class Scored:
    """Every entry's scores: detector -> (T, N) (NaN where the entry was not read), and the entries' errors."""

    entries: list[Entry]
    transforms: list[Transform]
    scores: dict[str, np.ndarray]
    thresholds: dict[str, float]
    errors: dict[int, str] = field(default_factory=dict)
    scales: dict[str, str] = field(default_factory=dict)  # detector -> its score's scale (default: logit)
    repeats: Repeats | None = None  # content duplicates (find_duplicates); None: not looked for

    @property
    def good(self) -> np.ndarray:
        return np.array([i not in self.errors for i in range(len(self.entries))], dtype=bool)

    def counted(self, mask: np.ndarray) -> np.ndarray:
        """The entries of `mask` that count: read, not left out as real and fake, the first copy in its class."""
        chosen = mask & self.good
        return chosen if self.repeats is None else first_copies(self.entries, self.repeats, chosen)


def image_seed(path: str, seed: int) -> int:
    """A stable per-image seed of the random transforms (Python's hash() is salted per process)."""
    return zlib.crc32(f"{seed}:{path}".encode())


def score_entries(entries: Sequence[Entry], scorers: Sequence[Scorer], transforms: Sequence[Transform], *,
                  seed: int = 0, batch_size: int = 32, workers: int = 0, max_pixels: int = MAX_PIXELS,
                  progress: bool = True, repeats: Repeats | None = None) -> Scored:
    """Score every entry with every detector, clean and after each transform (module docstring)."""
    from stages.shipped.wild import ImageItems, embed_items

    entries = list(entries)
    transforms = list(dict.fromkeys([Transform.clean, *transforms]))
    errors = {i: e.problem for i, e in enumerate(entries) if e.problem}
    skipped = errors | dict.fromkeys(repeats.real_and_fake if repeats else (), "")  # left out: never read
    scores = {s.name: np.full((len(transforms), len(entries)), np.nan) for s in scorers}
    by_backbone: dict[tuple[int, int | None], list[Scorer]] = {}
    for scorer in scorers:
        by_backbone.setdefault((id(scorer.backbone), scorer.draft), []).append(scorer)
    for group in by_backbone.values():
        backbone = group[0].backbone
        todo = [i for i in range(len(entries)) if i not in skipped]
        items = ImageItems([Path(entries[i].path) for i in todo], [entries[i].path for i in todo],
                           backbone.preprocess, transforms=transforms,
                           seeds=[image_seed(entries[i].path, seed) for i in todo], max_pixels=max_pixels,
                           draft=group[0].draft)
        chunk: list[tuple[int, np.ndarray]] = []
        for result in embed_items(backbone, items, batch_size=batch_size, workers=workers, progress=progress,
                                  description=f"benchmark {backbone.spec.get('alias', '')}"):
            entry = todo[result.index]
            if result.error is not None:
                errors[entry] = result.error
            else:
                chunk.append((entry, result.embeddings))
                if len(chunk) >= SCORE_CHUNK:
                    _score_chunk(chunk, group, scores)
        _score_chunk(chunk, group, scores)
    for name, array in scores.items():
        array[:, sorted(errors)] = np.nan  # read by one backbone, not the other: left out of every figure
        if not np.isfinite(array[:, [i for i in range(len(entries)) if i not in errors and i not in skipped]]).all():
            raise InputError(name, "gave a score that is not a finite number", "the model's weights are broken")
    return Scored(entries, transforms, scores, {s.name: s.threshold for s in scorers}, errors,
                  {s.name: s.scale for s in scorers}, repeats)


def _score_chunk(chunk: list[tuple[int, np.ndarray]], scorers: Sequence[Scorer], scores: dict[str, np.ndarray]) -> None:
    """Score a chunk of (entry index, (T, D) embeddings) with every scorer of their backbone; empty the chunk."""
    if not chunk:
        return
    index = [i for i, _ in chunk]
    stacked = np.stack([e for _, e in chunk], axis=1)  # (T, M, D)
    for scorer in scorers:
        for t in range(stacked.shape[0]):
            scores[scorer.name][t, index] = scorer.score(stacked[t])
    chunk.clear()


def generators_of(entries: Sequence[Entry]) -> list[str]:
    """The generators of a set, sorted (the shared reals' SHARED is none)."""
    return sorted({e.generator for e in entries} - {SHARED})


def groups_of(entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """Group -> mask over the entries: each generator's own images and the shared reals, then OVERALL."""
    generator = np.array([e.generator for e in entries], dtype=object)
    shared = generator == SHARED
    return {**{g: (generator == g) | shared for g in generators_of(entries)},
            OVERALL: np.ones(len(entries), dtype=bool)}


def measure(scores: np.ndarray, labels: np.ndarray, threshold: float,
            bootstrap: Bootstrap | None = None) -> dict[str, Any]:
    """The toolkit's metrics with the TPR at low FPR, and the group's counts; every metric None for no image. The
    intervals (with `bootstrap`) resample images: an external set's images are taken as independent."""
    if len(labels) == 0:
        return {**dict.fromkeys(FIGURE_COLUMNS), **dict.fromkeys(COUNTS, 0)}
    return classification_metrics(scores, labels, threshold=threshold, low_fpr=True, bootstrap=bootstrap)


def results(scored: Scored, bootstrap: Bootstrap | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics: detector -> group -> figures on clean images; grid rows: detector x group x transform)."""
    labels = np.array([e.label for e in scored.entries])
    chosen_in = {group: scored.counted(mask) for group, mask in groups_of(scored.entries).items()}
    metrics: dict[str, Any] = {}
    rows = []
    for name, array in scored.scores.items():
        metrics[name] = {}
        for t, transform in enumerate(scored.transforms):
            for group, chosen in chosen_in.items():
                figures = measure(array[t, chosen], labels[chosen], scored.thresholds[name], bootstrap)
                rows.append({"detector": name, "generator": group, "transform": transform.value, **figures,
                             "threshold": scored.thresholds[name]})
                if transform is Transform.clean:
                    metrics[name][group] = figures
    return metrics, rows


def counts(scored: Scored, skipped: dict[str, int]) -> dict[str, Any]:
    """How many distinct images were scored (real, fake, shared reals) and left out: by reason, and as content
    duplicates (copies within a class counted once, images in both classes left out), when looked for."""
    good = scored.counted(np.ones(len(scored.entries), dtype=bool))
    labels = np.array([e.label for e in scored.entries])
    generator = np.array([e.generator for e in scored.entries], dtype=object)
    figures = {"images": {"real": int((good & (labels == REAL)).sum()), "fake": int((good & (labels == FAKE)).sum()),
                          "shared_real": int((good & (generator == SHARED)).sum())},
               "skipped": {**skipped, "unreadable": len(scored.errors)}}
    if scored.repeats is not None:
        figures["duplicates"] = scored.repeats.counts(scored.entries)
    return figures


def roc_rows(scored: Scored, name: str) -> list[dict[str, Any]]:
    """The ROC of one detector over every clean image read (plot data), or [] without both classes; thresholds on
    the detector's own score scale (a 1-NN distance difference or an SVM decision is not a logit)."""
    labels = np.array([e.label for e in scored.entries])
    good = scored.counted(np.ones(len(scored.entries), dtype=bool))
    if len(set(labels[good].tolist())) < 2:
        return []
    return roc_points(scored.scores[name][0, good], labels[good], scale=scored.scales.get(name, "logit"))


def write_grid(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    from stages.contracts.io import atomic_path, csv_cell

    with atomic_path(path, kind="file") as tmp, tmp.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=GRID_COLUMNS)
        writer.writeheader()
        for row in rows:
            # no bootstrap (a run without one): the bounds' columns are empty
            writer.writerow({k: csv_cell(row.get(k)) for k in GRID_COLUMNS})


# the scores file's error column for an entry left out as both real and fake (Duplicates.exclude)
BOTH_CLASSES = "left out: the same image (same bytes) is also in the other class"


def write_scores(path: Path, scored: Scored) -> None:
    """One row per image: path, generator ('' for a shared real), label, error, then each detector's clean score
    (empty where the image was not read). Paths that are not UTF-8 are written with backslash escapes."""
    import csv

    from stages.contracts.io import atomic_path

    names = list(scored.scores)
    with atomic_path(path, kind="file") as tmp, tmp.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "generator", "label", "error", *names])
        excluded = scored.repeats.real_and_fake if scored.repeats else set()
        for i, entry in enumerate(scored.entries):
            error = scored.errors.get(i) or (BOTH_CLASSES if i in excluded else None)
            writer.writerow([_printable(entry.path), _printable(entry.generator), "real" if entry.label == REAL
                             else "fake", _printable(error or ""),
                             *("" if error else f"{scored.scores[n][0, i]:.6g}" for n in names)])


def write_roc(folder: Path, scored: Scored) -> None:
    """<folder>/<detector>.json: the ROC points of every detector (DVC plot data)."""
    import json

    from stages.contracts.io import atomic_path, plot_rows

    with atomic_path(folder, kind="dir", stage="benchmark") as tmp:
        tmp.mkdir()
        for name in scored.scores:
            rows = plot_rows(roc_rows(scored, name))
            (tmp / f"{name}.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
