"""Generation throughput of the generate stage against a bare pipeline call, and against the loop peers publish,
on the same prompts, seeds, steps, model and threads, measured side by side in one run (the order rotates
between repeats; medians reported, each ratio beside its goal).

    python benchmarks/bench_generate.py [--repeats 3] [--threads 2] [--skip-sd] [--sd-images 4] [--sd-steps 2]

"stage" is the stage's generation loop (stages.generation.shards.generate_shards: per-child seeded
generators, the pipeline call, JPEG encoding, Parquet shards written atomically) on an already loaded
pipeline; "bare" is `pipeline(prompts, generator=..., ...)` alone on the same batches; "peers" is the
prompt-to-image loop of public detection datasets (AEROBLADE's generation script, and most like it): one
prompt per pipeline call, one torch.Generator seeded once and shared by every call, each image saved as a PNG
file. Goals: stage / bare >= 1.0 (held: the stage adds nothing to the model's time), stage / peers >= 1.0.
Two generators:
- tiny_random as the demo runs it (its entry in stages/generation/generators.yaml: 64 px, 10 steps, batch 13),
  built offline and loaded with from_pretrained;
- a Stable-Diffusion-1.4-shaped pipeline (UNet, VAE and CLIP ViT-L text encoder of SD 1.4's sizes) with
  random weights at 64 px, 2 steps, batch 2 (4 images a repeat): a few steps are enough to price a step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.generation import shards as gen  # noqa: E402
from stages.generation.registry import GeneratorSpec  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "stages" / "sources" / "demo" / "captions.json"


def demo_children(n: int) -> list[gen.Child]:
    """The first n demo captions as children (COCO-format caption file shipped with the demo)."""
    captions = [a["caption"] for a in json.loads(DEMO.read_text())["annotations"]]
    return [gen.Child(f"c{k:012d}_0", k, 0, captions[k % len(captions)], gen.child_seed(k, 0, 0), "train")
            for k in range(n)]


def sd14_shaped_pipeline():
    """SD 1.4's architecture with random weights (nothing downloaded); tokenizer: the real CLIP BPE."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from stages.generation.tiny import build_tokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_tokenizer(Path(scratch))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280))  # diffusers' defaults are SD 1.x's
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, vocab_size=len(tokenizer),
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def peers_loop(pipeline, spec: GeneratorSpec, prompts: list[str], folder: Path, seed: int = 0) -> None:
    """One prompt per call, one shared generator (seeded once), a PNG file per image: the published loop."""
    import torch

    generator = torch.Generator(pipeline.device).manual_seed(seed)
    for k, prompt in enumerate(prompts):
        image = pipeline(prompt, height=spec.height, width=spec.width, num_inference_steps=spec.steps,
                         guidance_scale=spec.guidance_scale, generator=generator).images[0]
        image.save(folder / f"{k:06d}.png")


def stage_loop(pipeline, spec: GeneratorSpec, children: list[gen.Child], folder: Path, shard_size: int = 64) -> None:
    """The generate stage's loop on its own (gpu_check times it against the others)."""
    shards = gen.plan_shards(children, shard_size)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    gen.generate_shards(pipeline, spec, shards, folder, fingerprints={s.name: "bench" for s in shards},
                        encoding=gen.Encoding.jpeg, quality=95, batch_size=spec.batch_size)


def measure(name: str, pipeline, spec: GeneratorSpec, children: list[gen.Child], repeats: int) -> float:
    shards = gen.plan_shards(children, len(children))
    stage_times, bare_times, peer_times, overheads = [], [], [], []

    inside: list[float] = []  # time the stage spends inside pipeline calls, to split its overhead from noise
    call_pipeline = gen.call_pipeline

    def timed_call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call_pipeline(*args, **kwargs)
        finally:
            inside[-1] += time.perf_counter() - start

    def stage_run() -> float:
        inside.append(0.0)
        gen.call_pipeline = timed_call  # generate_shards looks it up in its module at each call
        try:
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch)
                (folder / "shards").mkdir()
                start = time.perf_counter()
                gen.generate_shards(pipeline, spec, shards, folder, fingerprints={s.name: "bench" for s in shards},
                                    encoding=gen.Encoding.jpeg, quality=95, batch_size=spec.batch_size)
                return time.perf_counter() - start
        finally:
            gen.call_pipeline = call_pipeline

    def bare_run() -> float:
        start = time.perf_counter()
        for batch in gen.batches(children, spec.batch_size):
            gen.call_pipeline(pipeline, spec, batch)
        return time.perf_counter() - start

    def peers_run() -> float:
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            peers_loop(pipeline, spec, [c.caption for c in children], Path(scratch))
            return time.perf_counter() - start

    runs = {"stage": stage_run, "bare": bare_run, "peers": peers_run}
    order = list(runs)
    for repeat in range(repeats + 1):  # repeat 0 warms every path up and is not counted
        # rotate which goes first, so a drift in machine load does not favour one side
        times = {which: runs[which]() for which in order[repeat % 3:] + order[:repeat % 3]}
        if repeat:
            stage_times.append(times["stage"])
            bare_times.append(times["bare"])
            peer_times.append(times["peers"])
            overheads.append(times["stage"] - inside[-1])
    stage, bare, peers = (statistics.median(t) for t in (stage_times, bare_times, peer_times))
    n = len(children)
    print(f"{name}: {n} images, {spec.height} px, {spec.steps} steps, batch {spec.batch_size}: "
          f"stage {n / stage:.2f} img/s, bare {n / bare:.2f} img/s, peers' loop {n / peers:.2f} img/s "
          f"(medians of {repeats}); stage/bare: ratio {bare / stage:.2f} (goal >= 1.0, held); stage/peers: "
          f"ratio {peers / stage:.2f} (goal >= 1.0); stage time outside pipeline calls (encoding, writing): "
          f"median {statistics.median(overheads):.3f} s of {stage:.2f} s", flush=True)
    return bare / stage


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sd", action="store_true", help="only the tiny generator")
    parser.add_argument("--sd-images", type=int, default=4, help="images per repeat for the SD-shaped pipeline")
    parser.add_argument("--sd-steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU")

    from stages.generation.registry import REGISTRY, get_generator, load_pipeline
    from stages.generation.tiny import TinyConfig, save_pipeline

    tiny = get_generator("tiny_random", REGISTRY)
    with tempfile.TemporaryDirectory() as root:
        save_pipeline(TinyConfig(resolution=tiny.height), Path(root) / "tiny_random")
        pipeline = load_pipeline(tiny, Path(root))
        measure("tiny_random", pipeline, tiny, demo_children(65), args.repeats)
    if not args.skip_sd:
        spec = GeneratorSpec(alias="sd14_shaped", model_id="", height=64, width=64, steps=args.sd_steps,
                             guidance_scale=7.5, batch_size=2, safety_checker=False)
        measure("sd14-shaped random UNet", sd14_shaped_pipeline(), spec, demo_children(args.sd_images), args.repeats)


if __name__ == "__main__":
    main()
