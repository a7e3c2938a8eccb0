"""select: the children sets one consumer reads -> the exact list of them with fingerprints (and, where the
consumer reads them, the registry fields it reads and the sets' embedding caches), a file that keeps its bytes
while nothing it selects changes. The consumer's DVC stage depends on this file instead of the folder holding
every set, so adding or changing a set it does not read reruns this cheap stage, not the consumer
(stages.contracts.selection).

    python -m stages.select --children-root data/children --generators tiny_random --fit tiny_random \\
        --registry '' --embeddings '' --out data/selections/code_eval.json

It reads every file of the selected sets once (SHA-256 at disk speed: minutes for COCO-scale sets, against the
GPU-days of the stages it spares).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()


def run(children_root: Path, names: list[str], registry: Path | None, out: Path, *, embeddings: Path | None = None,
        progress: bool = True) -> dict:
    """Fingerprint the sets `names` under `children_root` (and their caches ``<embeddings>/<set>.h5`` when
    `embeddings` is given), record their registry entries when `registry` is given, and write the selection
    atomically; returns what was written."""
    from tqdm import tqdm

    from stages.contracts.io import check_outputs, write_json
    from stages.contracts.selection import RECORDED, file_fingerprint, fingerprint, set_files

    check_outputs(writes=[out], reads=[registry, embeddings, children_root])
    entries: dict = {}
    if registry is not None:
        from stages.generation.registry import read_registry

        known = read_registry(registry)
        # None: an imported set, which has no entry
        entries = {name: {field: getattr(known[name], field) for field in RECORDED} if name in known else None
                   for name in names}
    total = sum(size for name in names if (children_root / name).is_dir()
                for _, _, size in set_files(children_root / name))
    caches = [embeddings / f"{name}.h5" for name in names] if embeddings is not None else []
    total += sum(path.stat().st_size for path in caches if path.is_file())
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"select {out.stem}", disable=not progress) as bar:
        sets = {name: fingerprint(children_root / name, advance=bar.update) for name in names}
        hashed = {path.stem: file_fingerprint(path, advance=bar.update) for path in caches}
    selection = {"caches": hashed, "registry": entries, "sets": sets}
    write_json(out, selection)
    return selection


@app.command()
def main(
    children_root: Path = typer.Option(..., help="Folder of the children sets, one folder per set."),
    generators: list[str] = typer.Option(..., help="A set the consumer reads (repeat the option)."),
    fit: list[str] = typer.Option([], help="A set it fits on (repeat; code_eval's --fit): selected as well."),
    registry: str = typer.Option(..., help="Generator registry whose entries of the sets the consumer reads "
                                           "(the detector: which have random weights), or '' for none."),
    embeddings: str = typer.Option(..., help="Folder of the consumer's embedding caches whose <set>.h5 it reads "
                                             "(the detector: data/embeddings/model), or '' for none."),
    out: Path = typer.Option(..., help="Output selection (JSON)."),
) -> None:
    """Name and fingerprint the children sets one consumer reads."""
    from stages.contracts.selection import selected

    with user_errors():
        names = selected(generators, fit)
        result = run(children_root, names, Path(registry) if registry else None, out,
                     embeddings=Path(embeddings) if embeddings else None)
    for name, print_ in result["sets"].items():
        typer.echo(f"{name}: {print_['files']} files, {print_['bytes']} bytes, sha256 {print_['sha256'][:12]}")


if __name__ == "__main__":
    app()
