"""detector: the embeddings of `model.backbone` -> the detector the project ships (data/detector/), its
metrics (metrics/detector.json) and its robustness (metrics/plots/detector_robustness.csv).

    python -m stages.detector --backbone efficientnet_lite0 --generators tiny_random --head logreg \\
        --registry stages/embedding/backbones.yaml --selection data/selections/model.json \\
        --embeddings data/embeddings/model --clusters data/clusters.parquet \\
        --children data/children --transforms jpeg95 --transforms jpeg75 --transforms jpeg50 --transforms half \\
        --transforms blur1 --transforms crop --seed 0 --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --batch-size 32 --workers 2 --device cpu \\
        --out data/detector --metrics metrics/detector.json --robustness metrics/plots/detector_robustness.csv

The head is trained on the train split of the parents and of the children of every `--generators`, reading
the embedding caches (no image is embedded again for training); C and the threshold are chosen on val
(stages.shipped.head_fit). Metrics (stages.heads.metrics): the headline AUC and balanced accuracy, then real,
fake, overall and full-cluster accuracy at the threshold, AP and the counts, on val and test, per generator (its
children with the split's parents) and for all generators together; the AUC, balanced, overall and full-cluster
accuracy each with its 95 % bootstrap interval, test clusters resampled (docs/intervals.md).
Robustness: the test images, read again and embedded through the registry's backbone after each transform
(stages.imaging.transforms), scored with the shipped detector.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from stages.contracts.device import device_option
from stages.contracts.errors import InputError, user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option
from stages.imaging.transforms import Transform
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
# largest |clean re-embedding - cached embedding| that still counts as the same path (float32 and threads)
CLEAN_TOLERANCE = 1e-4


class Head(StrEnum):
    logreg = "logreg"


@app.command()
def main(
    backbone: str = typer.Option(..., help="Backbone alias (a registry entry); its embeddings must exist."),
    generators: list[str] = typer.Option(..., help="Generators whose children train the detector (repeat)."),
    head: Head = typer.Option(..., help="Head on the embeddings: logreg (C chosen on val)."),
    registry: Path = typer.Option(..., help="Backbone registry (robustness re-embeds the test images with the "
                                            "backbone)."),
    selection: Path = typer.Option(..., help="The select stage's file of the --generators sets: their registry "
                                             "entries say which have random weights (recorded in the detector, "
                                             "which then says so)."),
    embeddings: Path = typer.Option(..., help="The backbone's folder of embedding caches: parents.h5, <gen>.h5 "
                                              "(the pipeline's data/embeddings/model/)."),
    clusters: Path = typer.Option(..., help="Clusters table (test parents' images)."),
    children: Path = typer.Option(..., help="Folder of children folders, one per generator."),
    out: Path = typer.Option(..., help="Output detector folder (detector.json, head.safetensors)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    robustness: Path = typer.Option(..., help="Output plot data: test metrics per transform and generator."),
    transforms: list[Transform] = typer.Option(..., help="Transforms of the robustness test (repeat)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1,
                             help="Seed of the robustness test's random crop (L-BFGS draws nothing)."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
    batch_size: int = typer.Option(32, envvar="PARENTAGE_DETECTOR_BATCH_SIZE", min=1,
                                   help="Images per backbone forward (robustness)."),
    workers: int = parallel_option(2, envvar="PARENTAGE_DETECTOR_WORKERS",
                                   help="DataLoader workers reading images (robustness)."),
    device: str = device_option("cpu", envvar="PARENTAGE_DETECTOR_DEVICE", what="the backbone (robustness)"),
) -> None:
    """Train the shipped detector, measure it on val and test, and test its robustness on test."""
    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    from stages.contracts.io import check_outputs, write_metrics
    from stages.contracts.selection import read_selection, selection_random_weights
    from stages.shipped.artifact import check_backbone, save_detector
    from stages.shipped.train import evaluate, robustness_rows, train, write_robustness
    from stages.shipped.wild import load_registry_backbone

    with user_errors():
        check_outputs(writes=[out, metrics, robustness], reads=[selection, registry, embeddings, clusters, children])
        # an imported set (import_children) has no registry entry: its children come from a real generator
        random_weights = selection_random_weights(read_selection(selection), generators, where=str(selection))
        detector, tables = train(embeddings, generators, head=head.value, seed=seed,
                                 random_weight_generators=random_weights)
        encoder = load_registry_backbone(backbone, registry, device)
        try:
            check_backbone(detector, encoder.spec, where=f"{registry}'s")
        except ValueError as error:
            raise InputError(str(embeddings), str(error),
                             "the caches were embedded with another registry entry: rerun embed") from error
        save_detector(detector, out)
        bootstrap = Bootstrap(bootstrap_resamples, bootstrap_seed)
        result = evaluate(detector, tables, bootstrap)
        rows = robustness_rows(detector, encoder, clusters, children, generators, transforms, tables=tables,
                               seed=seed, batch_size=batch_size, workers=workers, bootstrap=bootstrap)
        # float noise in itself: the metric says whether it stays within the tolerance, the log gives it
        gap = rows.clean_max_abs_diff
        result["checks"] = {"clean_embedding_within_tolerance": None if gap is None else int(gap < CLEAN_TOLERANCE)}
        typer.echo(f"clean re-embedding against the cache: max |difference| {gap}")
        write_robustness(robustness, rows.rows)
        write_metrics(metrics, result)
    test = result["test"]["all"]
    typer.echo(f"{out}: detector {detector.id}, threshold {detector.threshold:.3f}; test AUC {test['auc']:.3f}, "
               f"balanced accuracy {test['balanced_accuracy']:.3f}, accuracy {test['overall_accuracy']:.3f}"
               + (f" ({detector.caveat}: a demo of the plumbing)" if detector.caveat else ""))


if __name__ == "__main__":
    app()
