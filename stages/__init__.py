"""parentage: real photographs (parents) versus the images a diffusion model makes from their captions
(children). Each module in this package is one DVC stage with one Typer command; `stages.common` holds
what several stages share."""
