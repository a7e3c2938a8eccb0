"""clusters: a captioned image source -> data/clusters.parquet (one row per parent) and metrics/clusters.json.

    python -m stages.clusters --source demo --input stages/sources/demo --images data/demo_parents \\
        --coco-captions 'annotations/captions_*.json' --karpathy-split '' --captions-per-parent 5 \\
        --val-fraction 0.2 --test-fraction 0.2 --seed 0 --on-bad error \\
        --out data/clusters.parquet --metrics metrics/clusters.json

Sources: ``demo`` (photographs shipped in scikit-image / scikit-learn, copied into the workspace by the
demo_parents stage; captions in stages/sources/demo), ``coco`` (COCO caption JSON files and their image folders,
optionally Karpathy's split file) and ``manifest`` (CSV / JSONL / Parquet with an image path and captions).
See stages.sources.readers. Every parent image must lie inside ``--images``, a DVC dependency of the stage: so
replacing, adding or deleting an image reruns it (and the table records each image's sha256, so a replaced image
changes the table and everything downstream).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from stages.contracts.errors import InputError, OnBad, Skips, user_errors
from stages.contracts.runtime import Command, parallel_option

app = Command()


class Source(StrEnum):
    demo = "demo"
    coco = "coco"
    manifest = "manifest"


def read_source(source: Source, input_path: Path, images: Path, *, coco_captions: str,
                karpathy_split: Path | None, skips: Skips):
    from stages.sources import readers as sources

    if not input_path.exists():
        raise InputError(str(input_path), f"the {source.value} source does not exist (clusters.input)")
    if not images.is_dir():
        raise InputError(str(images), "the image folder does not exist (clusters.images)",
                         "the folder holding every parent image; the demo's is made by `dvc repro demo_parents`")
    if source is Source.demo:
        return sources.read_demo(input_path, images, skips)
    if source is Source.coco:
        return sources.read_coco(input_path, coco_captions, karpathy_split, skips)
    return sources.read_manifest(input_path, skips)


def run(source: Source, input_path: Path, images: Path, out: Path, metrics: Path, *, captions_per_parent: int,
        coco_captions: str, karpathy_split: Path | None, val_fraction: float, test_fraction: float, seed: int,
        skip_bad: bool, workers: int = 8, progress: bool = True) -> dict:
    """Build and write the clusters table; return the metrics, plus the first skipped inputs of each reason
    under ``skipped_examples`` (not a metric: shown to the user)."""
    import pyarrow.parquet as pq

    from stages.contracts.io import atomic_path, check_outputs, write_metrics
    from stages.sources import table

    check_outputs(writes=[out, metrics], reads=[input_path, images, karpathy_split])
    if captions_per_parent < 1:
        raise InputError("clusters.captions_per_parent", f"is {captions_per_parent}; expected at least 1")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError("--val-fraction and --test-fraction", f"are {val_fraction} and {test_fraction}; each must "
                         "be in [0, 1) and their sum below 1, to leave parents for train")
    skips = Skips(skip=skip_bad)
    records = read_source(source, input_path, images, coco_captions=coco_captions, karpathy_split=karpathy_split,
                          skips=skips)
    table.check_inside(records, images)
    records, dropped = table.keep_captions(records, captions_per_parent, skips)
    checked = table.check_images(records, skips, workers=workers, progress=progress)
    if not checked:
        raise InputError(str(input_path), f"no usable parents ({skips.total} skipped: {dict(skips.counts)})")
    if all(record.split for record, _ in checked):
        splits = [record.split for record, _ in checked]
    else:
        splits = table.assign_splits([r.source_id for r, _ in checked], val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed)
    arrow = table.build_table(checked, splits)
    arrow = arrow.replace_schema_metadata({"captions_per_parent": str(captions_per_parent),
                                           "source": source.value})
    with atomic_path(out) as tmp:
        pq.write_table(arrow, tmp)

    counts = {split: splits.count(split) for split in ("train", "val", "test")}
    result = {
        "parents": {**counts, "total": len(splits)},
        "skipped": {**skips.as_metrics(table.SKIP_REASONS), "total": skips.total},
        "extra_captions_dropped": int(dropped),
    }
    write_metrics(metrics, result)
    examples = [f"{reason}: {example}" for reason, shown in skips.examples.items() for example in shown]
    return {**result, "skipped_examples": examples}


@app.command()
def main(
    source: Source = typer.Option(..., help="Kind of captioned image source."),
    input_path: Path = typer.Option(..., "--input",
                                    help="demo: folder with captions.json; coco: the COCO folder "
                                         "(annotations/ and image folders); manifest: the manifest file."),
    images: Path = typer.Option(..., help="The folder holding every parent image (a DVC dependency, so a "
                                          "replaced, added or deleted image reruns the stage); an image "
                                          "outside it is an error. demo: the demo_parents stage's output."),
    out: Path = typer.Option(..., help="Output Parquet table."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    captions_per_parent: int = typer.Option(..., min=1, help="N: captions kept per parent (the first N by annotation "
                                                      "id); parents with fewer are bad input."),
    coco_captions: str = typer.Option(..., help="coco: glob of caption files under --input."),
    karpathy_split: str = typer.Option(..., help="coco: Karpathy's dataset_coco.json; it then decides the "
                                                 "splits. Empty: a seeded split by the fractions below."),
    val_fraction: float = typer.Option(..., min=0.0, max=1.0, help="Share of parents in val (seeded split)."),
    test_fraction: float = typer.Option(..., min=0.0, max=1.0, help="Share of parents in test (seeded split)."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of the split."),
    on_bad: OnBad = typer.Option(..., help="error: stop at the first bad input, naming it; skip: "
                                           "skip and count bad inputs (counts in the metrics)."),
    workers: int = parallel_option(8, minimum=1,
                                   help="Threads decoding images to check them (speed only, not a param)."),
) -> None:
    """Turn a captioned image source into the clusters table: one row per parent with exactly N captions."""
    with user_errors():
        result = run(source, input_path, images, out, metrics, captions_per_parent=captions_per_parent,
                     coco_captions=coco_captions,
                     karpathy_split=Path(karpathy_split) if karpathy_split else None,
                     val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                     skip_bad=on_bad is OnBad.skip, workers=workers)
    parents, skipped = result["parents"], result["skipped"]
    typer.echo(f"{out}: {parents['total']:.0f} parents (train {parents['train']:.0f}, val {parents['val']:.0f}, "
               f"test {parents['test']:.0f}); {skipped['total']:.0f} skipped")
    for example in result["skipped_examples"]:
        typer.echo(f"  skipped {example}")


if __name__ == "__main__":
    app()
