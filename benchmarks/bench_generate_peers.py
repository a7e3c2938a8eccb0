"""The generate stage against the loop peers publish, on the same model, prompts, steps and hardware.

    python benchmarks/bench_generate_peers.py [--images 16] [--threads 2] [--repeats 2] [--sd]

"peers" is the prompt-to-image loop of public detection datasets (AEROBLADE's generation script, and most
like it): one prompt per pipeline call, one torch.Generator seeded once and shared by every call, each image
saved as a PNG file. "stage" is the generate stage's loop (stages.generation.shards.generate_shards): the
registry's batch size, a seeded generator per child, JPEG encoding, Parquet shards written atomically. Both
run on an already loaded pipeline; repeats alternate which goes first, medians are reported.

Models: tiny_random as the demo runs it (64 px, 10 steps, batch 13) and, with --sd, the SD-1.4-shaped random
pipeline of bench_generate.py at 64 px, 2 steps, batch 4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import demo_children, sd14_shaped_pipeline  # noqa: E402

from stages.generation import shards as gen  # noqa: E402
from stages.generation.registry import GeneratorSpec  # noqa: E402


def peers_loop(pipeline, spec: GeneratorSpec, prompts: list[str], folder: Path, seed: int = 0) -> None:
    """One prompt per call, one shared generator (seeded once), a PNG file per image: the published loop."""
    import torch

    generator = torch.Generator(pipeline.device).manual_seed(seed)
    for k, prompt in enumerate(prompts):
        image = pipeline(prompt, height=spec.height, width=spec.width, num_inference_steps=spec.steps,
                         guidance_scale=spec.guidance_scale, generator=generator).images[0]
        image.save(folder / f"{k:06d}.png")


def stage_loop(pipeline, spec: GeneratorSpec, children: list[gen.Child], folder: Path, shard_size: int = 64) -> None:
    shards = gen.plan_shards(children, shard_size)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    gen.generate_shards(pipeline, spec, shards, folder, fingerprints={s.name: "bench" for s in shards},
                        encoding=gen.Encoding.jpeg, quality=95, batch_size=spec.batch_size)


def compare(name: str, pipeline, spec: GeneratorSpec, n: int, repeats: int, sync=lambda: None) -> dict[str, float]:
    """Images/s of the stage and of the peers' loop (medians), and their ratio; repeat 0 warms up."""
    children = demo_children(n)
    prompts = [c.caption for c in children]
    stage_rates, peer_rates = [], []
    for repeat in range(repeats + 1):
        runs = {}
        for which in (("stage", "peers") if repeat % 2 else ("peers", "stage")):
            with tempfile.TemporaryDirectory() as scratch:
                sync()
                start = time.perf_counter()
                if which == "stage":
                    stage_loop(pipeline, spec, children, Path(scratch))
                else:
                    peers_loop(pipeline, spec, prompts, Path(scratch))
                sync()
                runs[which] = n / (time.perf_counter() - start)
        if repeat:
            stage_rates.append(runs["stage"])
            peer_rates.append(runs["peers"])
    result = {"stage": statistics.median(stage_rates), "peers": statistics.median(peer_rates)}
    result["ratio"] = result["stage"] / result["peers"]
    print(f"{name}: {n} images, {spec.height} px, {spec.steps} steps, stage batch {spec.batch_size}: "
          f"stage {result['stage']:.2f} img/s, peers' loop {result['peers']:.2f} img/s, "
          f"ratio stage/peers {result['ratio']:.2f}", flush=True)
    return result


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sd", action="store_true", help="also the SD-1.4-shaped random pipeline (slow on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU")

    from stages.generation.registry import REGISTRY, get_generator, load_pipeline
    from stages.generation.tiny import TinyConfig, save_pipeline

    tiny = get_generator("tiny_random", REGISTRY)
    with tempfile.TemporaryDirectory() as root:
        save_pipeline(TinyConfig(resolution=tiny.height), Path(root) / "tiny_random")
        compare("tiny_random", load_pipeline(tiny, Path(root)), tiny, args.images, args.repeats)
    if args.sd:
        spec = GeneratorSpec(alias="sd14_shaped", model_id="", height=64, width=64, steps=2, guidance_scale=7.5,
                             batch_size=4, safety_checker=False)
        compare("sd14-shaped random UNet", sd14_shaped_pipeline(), spec, args.images, args.repeats)


if __name__ == "__main__":
    main()
