"""tiny_generator: nothing -> models/tiny_random, the offline demo generator as a diffusers directory.

    python -m stages.tiny_generator --out models/tiny_random --resolution 64 --seed 0

A Stable-Diffusion-shaped pipeline (UNet, VAE with SD's 8x downsampling, CLIP text encoder, the real CLIP
tokenizer) with random weights drawn from `--seed`. The generate stage loads it back with
`from_pretrained`, like any downloaded model. Its children are noise-like: it is for running the
pipeline offline, not for realistic images.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.common.errors import InputError, user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    out: Path = typer.Option(Path("models/tiny_random"), help="Output diffusers directory."),
    resolution: int = typer.Option(64, help="Image side the UNet is configured for (a multiple of 8)."),
    seed: int = typer.Option(0, help="Seed of every random weight."),
) -> None:
    """Build the tiny random-weight Stable-Diffusion-shaped pipeline and save it with save_pretrained."""
    from stages.common.tiny_generator import TinyConfig, save_pipeline

    with user_errors():
        if resolution < 8 or resolution % 8:
            raise InputError("tiny_generator.resolution", f"is {resolution}; expected a positive multiple of 8")
        save_pipeline(TinyConfig(resolution=resolution, seed=seed), out)
    typer.echo(f"{out}: tiny random-weight generator ({resolution} px, seed {seed})")


if __name__ == "__main__":
    app()
