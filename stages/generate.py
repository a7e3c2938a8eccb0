"""generate: the clusters table + one generator -> its children, data/children/<gen>/, and metrics/generate/<gen>.json.

    python -m stages.generate --generator tiny_random --registry stages/generation/generators.yaml \\
        --clusters data/clusters.parquet --models-root models \\
        --encoding jpeg --jpeg-quality 95 --shard-size 64 \\
        --out data/children/tiny_random --metrics metrics/generate/tiny_random.json

The generator is an entry of the registry file (--registry). Child i of a parent is generated from its
caption i with a seed derived from (cluster id, caption index, the generator's base seed). The output folder
follows stages.contracts.children: Parquet shards of encoded images plus manifest.parquet. Killed at any
point, a rerun keeps the finished shards and makes the rest; the result is byte-identical to an uninterrupted
run. Several processes split the shards:

    accelerate launch --num_processes 4 -m stages.generate --generator sd14 ...

Any diffusers text-to-image pipeline (a cascaded one too) is a registry entry; speed settings that keep the
pixels (attention backend, torch.compile, channels-last, VAE slicing) are PARENTAGE_GENERATE_* environment
variables (stages/generation/speed.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.device import device_option, resolve_device
from stages.contracts.errors import InputError, user_errors
from stages.contracts.hub import Hub, stay_offline
from stages.contracts.runtime import Command
from stages.generation.shards import Encoding

app = Command()
# read by dvc.yaml's shell, not by this module: what runs `-m stages.generate` (docs/runtime.md)
ENVIRONMENT = ("PARENTAGE_GENERATE_LAUNCHER",)


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"diffusers": diffusers.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def run(generator: str, clusters: Path, models_root: Path, out: Path, metrics: Path, *, registry: Path,
        encoding: Encoding, jpeg_quality: int, shard_size: int, batch_size: int, device: str,
        hub: Hub = Hub.offline, progress: bool = True) -> dict | None:
    """Generate every missing shard of this process, then (main process) the manifest and the metrics.

    Returns the metrics on the main process, None on the others."""
    import dataclasses

    from accelerate import PartialState
    from tqdm.auto import tqdm

    from stages.compute.processes import group_timeout, processes
    from stages.contracts.clusters import read_clusters
    from stages.contracts.io import check_outputs, write_metrics
    from stages.generation import shards as gen
    from stages.generation import speed
    from stages.generation.registry import generator_fingerprint, get_generator, load_generator

    check_outputs(writes=[out, metrics], reads=[registry, clusters])
    spec = get_generator(generator, registry)
    if batch_size < 0:
        raise InputError("PARENTAGE_GENERATE_BATCH_SIZE (--batch-size)",
                         f"is {batch_size}; expected at least 1 (0 = the registry's)")
    if batch_size:
        spec = dataclasses.replace(spec, batch_size=batch_size)
    if not 1 <= jpeg_quality <= 100:
        raise InputError("generate.jpeg_quality", f"is {jpeg_quality}; expected 1..100")
    if shard_size < 1:
        raise InputError("generate.shard_size", f"is {shard_size}; expected at least 1")
    knobs = speed.Speed.from_env()
    # Processes wait for each other (the last shard, loading weights) in group.barrier, which waits as long as
    # the others beat and names one that stopped (stages.compute.processes); the group's timeout bounds the
    # calls to a machine that vanished.
    state = PartialState(cpu=device == "cpu", timeout=group_timeout())
    group = processes(state)
    children = gen.plan_children(read_clusters(clusters), spec.base_seed)
    shards = gen.plan_shards(children, shard_size)

    pipeline = load_generator(spec, models_root, device=resolve_device(device, state=state), hub=hub)
    applied = speed.apply(pipeline, knobs, batch_size=spec.batch_size, height=spec.height, width=spec.width)
    if applied and state.is_main_process:
        print(f"generate {generator}: {', '.join(applied)}", flush=True)
    settings = {**spec.settings(), "encoding": encoding.value,
                "jpeg_quality": jpeg_quality if encoding is Encoding.jpeg else None, "shard_size": shard_size,
                "model_fingerprint": generator_fingerprint(pipeline, spec, models_root), "versions": versions()}
    fingerprints = {s.name: gen.shard_fingerprint(s, settings) for s in shards}

    if state.is_main_process:
        kept = gen.prepare_folder(out, shards, fingerprints, stage="generate", inputs=[clusters])
        if kept:
            print(f"{out}: resuming, {len(kept)} of {len(shards)} shards already finished")
    group.barrier("the main process to clear stale files")  # nobody writes before they are gone
    # The missing shards are dealt out round-robin, so a resumed run stays balanced across processes; which
    # process makes a shard changes nothing in it.
    missing = [s for s in shards if not (out / "shards" / s.name).exists()]
    group.barrier("every process to list the missing shards")  # the same list before a shard is added
    mine = gen.shards_of_process(missing, state.process_index, state.num_processes)
    if state.num_processes > 1:
        print(f"process {state.process_index} of {state.num_processes}: {len(mine)} of {len(missing)} missing shards",
              flush=True)
    with tqdm(total=sum(len(s.children) for s in mine), unit="img", desc=f"generate {generator}",
              disable=not (progress and state.is_main_process), smoothing=0.1) as bar:
        gen.generate_shards(pipeline, spec, mine, out, fingerprints=fingerprints, encoding=encoding,
                            quality=jpeg_quality, batch_size=spec.batch_size, on_batch=bar.update)
    group.barrier("every shard to be written")  # every shard is on disk before the manifest names it
    group.close()

    if not state.is_main_process:
        return None
    manifest = gen.write_manifest(out, shards, alias=generator, settings=settings, stage="generate")
    result = gen.summarise(manifest)
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    generator: str = typer.Option(..., help="Alias of the generator: an entry of --registry."),
    registry: Path = typer.Option(..., help="The generator registry (YAML)."),
    clusters: Path = typer.Option(..., help="The clusters table."),
    models_root: Path = typer.Option(..., help="Folder of local diffusers directories, one per alias "
                                               "(<models_root>/<alias>); else the hub id is tried."),
    out: Path = typer.Option(..., help="Output children folder."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
    encoding: Encoding = typer.Option(..., help="Image encoding of the children."),
    jpeg_quality: int = typer.Option(..., min=1, max=100, help="JPEG quality (1-100) when encoding is jpeg."),
    shard_size: int = typer.Option(..., min=1, help="Children per Parquet shard (the unit of resumption)."),
    hub: Hub = typer.Option(Hub.offline, help="offline: nothing is downloaded, <models_root>/<alias> must "
                                              "exist; download: a generator missing there is fetched from the "
                                              "Hugging Face hub by its id. Not passed by dvc.yaml: under DVC the "
                                              "folder is a dependency, so it must exist and the stage runs "
                                              "offline."),
    # checked in run(), whose message names the environment variable as well as the option
    batch_size: int = typer.Option(0, envvar="PARENTAGE_GENERATE_BATCH_SIZE",
                                   help="Prompts per pipeline call; 0 = the registry's batch size."),
    device: str = device_option("auto", envvar="PARENTAGE_GENERATE_DEVICE", what="the pipeline",
                                note="auto: accelerate's choice (this process's GPU, else the CPU)."),
) -> None:
    """Generate the children of every parent with one generator: child i from caption i, seeded per child."""
    stay_offline(hub)
    with user_errors():
        result = run(generator, clusters, models_root, out, metrics, registry=registry, encoding=encoding,
                     jpeg_quality=jpeg_quality, shard_size=shard_size, batch_size=batch_size, device=device,
                     hub=hub)
    if result is not None:
        nsfw = result["nsfw"]
        checked = (f"{nsfw['total']:.0f} of {nsfw['checked']:.0f} checked flagged by the safety checker"
                   if nsfw["checked"] else "not checked by a safety checker")
        typer.echo(f"{out}: {result['children']['total']:.0f} children, {checked}, "
                   f"{result['prompts']['truncated']:.0f} prompts truncated by a text encoder")


if __name__ == "__main__":
    app()
