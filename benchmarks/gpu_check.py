"""The prepared GPU check: each stage's throughput against the bare library call it wraps, in under 5 minutes.

    python benchmarks/gpu_check.py          # on a CUDA machine (one GPU)
    python benchmarks/gpu_check.py --cpu    # the small CPU mode the test suite runs (tests/test_gpu_check.py)

1. generate, at native size, random weights (nothing downloaded): an SD-1.4-shaped pipeline at 512 px and an
   SDXL-shaped one at 1024 px, float16. "stage" is the generate stage's loop (per-child generators, batches
   of the entry's size, JPEG encoding, Parquet shards), "bare" one pipeline call per batch on the same
   prompts, "peers" the published loop (one prompt per call, one shared generator, a PNG per image).
2. embed: open_clip ViT-B/32 (random weights) at batch 256 on 2,000 real JPEGs (../shared/data/coco-mini,
   repeated): the embed stage (decoding in DataLoader workers, bf16 autocast, part files, HDF5) against a bare
   forward on tensors already on the GPU; the embed stage with embed.jpeg_decode=gpu (JPEGs decoded and
   preprocessed on the GPU, stages.imaging.gpu) and the cosine between its embeddings and the CPU-decoded
   ones; and JPEG decoding on the GPU (torchvision.io.decode_jpeg) alone.
3. CoDE: 50 training steps at 224 px (vit_tiny_patch16_224, 32 pairs a step) of the code_train loop against
   a bare loop (forward, backward, step on tensors made once).

Prints images/s of each and each ratio, one line per measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


@dataclass(frozen=True)
class Sizes:
    device: str
    sd_side: int
    sd_images: int
    sd_batch: int
    xl_side: int
    xl_images: int
    xl_batch: int
    steps: int
    embed_images: int
    embed_batch: int
    workers: int
    code_size: int
    code_batch: int
    code_steps: int


GPU = Sizes(device="cuda", sd_side=512, sd_images=32, sd_batch=16, xl_side=1024, xl_images=8, xl_batch=8, steps=8,
            embed_images=2000, embed_batch=256, workers=8, code_size=224, code_batch=32, code_steps=50)
CPU = Sizes(device="cpu", sd_side=32, sd_images=2, sd_batch=2, xl_side=32, xl_images=2, xl_batch=2, steps=1,
            embed_images=8, embed_batch=4, workers=1, code_size=32, code_batch=2, code_steps=2)


def timed(function, sync) -> float:
    sync()
    start = time.perf_counter()
    function()
    sync()
    return time.perf_counter() - start


def line(name: str, rates: dict[str, float]) -> None:
    first, *others = rates
    parts = [f"{k} {v:.1f} img/s" for k, v in rates.items()]
    parts += [f"{first}/{k} {rates[first] / rates[k]:.2f}" for k in others]
    print(f"{name}: " + ", ".join(parts), flush=True)


# ------------------------------------------------------------------------------------------------ generate
def sdxl_shaped_pipeline(small: bool):
    """SDXL base's architecture with random weights (the tiny test pipeline in --cpu mode)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from stages.generation.tiny import build_tokenizer

    if small:
        from tests.tiny_pipelines import sdxl

        return sdxl()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_tokenizer(Path(scratch))

    def clip(cls, width, layers, heads, projection):
        return cls(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                                  num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                                  projection_dim=projection, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))

    torch.manual_seed(0)
    with torch.device("cuda"):  # initialise on the GPU: billions of random weights are slow to draw on a CPU
        unet = UNet2DConditionModel(
            sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
            cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            force_upcast=False)  # fp16 random weights: no upcast needed to time it
        text = clip(CLIPTextModel, 768, 12, 12, 768)
        text_2 = clip(CLIPTextModelWithProjection, 1280, 32, 20, 1280)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False)


def check_generate(sizes: Sizes, sync) -> None:
    import torch
    from bench_generate import sd14_shaped_pipeline

    from stages.generation.tiny import TinyConfig, build_pipeline

    small = sizes.device == "cpu"
    dtype = torch.float32 if small else torch.float16
    with tempfile.TemporaryDirectory() as scratch:
        sd14 = build_pipeline(TinyConfig(resolution=sizes.sd_side), Path(scratch)) if small else sd14_shaped_pipeline()
    time_generate("SD-1.4-shaped", sd14.to(sizes.device, dtype), sizes.sd_side, sizes.sd_images, sizes.sd_batch,
                  sizes, sync)
    del sd14
    if not small:
        torch.cuda.empty_cache()
    time_generate("SDXL-shaped", sdxl_shaped_pipeline(small).to(sizes.device, dtype), sizes.xl_side,
                  sizes.xl_images, sizes.xl_batch, sizes, sync)


def time_generate(name: str, pipeline, side: int, n: int, batch: int, sizes: Sizes, sync) -> None:
    import torch
    from bench_generate import demo_children, peers_loop, stage_loop

    from stages.generation import shards as gen
    from stages.generation.registry import GeneratorSpec

    pipeline.set_progress_bar_config(disable=True)
    spec = GeneratorSpec(alias="check", model_id="", height=side, width=side, steps=sizes.steps,
                         guidance_scale=7.5, batch_size=batch, safety_checker=False)
    children = demo_children(n)
    prompts = [c.caption for c in children]

    def bare():
        for part in gen.batches(children, batch):
            pipeline(prompt=[c.caption for c in part], height=side, width=side, num_inference_steps=sizes.steps,
                     guidance_scale=7.5, generator=[torch.Generator("cpu").manual_seed(c.seed) for c in part])

    gen.call_pipeline(pipeline, dataclasses_replace(spec, steps=1), children[:batch])  # warm-up
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        times = {"stage": timed(lambda: stage_loop(pipeline, spec, children, Path(a)), sync),
                 "bare": timed(bare, sync),
                 "peers": timed(lambda: peers_loop(pipeline, spec, prompts, Path(b)), sync)}
    line(f"generate {name} {side} px, {sizes.steps} steps, batch {batch}, {n} images",
         {k: n / t for k, t in times.items()})


def dataclasses_replace(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


# ------------------------------------------------------------------------------------------------ embed
def coco_images(folder: Path, coco: Path) -> Path:
    """coco-mini's JPEGs, or a few synthetic ones where ../shared is absent."""
    if coco.is_dir() and any(coco.rglob("*.jpg")):
        return coco
    from tests.fixtures import photo

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        photo(k, (96, 64)).save(folder / f"{k}.jpg", quality=90)
    return folder


def check_embed(sizes: Sizes, sync, work: Path, coco: Path) -> None:
    import numpy as np
    import torch
    from accelerate import PartialState
    from bench_embed import clusters_table

    from stages.contracts.clusters import read_clusters
    from stages.contracts.runtime import checked_batches, data_loader
    from stages.embedding import runner as embedding
    from stages.embedding.backbones import get_spec, load_backbone

    clusters = clusters_table(work, sizes.embed_images, coco_images(work / "photos", coco))
    backbone = load_backbone(get_spec("openclip_vitb32_random", REPO / "stages" / "embedding" / "backbones.yaml"))
    rows = embedding.parent_rows(read_clusters(clusters))
    config = embedding.RunConfig(batch_size=sizes.embed_batch, chunk_size=4 * sizes.embed_batch,
                                 workers=sizes.workers, precision=embedding.Precision.auto, skip_bad=False,
                                 progress=False)
    batches = embedding._batches(len(rows), config.chunk_size, config.batch_size, range(len(rows)))
    source = embedding.BatchSource(rows, batches, transform=backbone.transform)
    tensors = [b["inputs"].to(sizes.device) for b in checked_batches(data_loader(source, batch_size=None,
                                                                                  num_workers=sizes.workers))]
    model = backbone.image_encoder.to(sizes.device)
    state = PartialState(cpu=sizes.device == "cpu")
    cuda = sizes.device == "cuda"

    def bare():
        with torch.inference_mode(), torch.autocast(sizes.device, torch.bfloat16, enabled=cuda):
            for batch in tensors:
                model(batch)

    bare()  # warm-up
    runs = iter(range(100))
    device_config = embedding.RunConfig(**{**config.__dict__, "device_decode": True})
    outs = {"stage": work / "embed-full.h5", "stage-device-decode": work / "embed-device.h5"}

    def stage(which: str, run_config) -> None:
        out = work / f"embed-{next(runs)}.h5"
        embedding.embed_rows(rows, backbone, out, kind="images", attrs={**backbone.attrs(), "image_set": "parents"},
                             config=run_config, state=state)
        out.replace(outs[which])

    times = {"stage": timed(lambda: stage("stage", config), sync), "bare": timed(bare, sync),
             "stage-device-decode": timed(lambda: stage("stage-device-decode", device_config), sync)}
    rates = {k: len(rows) / t for k, t in times.items()}
    if cuda:
        rates["gpu-decode"] = len(rows) / timed(lambda: gpu_decode(rows, sizes), sync)
    line(f"embed ViT-B/32 batch {sizes.embed_batch}, {len(rows)} JPEGs, {sizes.workers} workers", rates)
    from stages.contracts.embeddings import read_embeddings

    full, device = (read_embeddings(outs[k]).embeddings for k in ("stage", "stage-device-decode"))
    cosine = (full * device).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(device, axis=1))
    print(f"embed jpeg_decode=gpu vs full: cosine median {np.median(cosine):.4f}, min {cosine.min():.4f}",
          flush=True)


def gpu_decode(rows, sizes: Sizes) -> None:
    """Read the files, decode them on the GPU in batches (torchvision's nvjpeg), resize to 224 px."""
    import torch
    import torchvision
    from torchvision.transforms.v2 import functional as F

    paths = [r.image_path for r in rows] if hasattr(rows[0], "image_path") else [r["image_path"] for r in rows]
    for start in range(0, len(paths), sizes.embed_batch):
        data = [torchvision.io.read_file(p) for p in paths[start:start + sizes.embed_batch]]
        images = torchvision.io.decode_jpeg(data, device="cuda", mode=torchvision.io.ImageReadMode.RGB)
        torch.stack([F.center_crop(F.resize(i, 224, antialias=True), 224) for i in images])


# ------------------------------------------------------------------------------------------------ CoDE
def check_code(sizes: Sizes, work: Path) -> None:
    from bench_code_train import bare_images_per_s, logged_images_per_s

    from stages.code.data import ViewConfig, read_images
    from stages.code.loss import LossVariant
    from stages.code.net import CodeNetConfig
    from stages.code.trainer import Monitor, TrainConfig, train
    from stages.contracts.clusters import read_clusters
    from tests.fixtures import write_children, write_clusters

    pairs = sizes.code_steps * sizes.code_batch  # one epoch of code_steps steps
    side = max(sizes.code_size, 64)
    net = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=sizes.code_size, local_size=sizes.code_size)
    views = ViewConfig(image_size=sizes.code_size, local_size=sizes.code_size, num_transform=2,
                       global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), crop_pct=0.9)
    config = TrainConfig(epochs=1, batch_size=sizes.code_batch, lr=2e-3, weight_decay=2e-5, warmup_epochs=0,
                         min_lr=0.0, temperature=0.1, loss_variant=LossVariant.symmetric, monitor=Monitor.val_loss,
                         patience=0, probe_images=0, seed=0)
    clusters = write_clusters(work / "code", n_parents=3 * pairs, n_captions=1, size=(side + 32, side))
    write_children(work / "code" / "children" / "g", read_clusters(clusters), generator="g", size=(side, side),
                   fmt="PNG")
    refs = read_images(clusters, work / "code" / "children", ["g"], ("train", "val"))
    lines: list[str] = []
    train(refs, net, views, config, checkpoints=work / "code" / "ck", num_workers=sizes.workers,
          progress=False, log=lines.append)
    bare = bare_images_per_s(net, config, sizes.code_batch, steps=min(10, sizes.code_steps), device=sizes.device)
    line(f"CoDE train {sizes.code_steps} steps, {sizes.code_size} px, {sizes.code_batch} pairs",
         {"stage": statistics.median(logged_images_per_s(lines)), "bare": statistics.median(bare)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the small CPU mode (tests)")
    parser.add_argument("--coco", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--skip", nargs="*", default=[], choices=["generate", "embed", "code"])
    args = parser.parse_args(argv)

    import torch

    sizes = CPU if args.cpu else GPU
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run with --cpu for the small CPU mode")
    sync = torch.cuda.synchronize if sizes.device == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name() if sizes.device == "cuda" else "CPU"
    print(f"gpu_check on {where}: torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if "generate" not in args.skip:
            check_generate(sizes, sync)
        if "embed" not in args.skip:
            check_embed(sizes, sync, Path(scratch), args.coco)
        if "code" not in args.skip:
            check_code(sizes, Path(scratch))
    print(f"gpu_check: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
