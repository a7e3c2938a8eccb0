"""import_children: a published children set + the clusters table -> data/children/<name>/ (the contract generate
writes, stages.contracts.children) and metrics/import_children/<name>.json.

    python -m stages.import_children --name cocofake_sd14 --layout cocofake --root downloads/cocofake \\
        --generator '' --reencode none --on-bad error --shard-size 64 --clusters data/clusters.parquet \\
        --out data/children/cocofake_sd14 --metrics metrics/import_children/cocofake_sd14.json

Layouts (stages/importing/layouts.py): cocofake (<root>/<split>/<parent file stem>/*.jpg), per_parent
(<root>[/<generator>]/<split>/<parent id>.<ext>), manifest (a CSV, JSONL or Parquet file), hf_parquet (a local
Hugging Face dataset folder). Each child is tied to its parent by the clusters table (source id, image file stem
or COCO id) and takes its split; its bytes are copied unchanged unless --reencode asks. The manifest's
`original` column says where each child came from, `generator` holds --name. A child with no parent in the
table, a duplicate, an unreadable or non-image file: an error naming it, or with --on-bad skip a counted skip.
Killed at any point, a rerun keeps the finished shards and writes the rest (byte-identical to one run).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import InputError, OnBad, user_errors
from stages.contracts.runtime import Command
from stages.importing.children import Reencode
from stages.importing.layouts import Layout

app = Command()
STAGE = "import_children"  # the name in its output folder's marker


def run(name: str, layout: Layout, root: Path, clusters: Path, out: Path, metrics: Path, *, generator: str,
        reencode: Reencode, on_bad: OnBad, shard_size: int, progress: bool = True) -> dict:
    """Read the layout, match, check and plan every child, write the missing shards, then the manifest and the
    metrics (stages/importing/children.py gives the protocol)."""
    from tqdm.auto import tqdm

    from stages.contracts.clusters import read_clusters
    from stages.contracts.errors import Skips
    from stages.contracts.io import check_outputs, write_metrics
    from stages.generation import shards as gen
    from stages.importing import children as imp
    from stages.importing.layouts import Reader, read_layout

    check_outputs(writes=[out, metrics], reads=[root, clusters])
    if shard_size < 1:
        raise InputError("import_children.shard_size", f"is {shard_size}; expected at least 1")
    if not root.exists():
        raise InputError(f"import_children.sets.{name}.root", f"{root} does not exist",
                         "download the set there, or point root at it")
    table = read_clusters(clusters)
    found = read_layout(layout, root, generator)
    skips, reader = Skips(skip=on_bad is OnBad.skip), Reader()
    base = root if layout in (Layout.cocofake, Layout.per_parent, Layout.hf_parquet) else root.parent
    with tqdm(total=len(found), unit="img", desc=f"import {name}: check", disable=not progress) as bar:
        planned = imp.assign(found, table, root=base, reader=reader, skips=skips, on_child=lambda: bar.update(1))
    if not planned:
        raise InputError(str(root), f"no child of the {layout} layout could be imported"
                                    + (f" ({skips.total} skipped)" if skips.total else ""),
                         "check the layout, the root and the generator")
    settings = {"import": name, "layout": layout.value, "root": root.as_posix(), "generator": generator,
                "reencode": reencode.value, "shard_size": shard_size}
    shards = gen.plan_shards([p.child for p in planned], shard_size)
    fingerprints = imp.fingerprints(shards, planned, settings)
    kept = gen.prepare_folder(out, shards, fingerprints, stage=STAGE, inputs=[root, clusters])
    if kept:
        print(f"{out}: resuming, {len(kept)} of {len(shards)} shards already finished")
    missing = sum(len(s.children) for s in shards if s.name not in kept)
    with tqdm(total=missing, unit="img", desc=f"import {name}: copy", disable=not progress) as bar:
        imp.write_shards(out, shards, planned, fingerprints=fingerprints, root=base, reencode=reencode,
                         reader=reader, on_child=bar.update)
    originals = {p.child.child_id: p.found.original for p in planned}
    manifest = gen.write_manifest(out, shards, alias=name, settings=settings, stage=STAGE,
                                  extra={"original": [originals[c.child_id] for s in shards for c in s.children]})
    result = imp.summarise(manifest, table, skips)
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    name: str = typer.Option(..., help="The set's name, used downstream like a generator alias (children.sets)."),
    layout: Layout = typer.Option(..., help="How the set is stored: cocofake | per_parent | manifest | hf_parquet."),
    root: Path = typer.Option(..., help="The set's folder (cocofake, per_parent, hf_parquet) or manifest file."),
    generator: str = typer.Option(..., help="One generator of a set holding several: per_parent's subfolder, the "
                                            "`generator` column's value (manifest, hf_parquet); '' = all."),
    reencode: Reencode = typer.Option(..., help="none: copy each image's bytes; jpeg95 | png: decode and encode."),
    on_bad: OnBad = typer.Option(..., help="error: stop at the first bad child, naming it; skip: count it."),
    shard_size: int = typer.Option(..., min=1, help="Children per Parquet shard (the unit of resumption)."),
    clusters: Path = typer.Option(..., help="The clusters table (the parents)."),
    out: Path = typer.Option(..., help="Output children folder."),
    metrics: Path = typer.Option(..., help="Output metrics JSON."),
) -> None:
    """Import a published children set as the children of one generator."""
    with user_errors():
        result = run(name, layout, root, clusters, out, metrics, generator=generator, reencode=reencode,
                     on_bad=on_bad, shard_size=shard_size)
    skipped = result["skipped"]["total"]
    typer.echo(f"{out}: {result['children']['total']} children ({result['caption_index']['unknown']} without a "
               f"caption index), {skipped} skipped")


if __name__ == "__main__":
    app()
