"""demo_parents: the demo's captions -> data/demo_parents/, its photographs copied into the workspace.

    python -m stages.demo_parents --captions stages/sources/demo/captions.json --out data/demo_parents

The demo's captions name each image ``<package>:<file>``, a photograph shipped inside scikit-image or
scikit-learn. This copies each one, byte for byte, to ``<out>/<package>/<file>``: the clusters stage reads
them there (``clusters.images``), so the clusters table points into the workspace and not into the virtual
environment, and ``dvc exp run --temp``, ``dvc queue`` or another environment find the same files.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()


def run(captions: Path, out: Path) -> list[Path]:
    """Copy every image the captions file names into `out` (atomically, as one folder); return the copies."""
    import shutil

    from stages.contracts.errors import InputError
    from stages.contracts.io import atomic_path
    from stages.sources.readers import demo_image, demo_image_names, package_image

    names = demo_image_names(captions)
    with atomic_path(out, kind="dir", stage="demo_parents", inputs=[captions]) as tmp:
        for name in names:
            source, copy = package_image(name), demo_image(tmp, name)
            if not source.is_file():
                raise InputError(f"{captions}: {name}", f"{source} does not exist in the installed package",
                                 "reinstall the project's dependencies (make install)")
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    return [demo_image(out, name) for name in names]


@app.command()
def main(
    captions: Path = typer.Option(..., help="The demo's COCO caption file; file_name is '<package>:<file>'."),
    out: Path = typer.Option(..., help="Output folder: <out>/<package>/<file> for each image."),
) -> None:
    """Copy the demo's photographs out of their installed packages into the workspace."""
    with user_errors():
        copies = run(captions, out)
    typer.echo(f"{out}: {len(copies)} demo photographs")


if __name__ == "__main__":
    app()
