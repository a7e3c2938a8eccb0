"""embed: one backbone x one image set -> an HDF5 embedding cache (stages/contracts/embeddings.py) and its metrics.

Parents (and, for image-text backbones, their captions):

    python -m stages.embed --backbone efficientnet_lite0 --registry stages/embedding/backbones.yaml \\
        --clusters data/clusters.parquet --children '' --out data/embeddings/efficientnet_lite0/parents.h5 \\
        --captions-out data/embeddings/efficientnet_lite0/captions.h5 \\
        --metrics metrics/embed/efficientnet_lite0/parents.json --batch-size 32 --chunk-size 512 --workers 2 \\
        --threads 0 --precision auto --device auto --on-bad error --jpeg-decode full

One generator's children: ``--children data/children/tiny_random --captions-out ''``, writing
``data/embeddings/<backbone>/tiny_random.h5``. Several GPUs (or CPU processes) split the work with the same
result: ``accelerate launch --num_processes 2 -m stages.embed ...``, under DVC PARENTAGE_EMBED_LAUNCHER (on several
machines too: docs/cluster.md). A killed run, rerun, continues from
its finished chunks (stages/embedding/runner.py describes the protocol).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.device import device_option
from stages.contracts.errors import InputError, OnBad, user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option
from stages.embedding.runner import Precision, RunConfig
from stages.imaging.load import JpegDecode

app = Command()
# read by dvc.yaml's shell, not by this module: what runs `-m stages.embed` (docs/cluster.md)
ENVIRONMENT = ("PARENTAGE_EMBED_LAUNCHER",)
RESERVED_SETS = ("parents", "captions")  # file names a generator's children may not take


def run(backbone_alias: str, registry: Path, clusters_path: Path, out: Path, metrics: Path, *,
        children: Path | None, captions_out: Path | None, config: RunConfig, device: str,
        threads: int) -> dict | None:
    """Embed one set (and the captions, for parents); write the caches and, on the main process, the metrics."""
    import torch
    from accelerate import PartialState

    from stages.compute.processes import group_timeout
    from stages.contracts.clusters import read_clusters
    from stages.contracts.io import check_outputs, write_metrics
    from stages.embedding import runner as embedding
    from stages.embedding.backbones import get_spec, load_backbone

    check_outputs(writes=[out, captions_out, metrics], reads=[registry, clusters_path, children])
    if threads > 0:
        torch.set_num_threads(threads)
    for name, value in (("batch_size", config.batch_size), ("chunk_size", config.chunk_size)):
        if value < 1:
            raise InputError(f"PARENTAGE_EMBED_{name.upper()} (--{name.replace('_', '-')})",
                             f"is {value}; expected at least 1")
    image_set = children.name if children is not None else "parents"
    if children is not None and image_set in RESERVED_SETS:
        raise InputError(str(children), f"a generator may not be named {image_set!r}: its cache would collide")
    try:
        spec = get_spec(backbone_alias, registry)
    except KeyError as error:
        raise InputError("--backbone", str(error.args[0])) from error
    clusters = read_clusters(clusters_path)
    rows = embedding.child_rows(children, clusters) if children is not None else embedding.parent_rows(clusters)

    state = PartialState(cpu=device == "cpu", timeout=group_timeout())
    backbone = load_backbone(spec)
    attrs = {**backbone.attrs(), "image_set": image_set}
    if config.jpeg_draft or config.device_decode:  # recorded only when not full: such caches keep their bytes
        attrs["jpeg_decode"] = (JpegDecode.draft if config.jpeg_draft else JpegDecode.gpu).value
    summary = embedding.embed_rows(rows, backbone, out, kind="images", attrs=attrs, config=config, state=state,
                                   children=children)
    captions = None
    if captions_out is not None:
        caption_attrs = {**backbone.attrs(), "image_set": "captions"}
        if backbone.text_tower:
            captions = embedding.embed_rows(embedding.caption_rows(clusters), backbone, captions_out, kind="captions",
                                            attrs=caption_attrs, config=config, state=state)
        elif state.is_main_process:
            embedding.write_empty_captions(captions_out, caption_attrs)
            captions = {"rows": 0}
    if summary is None:
        return None
    result = {
        "rows": int(summary["rows"]),
        "dim": int(backbone.dim),
        "skipped": {**{k: int(v) for k, v in summary["skipped"].items()},
                    "total": len(summary["skipped_ids"])},
    }
    if captions is not None:
        result["captions"] = int(captions["rows"])
    write_metrics(metrics, result)
    return {**result, "skipped_examples": summary["skipped_examples"]}


@app.command()
def main(
    backbone: str = typer.Option(..., help="Backbone alias (an entry of --registry)."),
    registry: Path = typer.Option(..., help="The backbone registry (YAML)."),
    clusters: Path = typer.Option(..., help="The clusters table."),
    children: str = typer.Option(..., help="A generator's children folder (data/children/<gen>); empty: the "
                                           "parents of --clusters."),
    out: Path = typer.Option(..., help="Output HDF5 cache."),
    captions_out: str = typer.Option(..., help="Parents only: also write the caption cache here (0 rows with "
                                               "text_tower=False for image-only backbones). Empty: no captions."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    # batch and chunk sizes are checked in run(), whose message names the environment variable too
    batch_size: int = typer.Option(32, envvar="PARENTAGE_EMBED_BATCH_SIZE",
                                   help="Images (or captions) per forward pass."),
    chunk_size: int = typer.Option(512, envvar="PARENTAGE_EMBED_CHUNK_SIZE",
                                   help="Rows per part file: the unit of resumption and of the split "
                                        "across processes."),
    workers: int = parallel_option(2, envvar="PARENTAGE_EMBED_WORKERS",
                                   help="DataLoader workers decoding and preprocessing (0: in the main process)."),
    threads: int = parallel_option(0, envvar="PARENTAGE_EMBED_THREADS",
                                   help="Torch CPU threads per process (0: torch's default)."),
    precision: Precision = typer.Option(..., help="auto: bf16 autocast on GPU, fp32 on CPU."),
    device: str = device_option("auto", envvar="PARENTAGE_EMBED_DEVICE", what="the backbone", allowed=("auto", "cpu"),
                                note="auto: the GPU accelerate assigns, else the CPU; cpu: force the CPU."),
    on_bad: OnBad = typer.Option(..., help="error: stop at the first missing or corrupt image, naming its "
                                           "id and file; skip: leave it out, count it, list its id."),
    jpeg_decode: JpegDecode = typer.Option(..., help="full: decode every JPEG whole; draft: decode a JPEG at least "
                                                     "twice the backbone's resize reduced (1/2, 1/4, 1/8) in the "
                                                     "DCT domain; gpu: decode and preprocess JPEGs on the run's "
                                                     "device (nvjpeg on a GPU). Both faster, pixels slightly "
                                                     "different (docs/stages/embed.md)."),
) -> None:
    """Embed parents (and captions) or one generator's children with one backbone into an HDF5 cache."""
    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    with user_errors():
        config = RunConfig(batch_size=batch_size, chunk_size=chunk_size, workers=workers, precision=precision,
                           skip_bad=on_bad is OnBad.skip, jpeg_draft=jpeg_decode is JpegDecode.draft,
                           device_decode=jpeg_decode is JpegDecode.gpu)
        result = run(backbone, registry, clusters, out, metrics, children=Path(children) if children else None,
                     captions_out=Path(captions_out) if captions_out else None, config=config, device=device,
                     threads=threads)
    if result is not None:
        extra = f", {result['captions']:.0f} captions" if "captions" in result else ""
        typer.echo(f"{out}: {result['rows']:.0f} rows of dimension {result['dim']:.0f}{extra}; "
                   f"{result['skipped']['total']:.0f} skipped")
        for example in result["skipped_examples"]:
            typer.echo(f"  skipped {example}")


if __name__ == "__main__":
    app()
