"""Runtime speed settings of the generate stage: how fast children are made, never which pixels they get.

They come from environment variables, not params (DVC does not track them, so changing one reruns nothing):

    PARENTAGE_GENERATE_ATTENTION      diffusers attention backend of the denoiser ('' = diffusers' default,
                                      PyTorch's scaled_dot_product_attention); e.g. flash, _flash_3, sage,
                                      native (the names of diffusers.models.attention_dispatch)
    PARENTAGE_GENERATE_COMPILE        1: torch.compile the denoiser (the UNet or transformer); the first batch
                                      pays the compilation, later ones run faster. Default 0.
    PARENTAGE_GENERATE_CHANNELS_LAST  1 / 0 / auto: UNet and VAE convolutions in channels-last memory layout
                                      (auto: on a CUDA device for UNet pipelines, where it helps)
    PARENTAGE_GENERATE_VAE_SLICING    1 / 0 / auto: decode a batch one image at a time (less memory for large
                                      batches at 1024 px; auto: on when a batch holds at least 4 megapixels)

Each of these changes the arithmetic only within float rounding, as the batch size does (an attention kernel
or memory layout sums in another order); settings that change pixels beyond that (VAE tiling, dtype,
scheduler) are registry fields, recorded with the children.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from stages.contracts.errors import InputError

PREFIX = "PARENTAGE_GENERATE_"
# the variables `Speed.from_env` reads (PREFIX + its names), spelt out for stages.contracts.runtime.known_variables
ENVIRONMENT = ("PARENTAGE_GENERATE_ATTENTION", "PARENTAGE_GENERATE_COMPILE", "PARENTAGE_GENERATE_CHANNELS_LAST",
               "PARENTAGE_GENERATE_VAE_SLICING")
Switch = Literal["auto", "0", "1"]
# Slicing pays off above this many pixels per batch (4 images of 1024 x 1024).
SLICING_PIXELS = 4 * 1024 * 1024


@dataclass(frozen=True)
class Speed:
    attention: str = ""
    compile: bool = False
    channels_last: Switch = "auto"
    vae_slicing: Switch = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Speed:
        """Read the PARENTAGE_GENERATE_* speed variables; a bad value is an InputError naming the variable."""
        environ = os.environ if environ is None else environ

        def switch(name: str, default: str) -> str:
            value = environ.get(PREFIX + name, default).strip().lower() or default
            if value not in ("auto", "0", "1"):
                raise InputError(PREFIX + name, f"is {value!r}; expected 0, 1 or auto")
            return value

        compile_ = switch("COMPILE", "0")
        if compile_ == "auto":
            raise InputError(PREFIX + "COMPILE", "is 'auto'; expected 0 or 1")
        attention = environ.get(PREFIX + "ATTENTION", "").strip()
        if attention:
            from diffusers.models.attention_dispatch import AttentionBackendName

            # the *_hub backends download kernels from the Hugging Face hub at run time: not offered here
            known = sorted(b.value for b in AttentionBackendName if not b.value.endswith("_hub"))
            if attention not in known:
                raise InputError(PREFIX + "ATTENTION", f"unknown attention backend {attention!r}; known: {known}")
        return cls(attention=attention, compile=compile_ == "1", channels_last=switch("CHANNELS_LAST", "auto"),
                   vae_slicing=switch("VAE_SLICING", "auto"))


def denoiser(pipeline):
    """The pipeline's denoising network: its UNet or its transformer."""
    return getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)


def apply(pipelines: Sequence, speed: Speed, *, batch_size: int, height: int, width: int) -> list[str]:
    """Apply the speed settings to every pipeline of a generator; return what was switched on, for the log."""
    import torch

    applied = []
    for pipeline in pipelines:
        network = denoiser(pipeline)
        cuda = pipeline.device.type == "cuda"
        if speed.attention and network is not None:
            try:
                network.set_attention_backend(speed.attention)
            except (ValueError, RuntimeError, ImportError) as error:
                raise InputError(PREFIX + "ATTENTION", f"backend {speed.attention!r} cannot run here ({error})",
                                 "unset it to use PyTorch's scaled_dot_product_attention") from error
            applied.append(f"attention {speed.attention}")
        unet = getattr(pipeline, "unet", None)
        if speed.channels_last == "1" or (speed.channels_last == "auto" and cuda and unet is not None):
            for module in (unet, getattr(pipeline, "vae", None)):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
            applied.append("channels-last")
        vae = getattr(pipeline, "vae", None)
        big = batch_size * height * width >= SLICING_PIXELS
        if vae is not None and hasattr(vae, "enable_slicing") and (
                speed.vae_slicing == "1" or (speed.vae_slicing == "auto" and big)):
            vae.enable_slicing()
            applied.append("VAE slicing")
        if speed.compile and network is not None:
            network.compile()
            applied.append("torch.compile")
    return sorted(set(applied))
