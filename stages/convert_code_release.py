"""convert_code_release: the CoDE authors' released model (a Hugging Face folder: a ViT and linear, k-NN and
one-class SVM heads stored as joblib pickles) -> one detector artifact of this project per head (JSON and
safetensors, no pickle), which `parentage detect`, the Python API and the benchmark stage score like the
project's own detectors.

    hf download aimagelab/CoDE --local-dir downloads/code_release
    python -m stages.convert_code_release downloads/code_release --out detectors/code_release --allow-unpickle
    parentage detect photos/ --detector detectors/code_release/linear

Reading the heads unpickles them, which runs whatever code the files hold: the command refuses unless
--allow-unpickle says you trust the folder. It is the only place the project unpickles (stages.shipped.release).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command

app = Command()


class Head(StrEnum):
    linear = "linear"
    knn = "knn"
    svm = "svm"


class Inliers(StrEnum):
    real = "real"
    fake = "fake"


@app.command()
def main(
    release: Path = typer.Argument(..., help="The release's Hugging Face model folder (config.json, "
                                             "model.safetensors, sklearn/*.sav and *.joblib)."),
    out: Path = typer.Option(..., help="Output folder: one detector artifact per head, <out>/<head>."),
    allow_unpickle: bool = typer.Option(False, "--allow-unpickle",
                                        help="Read the release's heads, which are pickles: loading one runs any "
                                             "code it holds. Pass it only for a folder you trust."),
    heads: list[Head] = typer.Option(list(Head), "--heads", help="Heads to convert (repeat the option)."),
    svm_inliers: Inliers = typer.Option(Inliers.fake, help="Which class the one-class SVM's inliers (+1) are: "
                                                           "fake, as the release's inference code reads its "
                                                           "output (-1 real, 1 fake)."),
) -> None:
    """Convert the CoDE authors' release into detector artifacts (JSON and safetensors, no pickle)."""
    from stages.shipped.release import convert

    stay_offline()
    with user_errors():
        chosen = tuple(h.value for h in dict.fromkeys(heads))
        written = convert(release, out, allow_unpickle=allow_unpickle, heads=chosen, svm_inliers=svm_inliers.value)
    for head, folder in written.items():
        typer.echo(f"{head}: {folder}  (parentage detect <images> --detector {folder})")


if __name__ == "__main__":
    app()
