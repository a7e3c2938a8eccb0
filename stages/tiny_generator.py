"""tiny_generator: nothing -> models/tiny_random, the offline demo generator as a diffusers directory.

    python -m stages.tiny_generator --registry stages/generation/generators.yaml --out models/tiny_random --seed 0

A Stable-Diffusion-shaped pipeline (UNet, VAE with SD's 8x downsampling, CLIP text encoder, the real CLIP
tokenizer) with random weights drawn from `--seed`, built for the size of the registry's `tiny_random` entry.
The generate stage loads it back with `from_pretrained`, like any downloaded model. Its children are
noise-like: it is for running the pipeline offline, not for realistic images.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command

app = Command()


@app.command()
def main(
    out: Path = typer.Option(..., help="Output diffusers directory."),
    seed: int = typer.Option(..., min=0, max=2**32 - 1, help="Seed of every random weight."),
    registry: Path = typer.Option(..., help="The generator registry (YAML); its tiny_random entry gives the size."),
) -> None:
    """Build the tiny random-weight Stable-Diffusion-shaped pipeline and save it with save_pretrained."""
    from stages.generation.registry import get_generator
    from stages.generation.tiny import TinyConfig, save_pipeline

    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    with user_errors():
        # Configured for the size the registry's tiny_random entry generates (the UNet accepts others too).
        resolution = get_generator("tiny_random", registry).height
        save_pipeline(TinyConfig(resolution=resolution, seed=seed), out)
    typer.echo(f"{out}: tiny random-weight generator (random weights, seed {seed}; {resolution} px)")


if __name__ == "__main__":
    app()
