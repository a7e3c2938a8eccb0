"""benchmark: an external labelled image set -> the shipped detector's and CoDE's heads' figures on it, per
generator and overall (metrics/benchmark/<name>.json), the detector x generator x transform grid and the ROC
points (plot data), and every image's scores (data/benchmark/<name>.csv).

    python -m stages.benchmark --layout forensynths --root /data/cnn_synth_test --manifest '' --split '' \\
        --transforms jpeg75 --transforms half --detector data/detector --registry stages/embedding/backbones.yaml \\
        --code-model data/code/model.pt --code-setting data/code/setting.json --clusters data/clusters.parquet \\
        --children-root data/children --code-threshold val --duplicates error --seed 0 --bootstrap-resamples 1000 \\
        --bootstrap-seed 0 --scores data/benchmark/cnn_synth.csv \\
        --metrics metrics/benchmark/cnn_synth.json --grid metrics/plots/benchmark/cnn_synth.csv \\
        --roc metrics/plots/benchmark_roc/cnn_synth --detectors detectors

The set (stages.external.sets): --layout forensynths (<generator>/0_real|1_fake), genimage
(<generator>/[<split>/]nature|ai), real_fake (real/ and fake/[<generator>/]) or manifest (a CSV, TSV or JSON-lines
file under --root naming each image's path, label and generator). Each --transforms is one of the robustness
grid's (stages.imaging.transforms); repeat it; none gives the clean images only.

Detectors (stages.external.scoring): `shipped`, the shipped detector (its backbone from the registry, its logit,
its threshold); `code_logreg`, `code_knn`, `code_ocsvm`, CoDE's heads as code_eval fits them (stages.code.fitted)
on the train / val images of the generators CoDE was trained on (--code-setting), thresholds by
--code-threshold. Figures (stages.heads.metrics): the headline AUC, balanced accuracy and TPR at 1 % and 5 % FPR
(`tpr_at_fpr`, a threshold on the reals' scores; null with fewer than 100 / 20 reals), then real, fake and overall
accuracy at each detector's threshold, AP and the counts, per generator (its images and the shared reals) and
overall, on the clean images; the transformed ones are plot data. The headline figures and overall accuracy
carry 95 % bootstrap intervals, images resampled (docs/intervals.md).
Duplicates (stages.external.scoring.find_duplicates): images are hashed by content; copies within a class count
once, an image both real and fake stops the run naming both paths, or with --duplicates exclude is left out of
every figure; both are counted in the metrics (`duplicates`).
Bad files (missing, empty, truncated, not an image, special files, broken links) are counted in the metrics
(`skipped`), listed in the scores file's error column and on stderr, and never stop the run; a set, layout or
option that is wrong stops it with exit code 2 and a message naming it. Runs offline.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer

from stages.code.heads import ThresholdRule
from stages.contracts.device import device_option
from stages.contracts.errors import user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option
from stages.external.scoring import Duplicates
from stages.external.sets import Layout
from stages.imaging.transforms import Transform
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()


def code_scorers(model_path: Path, setting_path: Path, clusters: Path, children_root: Path, rule: ThresholdRule, *,
                 device: str, batch_size: int, workers: int, progress: bool = True) -> list:
    """A Scorer per CoDE head, fitted as code_eval fits them on the generators of CoDE's setting."""
    from stages.code.fitted import CodeBackbone, fit_heads
    from stages.code.heads import SCALES
    from stages.code.net import load_model
    from stages.code.setting import read_setting
    from stages.contracts.device import resolve_device
    from stages.contracts.errors import InputError
    from stages.contracts.files import file_digest
    from stages.external.scoring import Scorer

    setting = read_setting(setting_path)
    if setting is None:
        raise InputError(str(setting_path), "not found", "code_train writes it beside its model (dvc repro code_train)")
    model, config, _ = load_model(model_path, device=resolve_device(device))
    fitted = fit_heads(model, config.image_size, clusters, children_root, setting.generators, rule=rule,
                       batch_size=batch_size, num_workers=workers, progress=progress)
    backbone = CodeBackbone(model, config.image_size)
    digest = (file_digest(model_path) or "")[:12]
    caveat = f"trained from scratch on the children of {', '.join(setting.generators)}"
    return [Scorer(f"code_{head}", backbone, fitted.scorers[head], fitted.thresholds[head], scale=SCALES[head],
                   id=f"code-{digest}-{head}", caveat=caveat) for head in fitted.scorers]


def shipped_scorer(detector_path: Path, registry: Path, device: str):
    """The shipped detector as a Scorer: its backbone (checked against the registry's), logit and threshold."""
    from stages.external.scoring import SHIPPED, Scorer
    from stages.shipped.wild import draft_for, load_checked

    detector, backbone = load_checked(detector_path, registry, device)
    # JPEGs decoded as the detector's training images were (embed.jpeg_decode, recorded in it), as detect does
    draft = draft_for(backbone, detector.jpeg_decode)
    return Scorer(SHIPPED, backbone, detector.decision, detector.threshold, draft, id=detector.id,
                  caveat=detector.caveat), detector


def extra_scorers(folder: Path, registry: Path, device: str) -> list:
    """One Scorer per detector artifact below `folder` (each folder holding a detector.json: the pipeline's
    detectors copied there, converted published ones such as `parentage convert_code_release`'s), named by its
    path below `folder` with `_` for `/` (code_release/linear -> code_release_linear)."""
    from stages.contracts.errors import InputError
    from stages.external.scoring import SHIPPED, Scorer
    from stages.shipped.artifact import SPEC_FILE
    from stages.shipped.wild import draft_for, load_checked

    if not folder.is_dir():
        raise InputError(str(folder), "no such folder of detectors (--detectors)")
    scorers = []
    for spec in sorted(folder.rglob(SPEC_FILE)):
        name = "_".join(spec.parent.relative_to(folder).parts) or folder.name
        if name == SHIPPED or name.startswith("code_") and name.removeprefix("code_") in ("logreg", "knn", "ocsvm"):
            raise InputError(str(spec.parent), f"its name {name!r} is one of the benchmark's own detectors; "
                                               "rename its folder")
        detector, backbone = load_checked(spec.parent, registry, device)
        scorers.append(Scorer(name, backbone, detector.decision, detector.threshold,
                              draft_for(backbone, detector.jpeg_decode), id=detector.id, caveat=detector.caveat))
    return scorers


def run(layout: Layout, root: Path, manifest: str, split: str, transforms: list[Transform],
        load_scorers: Callable[[], list], *, scores: Path, metrics: Path, grid: Path, roc: Path, seed: int,
        batch_size: int = 32, workers: int = 0, progress: bool = True, bootstrap: Bootstrap | None = None,
        duplicates: Duplicates = Duplicates.error) -> dict:
    """Read the set (before `load_scorers` loads any model, so a wrong set is reported in seconds), score it with
    every scorer, write every output; return the metrics."""
    from stages.contracts.errors import InputError, Skips
    from stages.contracts.io import check_outputs, write_metrics
    from stages.external.scoring import (
        counts,
        find_duplicates,
        results,
        score_entries,
        write_grid,
        write_roc,
        write_scores,
    )
    from stages.external.sets import read_set
    from stages.shipped.wild import SKIP_REASONS as WALK_REASONS

    if len(set(transforms)) != len(transforms) or Transform.clean in transforms:
        raise InputError("--transforms", f"{[t.value for t in transforms]}: each at most once, and not clean "
                         "(always scored)")
    skips = Skips(skip=True)
    entries = read_set(layout, root, manifest=manifest, split=split, skips=skips)
    # before any model loads: no output is the set's manifest or one of its images
    check_outputs(writes=[scores, metrics, grid, roc], reads=[manifest, *(entry.path for entry in entries)])
    repeats = find_duplicates(entries, duplicates)  # an image both real and fake stops here, before any model
    scorers = load_scorers()
    scored = score_entries(entries, scorers, transforms, seed=seed, batch_size=batch_size, workers=workers,
                           progress=progress, repeats=repeats)
    if scored.good.sum() == 0:
        raise InputError(str(root), f"not one of its {len(entries)} images could be read: "
                         + "; ".join(f"{entries[i].path}: {e}" for i, e in sorted(scored.errors.items())[:3]))
    by_detector, rows = results(scored, bootstrap)
    figures = {**counts(scored, skips.as_metrics(WALK_REASONS)), **by_detector}
    write_scores(scores, scored)
    write_grid(grid, rows)
    write_roc(roc, scored)
    write_metrics(metrics, figures, provenance={"detectors": {s.name: s.record() for s in scorers}})
    for reason, examples in skips.examples.items():
        for example in examples:
            print(f"skipped ({reason.replace('_', ' ')}) {example}", file=sys.stderr)
    for index, error in sorted(scored.errors.items())[:20]:
        print(f"unreadable {entries[index].path}: {error}", file=sys.stderr)
    if len(scored.errors) > 20:
        print(f"unreadable: {len(scored.errors) - 20} more (the error column of {scores})", file=sys.stderr)
    return figures


@app.command()
def main(
    layout: Layout = typer.Option(..., help="How the set is laid out: forensynths, genimage, real_fake, manifest."),
    root: Path = typer.Option(..., help="The folder holding the set (and its manifest)."),
    manifest: str = typer.Option(..., help="layout manifest: the manifest file, relative to --root; else ''."),
    split: str = typer.Option(..., help="Folder layouts: keep only class folders with a folder of this name on "
                                        "their path (GenImage's val); '' keeps all."),
    transforms: list[Transform] = typer.Option([], help="Transforms of the robustness grid also scored (repeat); "
                                                        "none: clean images only."),
    duplicates: Duplicates = typer.Option(..., help="An image (same bytes) both real and fake: error "
                                                                 "(naming both paths) or exclude (left out of every "
                                                                 "figure, counted). Copies within a class count "
                                                                 "once either way."),
    detector: Path = typer.Option(..., help="The shipped detector's folder (the detector stage's data/detector)."),
    registry: Path = typer.Option(..., help="Backbone registry: the detector's backbone is loaded from it."),
    code_model: Path = typer.Option(..., help="CoDE's model (code_train's data/code/model.pt)."),
    code_setting: Path = typer.Option(..., help="CoDE's setting (data/code/setting.json): its generators' train "
                                                "and val children fit the heads."),
    clusters: Path = typer.Option(..., help="The clusters table (the train / val parents CoDE's heads fit on)."),
    children_root: Path = typer.Option(..., help="Folder of the children folders, one per generator."),
    code_threshold: ThresholdRule = typer.Option(..., help="CoDE heads' thresholds: val (code_eval's rule) or "
                                                           "natural (0)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the random transforms (the crop), per image."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
    scores: Path = typer.Option(..., help="Output CSV: every image's clean scores and errors."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    grid: Path = typer.Option(..., help="Output plot data: detector x generator x transform figures (CSV)."),
    roc: Path = typer.Option(..., help="Output folder of plot data: <detector>.json ROC points."),
    detectors: Path = typer.Option(..., help="A folder of more detector artifacts (none: an empty folder), each "
                                             "scored beside the shipped detector and CoDE (converted published "
                                             "detectors: docs/detect.md), named by its path below the folder."),
    batch_size: int = typer.Option(32, min=1, envvar="PARENTAGE_BENCHMARK_BATCH_SIZE",
                                   help="Images per forward pass."),
    workers: int = parallel_option(2, envvar="PARENTAGE_BENCHMARK_WORKERS",
                                   help="DataLoader worker processes reading images."),
    device: str = device_option("cpu", envvar="PARENTAGE_BENCHMARK_DEVICE", what="the models"),
) -> None:
    """Score an external labelled image set with the shipped detector and CoDE's heads (and more detectors)."""
    stay_offline()  # no command downloads a model: weights come from disk or the local caches

    def load_scorers() -> list:
        shipped, loaded = shipped_scorer(detector, registry, device)
        if loaded.caveat:
            print(f"warning: detector {loaded.id} was {loaded.caveat}: its figures on real generators' images "
                  "say nothing about real detection", file=sys.stderr)
        extra = extra_scorers(detectors, registry, device)
        return [shipped, *code_scorers(code_model, code_setting, clusters, children_root, code_threshold,
                                       device=device, batch_size=batch_size, workers=workers), *extra]

    with user_errors():
        figures = run(layout, root, manifest, split, list(transforms), load_scorers, scores=scores, metrics=metrics,
                      grid=grid, roc=roc, seed=seed, batch_size=batch_size, workers=workers,
                      bootstrap=Bootstrap(bootstrap_resamples, bootstrap_seed), duplicates=duplicates)
    images, skipped = figures["images"], figures["skipped"]
    overall = ", ".join(f"{name} {figures[name]['overall']['overall_accuracy']:.3f}"
                        for name in figures if name not in ("images", "skipped", "duplicates"))
    typer.echo(f"{metrics}: {images['real']} real and {images['fake']} fake images scored, "
               f"{sum(skipped.values())} left out; overall accuracy {overall}")


if __name__ == "__main__":
    app()
