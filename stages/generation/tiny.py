"""The offline demo generator: a tiny Stable-Diffusion-shaped diffusers pipeline with random weights.

Same components as Stable Diffusion (a UNet with cross-attention, a VAE with SD's 8x downsampling, a CLIP
text encoder and the real CLIP BPE tokenizer), only far smaller, and initialised from a fixed seed. It is
saved as an ordinary diffusers directory and loaded back through `from_pretrained`, exactly like a real
model. Its images are noise-like, not realistic: it exists so the pipeline runs end to end offline."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The CLIP tokenizer's fixed facts (open_clip's SimpleTokenizer and Hugging Face's CLIPTokenizer agree).
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # the merges CLIP keeps from the BPE file; vocab = 2 * 256 + merges + 2 = 49408
CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny pipeline. `resolution` is the image side it is configured for (8x its latent)."""

    resolution: int = 64
    unet_channels: tuple[int, int] = (32, 64)
    vae_channels: tuple[int, int, int, int] = (8, 16, 16, 16)  # four blocks: three 2x downsamplings = 8x
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 4
    seed: int = 0


@lru_cache(maxsize=1)
def _bpe_merges() -> list[str]:
    """The BPE merges of OpenAI's CLIP, as open_clip ships them inside its package."""
    from importlib import resources

    data = resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    return lines[1:N_MERGES + 1]  # line 0 is the file's version header


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map of the 256 byte values to printable characters, in CLIP's vocabulary
    order: the printable bytes first (as themselves), then the others (shifted past 255)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + i) for i in range(len(others))]


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write CLIP's vocab.json and merges.txt into `folder` (token ids then match open_clip's)."""
    merges = _bpe_merges()
    base = _bytes_to_unicode()
    vocab = base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def build_tokenizer(scratch: Path):
    """A CLIPTokenizer with the real CLIP vocabulary, built offline in `scratch`."""
    from transformers import CLIPTokenizer

    # With transformers 5 the vocab_file= constructor silently builds a 2-token vocabulary; from_pretrained
    # on a folder holding the two files reads them properly. local_files_only is pinned because the saved
    # tokenizer_config.json records it: left to HF_HUB_OFFLINE, the saved model would depend on the environment.
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(scratch)), local_files_only=True,
                                              bos_token=BOS,
                                              eos_token=EOS, unk_token=EOS, pad_token=EOS,
                                              model_max_length=CONTEXT_LENGTH)
    if len(tokenizer) != 2 * 256 + N_MERGES + 2:
        raise RuntimeError(f"the CLIP tokenizer built from open_clip's BPE file has {len(tokenizer)} tokens")
    return tokenizer


def build_pipeline(config: TinyConfig, scratch: Path):
    """The tiny StableDiffusionPipeline, every weight drawn from `config.seed` (no safety checker)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if config.resolution % 8:
        raise ValueError(f"resolution {config.resolution} must be a multiple of 8 (the VAE's downsampling)")
    tokenizer = build_tokenizer(scratch)
    torch.manual_seed(config.seed)  # the one source of every initial weight below, in this order
    unet = UNet2DConditionModel(
        sample_size=config.resolution // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=config.unet_channels, norm_num_groups=min(32, config.unet_channels[0]),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=config.text_width, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=config.resolution, layers_per_block=1,
        block_out_channels=config.vae_channels, norm_num_groups=config.vae_channels[0],
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=4 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        max_position_embeddings=CONTEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # SD's own schedule
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_pipeline(config: TinyConfig, out: Path) -> Path:
    """Build the tiny pipeline and save it as a diffusers directory at `out` (atomically)."""
    import tempfile

    from stages.contracts.io import atomic_path

    with tempfile.TemporaryDirectory() as scratch, atomic_path(out, kind="dir", stage="tiny_generator") as tmp:
        pipeline = build_pipeline(config, Path(scratch))
        pipeline.save_pretrained(tmp, safe_serialization=True)
        (tmp / "tiny_random.json").write_text(json.dumps(
            {"note": "random weights from a fixed seed: its images are noise-like, not realistic",
             "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}},
            indent=2, sort_keys=True) + "\n")
    return out
