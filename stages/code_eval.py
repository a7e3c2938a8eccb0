"""code_eval: the CoDE model (data/code/model.pt) + parents + children -> metrics/code_eval.json and the
generator x transformation grid (metrics/plots/code_eval.csv).

    python -m stages.code_eval --model data/code/model.pt --clusters data/clusters.parquet \\
        --children-root data/children --generators tiny_random --fit tiny_random --transforms jpeg95 \\
        --transforms jpeg75 --transforms jpeg50 --transforms half --transforms blur1 --transforms crop \\
        --protocol toolkit --released-fit-images 9600 --threshold val --seed 0 --bootstrap-resamples 1000 \\
        --bootstrap-seed 0 --batch-size 64 --workers 0 \\
        --threads 1 \\
        --metrics metrics/code_eval.json --grid metrics/plots/code_eval.csv

Each of --generators, --fit and --transforms takes one value; repeat it for several.

Protocol (--protocol toolkit: the released evaluation's steps with every train image and a threshold rule, plus
AUC and AP; --protocol released: CoDE's released evaluation exactly, see step 2 and 3):
  1. frozen features, L2-normalised, of the centre crop of each image at the model's size without resizing
     (smaller images padded with black), for the train and val splits (parents + children of
     --fit) and the test split (parents + children of --generators), the test split also after
     each transformation of --transforms (JPEG 95/75/50, half-size resize, Gaussian blur sigma 1, a random
     crop; stages.imaging.transforms);
  2. the three heads (stages.code.heads) fitted on train: logistic regression, 1-NN (cosine) and a
     one-class SVM on the train reals only (on the raw features); under `released` on a subsample of
     --released-fit-images train images drawn with --seed (the released code's 9,600), else on all of them;
  3. each head's threshold from val (stages.heads.threshold: balanced accuracy, ties nearest 0) or its
     natural 0 (--threshold; `released` always takes the natural 0: each head's own prediction), never from
     test; FAKE where score >= threshold;
  4. per generator (all test parents + that generator's test children) and overall (all of them): the
     headline AUC and balanced accuracy, then real, fake and overall accuracy, AP and the counts
     (stages.heads.metrics; no full-cluster accuracy), clean and per transformation; the AUC, balanced and
     overall accuracy each with its 95 % bootstrap interval, test clusters resampled (a parent and its
     children are not independent; docs/intervals.md).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.code.heads import EvalProtocol, ThresholdRule
from stages.contracts.device import device_option, resolve_device
from stages.contracts.errors import user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option
from stages.imaging.transforms import Transform
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
OVERALL = "overall"
RELEASED_FIT_IMAGES = 9600  # the released evaluation's training subsample


def evaluate(model, image_size: int, refs, generators: list[str], fit_generators: list[str],
             transforms: list[str], *, threshold: ThresholdRule, seed: int = 0, batch_size: int = 64,
             num_workers: int = 0, progress: bool = True, bootstrap: Bootstrap | None = None,
             protocol: EvalProtocol = EvalProtocol.toolkit,
             released_fit_images: int = RELEASED_FIT_IMAGES) -> tuple[dict, list[dict]]:
    """Fit the heads and score every (head, generator, transformation); returns (metrics, grid rows)."""
    import numpy as np

    from stages.code.augment import CLEAN
    from stages.code.data import EvalImages, extract_features
    from stages.code.heads import HEADS, fit_head, fit_subsample
    from stages.heads.metrics import COUNTS, INTERVALS, METRICS, bounds, classification_metrics
    from stages.heads.threshold import choose_threshold

    def features(chosen, transform=CLEAN):
        dataset = EvalImages(chosen, image_size, transform=transform, seed=seed)
        return extract_features(model, dataset, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                desc=f"{chosen[0].split} {transform}")

    def pick(split, gens):
        chosen = [r for r in refs if r.split == split and (not r.generator or r.generator in gens)]
        if not chosen:
            raise ValueError(f"no {split} images for generators {gens}")
        return chosen, np.array([r.label for r in chosen])

    (train, y_train), (val, y_val), (test, y_test) = pick("train", fit_generators), pick("val", fit_generators), \
        pick("test", generators)
    if protocol is EvalProtocol.released:  # the released code's subsample, and each head's own decision
        kept = fit_subsample(len(train), released_fit_images, seed)
        train, y_train, threshold = [train[i] for i in kept], y_train[kept], ThresholdRule.natural
    test_clusters = np.array([r.cluster_id for r in test])
    x_train = features(train)
    scorers = {head: fit_head(head, x_train, y_train) for head in HEADS}
    if threshold is ThresholdRule.val:
        x_val = features(val)
        thresholds = {head: choose_threshold(scorers[head](x_val), y_val) for head in HEADS}
    else:
        thresholds = dict.fromkeys(HEADS, 0.0)

    groups = {OVERALL: np.ones(len(test), bool)} | {
        gen: np.array([not r.generator or r.generator == gen for r in test]) for gen in generators}
    rows = []
    for transform in [CLEAN, *transforms]:
        x_test = features(test, transform)
        for head in HEADS:
            scores = scorers[head](x_test)
            for group, mask in groups.items():
                rows.append({"head": head, "generator": group, "transform": transform,
                             # no cluster ids here: full-cluster accuracy is left out
                             **classification_metrics(scores[mask], y_test[mask], threshold=thresholds[head],
                                                      units=test_clusters[mask], bootstrap=bootstrap),
                             "threshold": thresholds[head]})

    metrics: dict = {head: {} for head in HEADS}
    for row in rows:
        keys = [c for m in METRICS for c in ((m, *bounds(m)) if m in INTERVALS else (m,))] + list(COUNTS)
        scores = {k: row[k] for k in keys if k in row}
        # the robustness grid and the thresholds (on each head's own score scale, chosen between neighbouring
        # scores: not a figure that holds across machines) are plot data only
        if row["transform"] == CLEAN:
            metrics[row["head"]][row["generator"]] = scores
    metrics["images"] = {"train": len(train), "val": len(val), "test_real": int((y_test == 0).sum()),
                         **{f"test_fake_{gen}": int(groups[gen].sum() - (y_test == 0).sum()) for gen in generators}}
    return metrics, rows


def write_grid(path: Path, rows: list[dict]) -> None:
    """The head x generator x transformation grid as CSV (DVC plot data); empty cells are not applicable."""
    import csv

    from stages.contracts.io import atomic_path, csv_cell

    columns = list(rows[0])
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(v) for k, v in row.items()})


def run(model_path: Path, clusters: Path, children_root: Path, generators: list[str], fit_generators: list[str],
        transforms: list[str], metrics_path: Path, grid_path: Path, *, threshold: ThresholdRule, seed: int,
        batch_size: int, num_workers: int, device: str = "auto", threads: int, progress: bool = True,
        bootstrap: Bootstrap | None = None, protocol: EvalProtocol = EvalProtocol.toolkit,
        released_fit_images: int = RELEASED_FIT_IMAGES) -> dict:
    import torch

    from stages.code.data import TEST_TRANSFORMS, read_images
    from stages.code.net import load_model
    from stages.contracts.errors import InputError
    from stages.contracts.io import check_outputs, write_metrics

    check_outputs(writes=[metrics_path, grid_path], reads=[model_path, clusters, children_root])
    unknown = [t for t in transforms if t not in TEST_TRANSFORMS]
    if unknown:
        raise InputError("code_eval.transforms", f"unknown {unknown}; known: {list(TEST_TRANSFORMS)}")
    if threads:
        torch.set_num_threads(threads)
    model, config, _ = load_model(model_path, device=resolve_device(device))
    refs = read_images(clusters, children_root, sorted(set(generators) | set(fit_generators)),
                       ("train", "val", "test"))
    try:
        metrics, rows = evaluate(model, config.image_size, refs, generators, fit_generators, transforms,
                                 threshold=threshold, seed=seed, batch_size=batch_size, num_workers=num_workers,
                                 progress=progress, bootstrap=bootstrap, protocol=protocol,
                                 released_fit_images=released_fit_images)
    except ValueError as error:
        raise InputError(str(clusters), str(error)) from error
    write_metrics(metrics_path, metrics)
    write_grid(grid_path, rows)
    return metrics


@app.command()
def main(
    model: Path = typer.Option(..., help="The CoDE model written by code_train."),
    clusters: Path = typer.Option(..., help="The clusters table (parents)."),
    children_root: Path = typer.Option(..., help="Folder holding one children folder per generator."),
    generators: list[str] = typer.Option(..., help="Generators evaluated (test children), each on its own and "
                                                   "all together (overall); repeat the option."),
    fit_generators: list[str] = typer.Option(..., "--fit", help="Generators whose train / val children fit the "
                                                                "heads and choose thresholds; repeat the option."),
    transforms: list[Transform] = typer.Option(..., help="Test transformations (stages.imaging.transforms); "
                                                         "repeat the option."),
    protocol: EvalProtocol = typer.Option(..., help="toolkit: every train image fits the heads, thresholds by "
                                                    "--threshold; released: CoDE's released evaluation (heads fitted "
                                                    "on --released-fit-images train images, natural thresholds)."),
    released_fit_images: int = typer.Option(..., min=1, help="released: train images (a seeded subsample) that fit "
                                                             "the heads; the released code's 9600."),
    threshold: ThresholdRule = typer.Option(..., help="toolkit: val (each head's threshold maximises balanced "
                                                      "accuracy on val) or natural (the head's own decision)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    grid: Path = typer.Option(..., help="Output head x generator x transformation grid (CSV)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the random test crop and the heads."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
    batch_size: int = typer.Option(64, min=1, envvar="PARENTAGE_CODE_EVAL_BATCH_SIZE",
                                   help="Images per forward pass."),
    workers: int = parallel_option(0, envvar="PARENTAGE_CODE_EVAL_WORKERS", help="DataLoader worker processes."),
    threads: int = parallel_option(1, envvar="PARENTAGE_CODE_EVAL_THREADS",
                                   help="torch CPU threads (0: torch's default)."),
    device: str = device_option("auto", envvar="PARENTAGE_CODE_EVAL_DEVICE", what="the CoDE model",
                                note="auto: the GPU when one is visible, else MPS, else the CPU."),
) -> None:
    """Evaluate CoDE's frozen features with the released heads on clean and transformed test images."""
    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    with user_errors():
        result = run(model, clusters, children_root, generators, fit_generators, [t.value for t in transforms],
                     metrics, grid, threshold=threshold, seed=seed, batch_size=batch_size, num_workers=workers,
                     device=device, threads=threads, bootstrap=Bootstrap(bootstrap_resamples, bootstrap_seed),
                     protocol=protocol, released_fit_images=released_fit_images)
    overall = {head: result[head][OVERALL]["overall_accuracy"] for head in ("logreg", "knn", "ocsvm")}
    typer.echo(f"{metrics}: overall clean accuracy " + ", ".join(f"{h} {a:.3f}" for h, a in overall.items()))


if __name__ == "__main__":
    app()
