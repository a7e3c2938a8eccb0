"""Generation throughput of the generate stage against a bare pipeline call on the same prompts, seeds, steps,
batch size and threads, measured side by side in one run (repeats alternate; medians reported).

    python benchmarks/bench_generate.py [--repeats 3] [--threads 2] [--skip-sd] [--sd-images 4] [--sd-steps 2]

"stage" is the stage's generation loop (stages.generation.shards.generate_shards: per-child seeded
generators, the pipeline call, JPEG encoding, Parquet shards written atomically) on an already loaded
pipeline; "bare" is `pipeline(prompts, generator=..., ...)` alone on the same batches. Two generators:
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


def measure(name: str, pipeline, spec: GeneratorSpec, children: list[gen.Child], repeats: int) -> float:
    shards = gen.plan_shards(children, len(children))
    stage_times, bare_times, overheads = [], [], []

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

    for repeat in range(repeats + 1):  # repeat 0 warms both paths up and is not counted
        # alternate which goes first, so a drift in machine load does not favour one side
        if repeat % 2:
            stage, bare = stage_run(), bare_run()
        else:
            bare, stage = bare_run(), stage_run()
        if repeat:
            stage_times.append(stage)
            bare_times.append(bare)
            overheads.append(stage - inside[-1])
    stage, bare = statistics.median(stage_times), statistics.median(bare_times)
    ratios = [b / s for s, b in zip(stage_times, bare_times, strict=True)]
    print(f"{name}: {len(children)} images, {spec.height} px, {spec.steps} steps, batch {spec.batch_size}: "
          f"stage {len(children) / stage:.2f} img/s, bare {len(children) / bare:.2f} img/s (medians of {repeats}); "
          f"ratio stage/bare {bare / stage:.3f} (per repeat: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"stage time outside pipeline calls (encoding, writing): "
          f"median {statistics.median(overheads):.3f} s "
          f"of {stage:.2f} s", flush=True)
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
