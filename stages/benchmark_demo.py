"""benchmark_demo: the pipeline's own test split laid out as an external benchmark (layout real_fake), so the
offline demo runs the benchmark stage on something without a download.

    python -m stages.benchmark_demo --clusters data/clusters.parquet --children data/children \\
        --generators tiny_random --out data/benchmark_demo

Writes <out>/real/<parent id><suffix> (each test parent's file, byte for byte) and
<out>/fake/<generator>/<child id>.<ext> (each test child of every --generators, its stored bytes as they are;
the extension from the image format). Scored by the benchmark stage with the generators of the shipped
detector, it must give the detector's own test figures (metrics/detector.json, test.all): the same images, the
same backbone, the same threshold, read through detect's path instead of the embedding caches.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()
SPLIT = "test"  # never a split the detector or CoDE learnt from
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def run(clusters: Path, children: Path, generators: list[str], out: Path) -> dict[str, int]:
    """Write the folder (atomically); return the number of images per class folder."""
    import io
    import shutil

    from PIL import Image

    from stages.contracts.children import iter_image_bytes, read_manifest
    from stages.contracts.clusters import read_clusters
    from stages.contracts.errors import InputError
    from stages.contracts.ids import parent_id
    from stages.contracts.io import atomic_path

    if not generators or len(set(generators)) != len(generators):
        raise InputError("--generators", f"{generators}: give each generator once, at least one")
    table = read_clusters(clusters)
    parents = table[table["split"] == SPLIT]
    if parents.empty:
        raise InputError(str(clusters), f"holds no {SPLIT} parent")
    written = {"real": 0}
    with atomic_path(out, kind="dir", stage="benchmark_demo", inputs=[clusters, children]) as tmp:
        (tmp / "real").mkdir(parents=True)
        for row in parents.itertuples():
            source = Path(row.image_path)
            shutil.copyfile(source, tmp / "real" / f"{parent_id(int(row.cluster_id))}{source.suffix.lower()}")
            written["real"] += 1
        for generator in generators:
            manifest = read_manifest(children / generator)
            ids = manifest.loc[manifest["split"] == SPLIT, "child_id"].tolist()
            folder = tmp / "fake" / generator
            folder.mkdir(parents=True)
            for child, data in iter_image_bytes(children / generator, ids):
                with Image.open(io.BytesIO(data)) as image:
                    suffix = FORMATS.get(image.format or "", ".img")
                (folder / f"{child}{suffix}").write_bytes(data)
            written[f"fake/{generator}"] = len(ids)
    return written


@app.command()
def main(
    clusters: Path = typer.Option(..., help="The clusters table (its test parents are the reals)."),
    children: Path = typer.Option(..., help="Folder of the children folders, one per generator."),
    generators: list[str] = typer.Option(..., help="Generators whose test children are the fakes (repeat)."),
    out: Path = typer.Option(..., help="Output folder: real/ and fake/<generator>/."),
) -> None:
    """Lay out the pipeline's test split as a real/ + fake/ benchmark."""
    with user_errors():
        written = run(clusters, children, generators, out)
    typer.echo(f"{out}: " + ", ".join(f"{n} in {folder}/" for folder, n in written.items()))


if __name__ == "__main__":
    app()
