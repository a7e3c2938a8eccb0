"""retrieval (Table 3): a generator's children and the captions, embedded by one image-text backbone ->
exact-pair and intra-cluster recall@1/3/5 of caption retrieval from each child, on val and test.

    python -m stages.retrieval --children data/embeddings/openclip_vitb32_random/tiny_random.h5 \\
        --captions data/embeddings/openclip_vitb32_random/captions.h5 --chunk 2048 \\
        --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --metrics metrics/retrieval/openclip_vitb32_random/tiny_random.json

Each child ranks every caption of its split by cosine similarity. Exact pair: a hit at k when the caption
that generated it is in the top k; intra-cluster: when any caption of its cluster is. Similarities are
computed --chunk children at a time (memory O(chunk x captions)). A backbone without a text tower (its
captions cache has 0 rows, attribute text_tower=False) records every value as null: not applicable.

Children whose caption index is unknown (an imported set: caption_index < 0, stages.contracts.children) are
queries of the intra-cluster recall only; exact-pair recall is computed on the children whose caption index
is known, `exact_pair_queries` of the split's `queries`, and is null (not applicable) when there are none.
Each recall carries its 95 % bootstrap interval (`r1_low`, `r1_high`, ...: the children's clusters resampled,
docs/intervals.md).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import InputError, user_errors
from stages.contracts.runtime import Command
from stages.uncertainty.bootstrap import Bootstrap
from stages.uncertainty.options import resamples_option, seed_option

app = Command()
EVAL_SPLITS = ("val", "test")
KS = (1, 3, 5)


def not_applicable() -> dict:
    return {split: {kind: {f"r{k}{b}": None for k in KS for b in ("", "_low", "_high")}
                    for kind in ("exact_pair", "intra_cluster")}
            | {"queries": None, "exact_pair_queries": None} for split in EVAL_SPLITS}


def has_text_tower(captions) -> bool:
    flag = captions.attrs.get("text_tower", True)
    return bool(flag) and len(captions) > 0


def caption_rows(children, captions, *, where: str):
    """Row of `captions` that generated each child (matched by cluster id and caption index); -1 for a child
    whose caption index is unknown, which must still have a caption of its cluster in its split."""
    import numpy as np

    key = captions.cluster_id * 65536 + captions.caption_index
    order = np.argsort(key, kind="stable")
    known = children.caption_index >= 0
    wanted = children.cluster_id * 65536 + children.caption_index
    position = np.clip(np.searchsorted(key[order], wanted), 0, len(key) - 1)
    rows = np.where(known, order[position], -1)
    missing = known & (key[rows] != wanted)
    if missing.any():
        raise InputError(where, f"{int(missing.sum())} children have no caption embedding "
                                f"(e.g. {children.id[missing][0]}); rerun the embed stage: dvc repro")
    if (captions.split[rows[known]] != children.split[known]).any():
        raise InputError(where, "a child and the caption that generated it are in different splits")
    pairs = set(zip(captions.cluster_id.tolist(), captions.split.tolist(), strict=True))
    lost = [i for i in np.flatnonzero(~known) if (int(children.cluster_id[i]), children.split[i]) not in pairs]
    if lost:
        raise InputError(where, f"{len(lost)} children have no caption of their cluster in their split "
                                f"(e.g. {children.id[lost[0]]}); rerun the embed stage: dvc repro")
    return rows


def run(children_path: Path, captions_path: Path, metrics: Path, *, chunk: int,
        bootstrap: Bootstrap | None = None) -> dict:
    import numpy as np

    from stages.contracts.embeddings import read_embeddings, same_backbone
    from stages.contracts.io import check_outputs, write_metrics
    from stages.study.retrieval import recall_at_k

    check_outputs(writes=[metrics], reads=[children_path, captions_path])
    children, captions = read_embeddings(children_path), read_embeddings(captions_path)
    if not has_text_tower(captions):
        result = not_applicable()
        write_metrics(metrics, result)
        return result
    same_backbone({"children": children, "captions": captions})
    where = f"{children_path} + {captions_path}"
    rows = caption_rows(children, captions, where=where)
    result = {}
    for split in EVAL_SPLITS:
        queries = children.split == split
        keys = np.flatnonzero(captions.split == split)
        if not queries.any():  # no child in this split (a partial set): nothing to retrieve, and 0 says why
            result[split] = not_applicable()[split] | {"queries": 0, "exact_pair_queries": 0}
            continue
        # the generating caption's position among this split's captions
        local = np.full(len(captions) + 1, -1)  # the last entry: row -1, a child of unknown caption index
        local[keys] = np.arange(len(keys))
        result[split] = recall_at_k(children.embeddings[queries], captions.embeddings[keys], local[rows[queries]],
                                    children.cluster_id[queries], captions.cluster_id[keys], ks=KS, chunk=chunk,
                                    bootstrap=bootstrap)
        result[split]["queries"] = int(queries.sum())
        result[split]["exact_pair_queries"] = int((rows[queries] >= 0).sum())
    write_metrics(metrics, result)
    return result


@app.command()
def main(
    children: Path = typer.Option(..., help="Embedding cache of one generator's children."),
    captions: Path = typer.Option(..., help="Caption embedding cache of the same backbone (captions.h5)."),
    chunk: int = typer.Option(..., min=1, help="Children per similarity block (memory: chunk x captions)."),
    metrics: Path = typer.Option(..., help="Output metrics JSON (nulls for a backbone without a text tower)."),
    bootstrap_resamples: int = resamples_option(),
    bootstrap_seed: int = seed_option(),
) -> None:
    """Caption retrieval from generated images (the paper's Table 3)."""
    with user_errors():
        result = run(children, captions, metrics, chunk=chunk, bootstrap=Bootstrap(bootstrap_resamples, bootstrap_seed))
    for split in EVAL_SPLITS:
        exact, intra = result[split]["exact_pair"], result[split]["intra_cluster"]
        if intra["r1"] is None:
            typer.echo(f"{split}: not applicable ({'no child' if result[split]['queries'] == 0 else 'no text tower'})")
            continue
        known, queries = result[split]["exact_pair_queries"], result[split]["queries"]
        exact_text = ("exact n/a (no caption index known)" if exact["r1"] is None else
                      f"exact R@1/3/5 {exact['r1']:.4f} {exact['r3']:.4f} {exact['r5']:.4f}"
                      + (f" ({known} of {queries} children)" if known < queries else ""))
        typer.echo(f"{split}: {exact_text}  intra-cluster {intra['r1']:.4f} {intra['r3']:.4f} {intra['r5']:.4f}")


if __name__ == "__main__":
    app()
