"""Tiny random-weight diffusers pipelines, one per architecture family, with tokenizers built offline.

Each builder returns a pipeline of the family's real class and component layout (so `save_pretrained` and
DiffusionPipeline.from_pretrained treat it like the downloaded model), only with a few channels and layers:

    sd       UNet + one CLIP text encoder (SD 1.x / 2.x): stages.generation.tiny, the demo generator
    sdxl     UNet with SDXL's text-time conditioning + two CLIP text encoders
    sd3      MMDiT (SD3Transformer2DModel) + two CLIP encoders + a T5 encoder
    flux     FluxTransformer2DModel + CLIP (pooled) + T5
    pixart   PixArt-Σ's transformer + T5
    cascade  DeepFloyd IF: a pixel-space stage I (T5 conditioned) and stage II super-resolution, in two folders

CLIP tokenizers carry the real CLIP BPE (open_clip's file); the T5 tokenizer is a small Unigram vocabulary
(`t5_tokenizer`), enough to tokenise English captions and to truncate them where a pipeline does.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

# SD3, FLUX and PixArt cut T5 prompts at their call's max_sequence_length: tests pass this short limit (through
# the entry's call_args) to truncate a caption of a few words.
T5_LIMIT = 16
TEXT = 32  # width of every tiny text encoder
WORDS = ["the", "a", "of", "on", "with", "and", "in", "is", "man", "dog", "cat", "street", "table", "person",
         "sitting", "standing", "next", "to", "two", "white", "red", "black", "top", "near", "group", "people"]


def t5_tokenizer():
    """A T5 tokenizer (transformers 5: the `tokenizers`-backed T5Tokenizer) over a tiny Unigram vocabulary:
    pad, eos, unk, then common caption words, lower-case initials and single characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS]
    pieces += [("▁" + c, -3.0) for c in string.ascii_lowercase]
    pieces += [(c, -4.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)  # T5's own limit


def t5_encoder(vocab_size: int, width: int = TEXT):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=2 * width, num_layers=1,
                                   num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1))


def clip_tokenizer():
    from stages.generation.tiny import build_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        return build_tokenizer(Path(scratch))


def clip_encoder(tokenizer, *, projection: bool, width: int = TEXT):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=width, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def vae(latent_channels: int = 4, **extra):
    """An AutoencoderKL with SD's 8x downsampling (four blocks) and a handful of channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1,
                         block_out_channels=(8, 8, 8, 8), norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         **extra)


def sdxl(seed: int = 0):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + TEXT,  # six size/crop numbers + the pooled text
        cross_attention_dim=2 * TEXT)  # the two encoders' hidden states side by side
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=vae(), text_encoder=clip_encoder(tokenizer, projection=False),
                                     text_encoder_2=clip_encoder(tokenizer, projection=True), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)


def sd3(seed: int = 0):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, t5 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=4, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
                                        joint_attention_dim=2 * TEXT,  # T5 width; the CLIP states are padded to it
                                        pooled_projection_dim=2 * TEXT)  # both CLIP poolings side by side
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae(shift_factor=0.0609),
        text_encoder=clip_encoder(tokenizer, projection=True), tokenizer=tokenizer,
        text_encoder_2=clip_encoder(tokenizer, projection=True), tokenizer_2=tokenizer,
        text_encoder_3=t5_encoder(len(t5), width=2 * TEXT), tokenizer_3=t5)


def flux(seed: int = 0):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, t5 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    # FLUX packs 2 x 2 latent patches into one token: 4 latent channels -> 16 transformer channels
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT,
                                         pooled_projection_dim=TEXT, axes_dims_rope=(4, 4, 8))
    return FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                        vae=vae(shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
                        text_encoder=clip_encoder(tokenizer, projection=False), tokenizer=tokenizer,
                        text_encoder_2=t5_encoder(len(t5)), tokenizer_2=t5)


def pixart(seed: int = 0):
    import torch
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    t5 = t5_tokenizer()
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2,
        caption_channels=TEXT, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtSigmaPipeline(tokenizer=t5, text_encoder=t5_encoder(len(t5)), vae=vae(), transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def deepfloyd_if(seed: int = 0):
    """DeepFloyd IF's stages I and II: (IFPipeline, IFSuperResolutionPipeline), sharing the T5 encoder.
    Stage I draws pixels directly (no VAE); stage II upsamples them 4x, conditioned on the noised input."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel

    t5 = t5_tokenizer()
    torch.manual_seed(seed)
    encoder = t5_encoder(len(t5))

    def unet(in_channels: int, **extra):
        return UNet2DConditionModel(
            in_channels=in_channels, out_channels=6, layers_per_block=1, block_out_channels=(16, 32),
            norm_num_groups=8, down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), resnet_time_scale_shift="scale_shift",
            cross_attention_dim=TEXT, encoder_hid_dim=TEXT, attention_head_dim=8, addition_embed_type="text",
            addition_embed_type_num_heads=2, act_fn="gelu", **extra)

    def scheduler(**extra):
        return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                             thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0,
                             prediction_type="epsilon", **extra)

    # stage II's output size is its UNet's sample_size: 16 px from stage I become 32 px (the real ones: 64, 256)
    first = IFPipeline(tokenizer=t5, text_encoder=encoder, unet=unet(3, sample_size=16), scheduler=scheduler(),
                       safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    second = IFSuperResolutionPipeline(
        tokenizer=t5, text_encoder=encoder, unet=unet(6, class_embed_type="timestep", sample_size=32),
        scheduler=scheduler(), image_noising_scheduler=scheduler(), safety_checker=None, feature_extractor=None,
        watermarker=None, requires_safety_checker=False)
    return first, second


BUILDERS = {"sdxl": sdxl, "sd3": sd3, "flux": flux, "pixart": pixart}


def save_family(family: str, out: Path) -> Path:
    """Save the tiny pipeline of `family` as a diffusers directory at `out` (a cascade: stage II in stage2/)."""
    if family == "sd":
        from stages.generation.tiny import TinyConfig, save_pipeline

        return save_pipeline(TinyConfig(resolution=32), out)
    if family == "cascade":
        first, second = deepfloyd_if()
        first.save_pretrained(out)
        second.save_pretrained(out / "stage2")
        return out
    BUILDERS[family]().save_pretrained(out)
    return out
