"""import_children: every layout, built in a temporary folder from tiny children of the test photographs, is
imported row for row (bytes, ids, caption indices, splits, originals); bad children stop the import naming
them or are counted; a killed import resumes byte-identically; the study runs on an imported set under DVC."""

from __future__ import annotations

import io
import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stages.contracts.children import iter_image_bytes, read_manifest, read_settings
from stages.contracts.clusters import read_clusters
from stages.contracts.ids import child_id
from stages.import_children import app, run
from stages.importing.children import ParentIndex, Reencode
from stages.importing.layouts import Layout, named_index
from tests.fixtures import write_clusters
from tests.images import photo, write_truncated

N_PARENTS, N_CAPTIONS = 6, 5


def child_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    photo(5000 + seed, (24, 16)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def clusters(tmp_path):
    return write_clusters(tmp_path / "parents", n_parents=N_PARENTS, n_captions=N_CAPTIONS)


def import_set(tmp_path, clusters, layout, root, *, generator="", reencode=Reencode.none, on_bad="error",
               shard_size=4, name="imported"):
    from stages.contracts.errors import OnBad

    out = tmp_path / "children" / name
    result = run(name, Layout(layout), root, clusters, out, tmp_path / "metrics" / f"{name}.json",
                 generator=generator, reencode=reencode, on_bad=OnBad(on_bad), shard_size=shard_size, progress=False)
    return out, result


def imported(out):
    """{child_id: (cluster_id, caption_index, split, original, bytes)} of an imported folder."""
    manifest = read_manifest(out)
    images = dict(iter_image_bytes(out))
    return {r.child_id: (r.cluster_id, r.caption_index, r.split, r.original, images[r.child_id])
            for r in manifest.itertuples()}


def split_of(clusters_path):
    table = read_clusters(clusters_path)
    return dict(zip(table["cluster_id"], table["split"], strict=True))


# ------------------------------------------------------------------------------------------------ layouts
def write_cocofake(root, *, per_parent=N_CAPTIONS, named=True, stems=None):
    """COCOFake's folders: <root>/<train2014|val2014>/<parent stem>/<child>.jpg; returns {original: bytes}."""
    held = {}
    for cluster in range(N_PARENTS):
        stem = (stems or {}).get(cluster, str(cluster))
        folder = root / ("train2014" if cluster % 2 else "val2014") / stem
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_parent):
            name = f"{stem}_{k}.jpg" if named else f"gen{chr(97 + k)}.jpg"
            data = child_bytes(10 * cluster + k)
            (folder / name).write_bytes(data)
            held[(folder / name).relative_to(root).as_posix()] = (cluster, k if named else None, data)
    return held


def test_cocofake_with_named_indices_is_imported_row_for_row(tmp_path, clusters):
    root = tmp_path / "cocofake"
    held = write_cocofake(root)
    (root / "README.txt").write_text("not a child: outside the parent folders")
    (root / ".DS_Store").write_bytes(b"hidden")
    out, result = import_set(tmp_path, clusters, "cocofake", root)
    splits = split_of(clusters)
    expected = {child_id(c, k): (c, k, splits[c], original, data) for original, (c, k, data) in held.items()}
    assert imported(out) == expected
    manifest = read_manifest(out)
    assert list(manifest["child_id"]) == sorted(expected, key=lambda i: (expected[i][0], expected[i][1]))
    assert set(manifest["generator"]) == {"imported"} and set(manifest["seed"]) == {-1}
    assert manifest["nsfw"].isna().all() and not manifest["truncated"].any()
    # the caption at a known index is the cluster's
    table = read_clusters(clusters).set_index("cluster_id")
    assert all(r.caption == table.loc[r.cluster_id, "captions"][r.caption_index] for r in manifest.itertuples())
    assert read_settings(out)["layout"] == "cocofake"
    assert result["children"]["total"] == N_PARENTS * N_CAPTIONS and result["parents"]["full"] == N_PARENTS
    assert result["caption_index"] == {"known": N_PARENTS * N_CAPTIONS, "unknown": 0}
    assert json.loads((tmp_path / "metrics" / "imported.json").read_text())["skipped"]["total"] == 0


def test_cocofake_without_indices_numbers_each_clusters_children_as_unknown(tmp_path, clusters):
    root = tmp_path / "cocofake"
    held = write_cocofake(root, per_parent=3, named=False,
                          stems={c: f"COCO_train2014_{c:012d}" for c in range(N_PARENTS)})
    out, result = import_set(tmp_path, clusters, "cocofake", root)
    rows = imported(out)
    splits = split_of(clusters)
    expected = {}
    for original, (cluster, _, data) in sorted(held.items()):
        k = sum(1 for i in expected.values() if i[0] == cluster)
        expected[child_id(cluster, -(k + 1))] = (cluster, -(k + 1), splits[cluster], original, data)
    assert rows == expected
    assert all(i.endswith(("_u0", "_u1", "_u2")) for i in rows)
    assert set(read_manifest(out)["caption"]) == {""}
    assert result["caption_index"]["unknown"] == 3 * N_PARENTS and result["parents"]["partial"] == N_PARENTS


def test_per_parent_drct_style_one_child_per_parent(tmp_path, clusters):
    root = tmp_path / "drct"
    held = {}
    for cluster in range(N_PARENTS):
        for generator in ("sd14", "sdxl"):
            folder = root / generator / ("train2017" if cluster < 3 else "val2017")
            folder.mkdir(parents=True, exist_ok=True)
            ext, fmt = ("png", "PNG") if cluster % 2 else ("jpg", "JPEG")
            data = child_bytes(cluster + (100 if generator == "sdxl" else 0), fmt)
            (folder / f"{cluster:012d}.{ext}").write_bytes(data)
            held[(generator, cluster)] = (f"{generator}/{folder.name}/{cluster:012d}.{ext}", data, ext)
    out, _ = import_set(tmp_path, clusters, "per_parent", root, generator="sdxl")
    splits = split_of(clusters)
    expected = {child_id(c, -1): (c, -1, splits[c], held["sdxl", c][0], held["sdxl", c][1]) for c in range(N_PARENTS)}
    assert imported(out) == expected
    # each child's image path names its own format
    shard = pq.read_table(out / "shards" / "shard-00000.parquet").column("image").to_pylist()
    assert [s["path"].rsplit(".", 1)[1] for s in shard] == [held["sdxl", c][2] for c in range(4)]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_manifest_with_paths(tmp_path, clusters, suffix):
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    rows, held = [], {}
    for cluster in range(N_PARENTS):
        for k in (0, 2) if cluster % 2 else (1,):
            data = child_bytes(10 * cluster + k)
            (folder / "images" / f"{cluster}-{k}.jpg").write_bytes(data)
            rows.append({"path": f"images/{cluster}-{k}.jpg", "parent": str(cluster), "caption_index": k,
                         "caption": f"their caption {cluster} {k}", "generator": "g1"})
            held[child_id(cluster, k)] = (f"images/{cluster}-{k}.jpg", data)
    rows.append({"path": "images/other.jpg", "parent": "0", "caption_index": 3, "caption": "x", "generator": "g2"})
    frame = pd.DataFrame(rows)
    manifest = folder / f"children.{suffix}"
    {"csv": lambda: frame.to_csv(manifest, index=False),
     "jsonl": lambda: frame.to_json(manifest, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(manifest)}[suffix]()
    out, _ = import_set(tmp_path, clusters, "manifest", manifest, generator="g1")
    splits = split_of(clusters)
    rows_out = imported(out)
    assert rows_out == {i: (int(i[1:13]), int(i[-1]), splits[int(i[1:13])], o, d) for i, (o, d) in held.items()}
    captions = dict(zip(read_manifest(out)["child_id"], read_manifest(out)["caption"], strict=True))
    assert captions[child_id(1, 2)] == "their caption 1 2"  # the set's own caption wins


def test_manifest_with_bytes_and_hf_parquet_and_saved_dataset(tmp_path, clusters):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    datas = [child_bytes(cluster) for cluster in range(N_PARENTS)]
    ids = [f"COCO_val2014_{c:012d}" for c in range(N_PARENTS)]
    hf = tmp_path / "hf" / "data"
    hf.mkdir(parents=True)
    table = pa.table({"image": pa.array([{"bytes": d, "path": f"{i}.jpg"} for d, i in zip(datas, ids, strict=True)],
                                        image_type),
                      "image_id": pa.array(list(range(N_PARENTS)), pa.int64())})
    pq.write_table(table.slice(0, 4), hf / "train-00000-of-00002.parquet", row_group_size=3)
    pq.write_table(table.slice(4), hf / "train-00001-of-00002.parquet")
    splits = split_of(clusters)

    def expected(originals):
        return {child_id(c, -1): (c, -1, splits[c], originals[c], datas[c]) for c in range(N_PARENTS)}

    out, _ = import_set(tmp_path, clusters, "hf_parquet", tmp_path / "hf", name="hf")
    assert imported(out) == expected([f"data/train-0000{c // 4}-of-00002.parquet#{c % 4}" for c in range(N_PARENTS)])

    saved = tmp_path / "saved"
    saved.mkdir()
    with pa.OSFile(str(saved / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:  # datasets' save_to_disk writes the stream format
        writer.write_table(table)
    (saved / "state.json").write_text("{}")
    out, _ = import_set(tmp_path, clusters, "hf_parquet", saved, name="saved")
    assert imported(out) == expected([f"data-00000-of-00001.arrow#{c}" for c in range(N_PARENTS)])

    manifest = tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"image": pa.array(datas, pa.binary()), "parent": ids}), manifest)
    out, _ = import_set(tmp_path, clusters, "manifest", manifest, name="bytes")
    assert imported(out) == expected([f"bytes.parquet#{c}" for c in range(N_PARENTS)])


def test_parent_ids_match_source_id_stem_or_coco_integer(tmp_path, clusters):
    index = ParentIndex(read_clusters(clusters))
    assert index.find("3") == index.find("000000000003") == index.find("COCO_train2014_000000000003") == 3
    assert "not in the clusters table" in index.find("99")
    assert (child_id(42, -1), child_id(42, -3), child_id(42, 0)) == ("c000000000042_u0", "c000000000042_u2",
                                                                     "c000000000042_0")
    assert [named_index(s) for s in ("x_3", "x-4", "2", "COCO_train2014_000000000009", "abc")] == [3, 4, 2, None, None]


def test_reencode_png_and_jpeg95(tmp_path, clusters):
    from PIL import Image

    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=1)
    for reencode, fmt in ((Reencode.png, "PNG"), (Reencode.jpeg95, "JPEG")):
        out, _ = import_set(tmp_path, clusters, "cocofake", root, reencode=reencode, name=reencode.value)
        formats = {Image.open(io.BytesIO(d)).format for *_, d in imported(out).values()}
        assert formats == {fmt}


# ---------------------------------------------------------------------------------------------- bad children
def bad_set(root):
    """A COCOFake folder with one of each bad child beside 2 good children per parent."""
    write_cocofake(root, per_parent=2)
    (root / "val2014" / "0" / "0_4.txt").write_text("not an image")                 # unreadable
    write_truncated(root / "val2014" / "2" / "2_3.jpg")                              # unreadable (truncated)
    (root / "val2014" / "99").mkdir()
    (root / "val2014" / "99" / "99_0.jpg").write_bytes(child_bytes(1))              # unknown parent
    (root / "train2014" / "1" / "1_9.jpg").write_bytes(child_bytes(2))              # caption index out of range
    (root / "train2014" / "1" / "copy-of-1_0.jpg").write_bytes(child_bytes(3))       # duplicate (1, 0)
    return {"unknown_parent": "99_0.jpg", "duplicate": "copy-of-1_0.jpg", "unreadable": "0_4.txt",
            "caption_index": "1_9.jpg"}


def test_each_bad_child_stops_the_import_naming_it(tmp_path, clusters):
    root = tmp_path / "cocofake"
    bad_set(root)
    runner = CliRunner()
    args = ["--name", "x", "--layout", "cocofake", "--root", str(root), "--generator", "", "--reencode", "none",
            "--on-bad", "error", "--shard-size", "4", "--clusters", str(clusters), "--out", str(tmp_path / "x"),
            "--metrics", str(tmp_path / "x.json")]
    expected = {"0_4.txt": "not a readable image", "1_9.jpg": "out of range", "copy-of-1_0.jpg": "duplicate",
                "2_3.jpg": "truncated", "99_0.jpg": "not in the clusters table"}
    named = []
    for _ in expected:  # each run stops at the first bad child (in order of path); removing it reveals the next
        done = runner.invoke(app, args)
        assert done.exit_code == 2, done.output
        culprit = next(c for c in expected if f"/{c}:" in done.output)
        assert expected[culprit] in done.output and "Traceback" not in done.output, done.output
        next(root.rglob(culprit)).unlink()
        named.append(culprit)
    assert sorted(named) == sorted(expected)
    assert runner.invoke(app, args).exit_code == 0


def test_bad_children_are_counted_with_on_bad_skip(tmp_path, clusters):
    root = tmp_path / "cocofake"
    bad_set(root)
    write_truncated(root / "val2014" / "4" / "4_3.jpg")
    out, result = import_set(tmp_path, clusters, "cocofake", root, on_bad="skip")
    assert result["skipped"] == {"unknown_parent": 1, "duplicate": 1, "unreadable": 3, "caption_index": 1,
                                 "leak": 0, "total": 6}
    assert len(read_manifest(out)) == 2 * N_PARENTS


def test_checks_read_a_bounded_part_of_each_file(tmp_path, clusters):
    """Issue 23: a sparse 2 GiB `.jpg` is refused by its size unread (over MAX_CHILD_BYTES, 256 MiB), and a sparse
    128 MiB one (a JPEG, then a hole) is checked and digested a block at a time: the check's peak of Python
    allocations stays under 16 MiB (measured 0.6 MiB; main read each file whole: 2048 MiB, 2.19 GB of RSS)."""
    import os
    import tracemalloc

    from stages.contracts.errors import Skips
    from stages.importing.children import assign
    from stages.importing.layouts import Reader, read_layout

    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=1)
    huge, big = root / "val2014" / "0" / "0_1.jpg", root / "val2014" / "2" / "2_1.jpg"
    for path, size in ((huge, 2 * 2**30), (big, 128 * 2**20)):
        path.write_bytes(child_bytes(size % 7))
        os.truncate(path, size)  # sparse: no disk used
    table, found, skips = read_clusters(clusters), read_layout(Layout.cocofake, root, ""), Skips(skip=True)
    tracemalloc.start()
    try:
        planned = assign(found, table, root=root, reader=Reader(), skips=skips)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert dict(skips.counts) == {"unreadable": 1}
    assert f"{huge}: is {2 * 2**30} bytes, over the limit" in skips.examples["unreadable"][0]
    assert sorted(p.found.original for p in planned if p.found.original.endswith("_1.jpg")) == ["val2014/2/2_1.jpg"]


@pytest.mark.timeout(30)  # main waited for a writer for ever
def test_a_fifo_among_the_files_is_named_never_opened(tmp_path, clusters):
    """Issue 23: a FIFO among a set's files (a cocofake child, a manifest, a Hugging Face table file) is refused
    before it is opened: exit 2 naming it, or a counted skip with on_bad skip."""
    import os

    from stages.contracts.errors import InputError

    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=2)
    fifo = root / "val2014" / "0" / "0_2.jpg"
    os.mkfifo(fifo)
    args = ["--name", "x", "--layout", "cocofake", "--root", str(root), "--generator", "", "--reencode", "none",
            "--on-bad", "error", "--shard-size", "4", "--clusters", str(clusters), "--out", str(tmp_path / "x"),
            "--metrics", str(tmp_path / "x.json")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and f"{fifo}: not a regular file (a FIFO)" in done.output, done.output
    assert "Traceback" not in done.output
    _, result = import_set(tmp_path, clusters, "cocofake", root, on_bad="skip")
    assert result["skipped"]["unreadable"] == 1 and result["children"]["total"] == 2 * N_PARENTS

    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "hf").mkdir()
    os.mkfifo(tmp_path / "hf" / "train.parquet")
    for layout, path in (("manifest", tmp_path / "pipe.csv"), ("hf_parquet", tmp_path / "hf")):
        with pytest.raises(InputError, match="not a regular file \\(a FIFO\\)"):
            import_set(tmp_path, clusters, layout, path)


def test_a_cocofake_link_leading_out_of_the_root_is_named_never_followed(tmp_path, clusters):
    """Issue 23: a child or a parent folder that is a link out of the set's root is refused naming it (or a
    counted skip); a link inside the root, or into the DVC cache, is followed."""
    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=2)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "5").mkdir(parents=True)
    (elsewhere / "secret.jpg").write_bytes(child_bytes(90))
    (elsewhere / "5" / "5_3.jpg").write_bytes(child_bytes(91))
    (root / "val2014" / "0" / "0_2.jpg").symlink_to(elsewhere / "secret.jpg")
    (root / "train2014" / "5").rename(tmp_path / "moved")
    (root / "train2014" / "5").symlink_to(elsewhere / "5")
    (root / "val2014" / "2" / "2_2.jpg").symlink_to(root / "val2014" / "2" / "2_0.jpg")  # inside: followed
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab"  # dvc add's symlink cache type: followed
    cache.mkdir(parents=True)
    (cache / "cdef").write_bytes(child_bytes(92))
    (root / "val2014" / "4" / "4_2.jpg").symlink_to(cache / "cdef")
    args = ["--name", "x", "--layout", "cocofake", "--root", str(root), "--generator", "", "--reencode", "none",
            "--on-bad", "error", "--shard-size", "4", "--clusters", str(clusters), "--out", str(tmp_path / "x"),
            "--metrics", str(tmp_path / "x.json")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert f"{root / 'train2014' / '5'}: is a link leading out of the set's root" in done.output, done.output
    out, result = import_set(tmp_path, clusters, "cocofake", root, on_bad="skip")
    assert result["skipped"]["unreadable"] == 2
    # the link inside the root is followed: to a copy of 2_0.jpg, so the same image again, imported once
    assert result["skipped"]["duplicate"] == 1
    assert sorted(c for c, i in read_manifest(out)[["cluster_id", "caption_index"]].itertuples(index=False)
                  if i == 2) == [4]
    assert 5 not in set(read_manifest(out)["cluster_id"])


def test_a_set_listing_one_file_twice_is_a_duplicate(tmp_path, clusters):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(child_bytes(0))
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "parent": ["1", "1"]}).to_csv(folder / "m.csv", index=False)
    with pytest.raises(Exception, match="a.jpg: listed twice"):
        import_set(tmp_path, clusters, "manifest", folder / "m.csv")


# ---------------------------------------------------------------------------------------------- resumption
def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_import_resumes_byte_identically(tmp_path, clusters, monkeypatch):
    from stages.generation import shards as gen

    root = tmp_path / "cocofake"
    write_cocofake(root)
    whole, _ = import_set(tmp_path, clusters, "cocofake", root, name="whole")
    reference = folder_bytes(whole)
    shutil.rmtree(whole)

    real, calls = gen.write_shard, []

    def dies_at_the_third(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[0].name)
        real(*args, **kwargs)

    monkeypatch.setattr(gen, "write_shard", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        import_set(tmp_path, clusters, "cocofake", root, name="whole")
    assert not (whole / "manifest.parquet").exists() and len(list((whole / "shards").iterdir())) == 2
    monkeypatch.setattr(gen, "write_shard", real)
    written = []
    monkeypatch.setattr(gen, "write_shard", lambda *a, **k: (written.append(a[0].name), real(*a, **k)))
    import_set(tmp_path, clusters, "cocofake", root, name="whole")
    assert folder_bytes(whole) == reference
    assert len(written) == len(reference) - 2 - 2  # the marker, the manifest and the two kept shards: not remade
    # a changed source file remakes its shard only
    target = next((root / "val2014" / "0").iterdir())
    target.write_bytes(child_bytes(77))
    written.clear()
    import_set(tmp_path, clusters, "cocofake", root, name="whole")
    assert written == ["shard-00000.parquet"]


def test_a_child_replaced_with_its_size_and_time_kept_is_imported_again(tmp_path, clusters):
    """Issue 23: a shard is kept by its sources' content, not by their sizes and modification times."""
    import os

    root = tmp_path / "cocofake"
    write_cocofake(root)
    out, _ = import_set(tmp_path, clusters, "cocofake", root)
    target = root / "val2014" / "0" / "0_1.jpg"
    old, status = target.read_bytes(), target.stat()
    new = next(b for b in (child_bytes(100 + k) for k in range(50)) if len(b) <= len(old))
    new += b"\0" * (len(old) - len(new))  # after the JPEG's end: the same size, still a readable image
    target.write_bytes(new)
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (status.st_size, status.st_mtime_ns)
    import_set(tmp_path, clusters, "cocofake", root)
    assert imported(out)[child_id(0, 1)][4] == new != old


def test_missing_root_and_wrong_generator_are_named(tmp_path, clusters):
    from stages.contracts.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        import_set(tmp_path, clusters, "cocofake", tmp_path / "nowhere")
    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=1)
    with pytest.raises(InputError, match="cocofake layout holds one generator"):
        import_set(tmp_path, clusters, "cocofake", root, generator="sd14")
    shutil.rmtree(root / "val2014")
    shutil.rmtree(root / "train2014")
    with pytest.raises(InputError, match="no child"):
        import_set(tmp_path, clusters, "cocofake", root)


# ------------------------------------------------------------------------------------------- DVC wiring
def test_dvc_renders_one_import_per_set_with_every_option_required_and_studies_it(tmp_path):
    """An entry of import_children.sets renders its own instance, whose command passes every option (each required),
    and a name in children.sets gets the same downstream instances as a generated set; the check receives it."""
    import yaml

    from tests.imports import REPO
    from tests.test_params import examples, parse, passed_and_defaulted, render

    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["import_children"]["sets"] = {"cocofake_sd14": {"layout": "cocofake", "root": "downloads/cocofake",
                                                           "generator": ""}}
    params["children"]["sets"] = ["tiny_random", "cocofake_sd14"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    commands = render(tmp_path)
    module, args = commands["import_children@cocofake_sd14"]
    assert passed_and_defaulted(module, args) == (set(), set())
    assert parse(module, args).params["root"].as_posix() == "downloads/cocofake"
    for stage in ("embed_children@openclip_vitb32_random-cocofake_sd14", "embed_model_children@cocofake_sd14",
                  "distances@openclip_vitb32_random-cocofake_sd14", "probe_model@model-cocofake_sd14-cross0",
                  "tsne@cocofake_sd14", "disentangle_model@model-cocofake_sd14"):
        assert stage in commands, (stage, sorted(commands))
    _, check = commands["check@setting0"]
    assert check[check.index("--imports.cocofake_sd14.layout") + 1] == "cocofake"
    assert "generate@cocofake_sd14" not in commands
    _, probe = commands["probe@openclip_vitb32_random-tiny_random-cross0"]
    assert [probe[i + 1] for i, w in enumerate(probe) if w == "--generators"] == ["tiny_random", "cocofake_sd14"]
    docstring = __import__("stages.import_children", fromlist=["app"]).__doc__
    [(name, example)] = [e for e in examples(docstring) if e[0] == "stages.import_children"]
    assert parse(name, example).params["layout"] is Layout.cocofake


# ------------------------------------------------------------------------------------- the study under DVC
def write_demo_cocofake(root, captions_file, n_captions: int = N_CAPTIONS) -> int:
    """COCOFake's layout for the demo parents: <root>/val2014/COCO_val2014_<id>/<stem>_<i>.jpg, N children per
    parent, each a small shifted copy of its parent photograph (so the study has something to find)."""
    from PIL import ImageOps

    from stages.sources.readers import package_image

    images = json.loads(captions_file.read_text())["images"]
    for image in images:
        folder = root / "val2014" / f"COCO_val2014_{int(image['id']):012d}"
        folder.mkdir(parents=True, exist_ok=True)
        parent = ImageOps.fit(__import__("PIL.Image", fromlist=["open"]).open(package_image(image["file_name"]))
                              .convert("RGB"), (48, 48))
        for k in range(n_captions):
            child = parent.rotate(3 * (k + 1)).point(lambda v, k=k: min(255, v + 4 * k))
            child.save(folder / f"{folder.name}_{k}.jpg", quality=90)
    return len(images)


@pytest.mark.slow
def test_the_study_runs_on_an_imported_set_under_dvc(dvc_repo):
    """Nothing generated: the demo parents and a COCOFake-layout set of 5 children each, imported, embedded and
    studied (distances, probe, retrieval, disentangle, t-SNE, the report); CoDE and the detector are left out
    (the report says their metrics are missing), as in test_study_dvc."""
    import yaml

    root = dvc_repo.path
    parents = write_demo_cocofake(root / "downloads" / "cocofake", root / "stages/sources/demo/captions.json")
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    report = pipeline["stages"]["report"]
    report["deps"] = [dep for dep in report["deps"] if not dep.startswith(
        ("metrics/code_", "metrics/detector", "metrics/plots/detector", "data/code", "data/detector",
         "metrics/plots/code_"))]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["generate"]["generators"] = []
    params["children"]["sets"] = ["cocofake_demo"]
    params["import_children"]["sets"] = {"cocofake_demo": {"layout": "cocofake", "root": "downloads/cocofake",
                                                           "generator": ""}}
    params["model"]["generators"] = params["code_train"]["data"]["generators"] = ["cocofake_demo"]
    params["code_eval"]["data"] = {"generators": ["cocofake_demo"], "fit": ["cocofake_demo"]}
    params["disentangle"]["epochs"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "an imported set")

    out = dvc_repo("dvc", "repro", "report", "tsne@cocofake_demo")
    assert "Running stage 'import_children@cocofake_demo'" in out and "generate@" not in out
    imported = json.loads((root / "metrics/import_children/cocofake_demo.json").read_text())
    assert imported["children"]["total"] == N_CAPTIONS * parents and imported["parents"]["full"] == parents
    assert imported["caption_index"]["unknown"] == 0
    from stages.reporting.layout import study_stages

    for stage in study_stages(root / "stages/reporting/layout.yaml"):
        for backbone in ("model", "openclip_vitb32_random"):
            assert (root / "metrics" / stage / backbone / "cocofake_demo.json").is_file(), (stage, backbone)
    retrieval = json.loads((root / "metrics/retrieval/openclip_vitb32_random/cocofake_demo.json").read_text())
    assert retrieval["test"]["exact_pair"]["r1"] is not None  # caption indices known: exact pairs are scored
    assert "cocofake_demo" in (root / "metrics/report.md").read_text()
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")
    again = dvc_repo("dvc", "repro", "report", "tsne@cocofake_demo")
    assert "Running stage" not in again


def test_the_detector_trains_on_a_set_without_a_registry_entry(tmp_path, repo_root):
    """An imported set is named like a generator but has no entry in generators.yaml: the detector trains on it
    (it is not counted as random-weight) instead of stopping at the unknown alias."""
    import yaml

    from stages.embedding.backbones import BackboneSpec, _registered, register
    from stages.shipped.artifact import load_detector
    from tests import test_detector as shipped

    register(BackboneSpec(alias=shipped.BACKBONE, library="open_clip", architecture="tiny", weights="random",
                          model_cfg=shipped.TINY_CLIP))
    try:
        root, clusters = shipped.make_pipeline(tmp_path / "pipeline", repo_root / "stages/embedding/backbones.yaml")
        registry = yaml.safe_load((root / "generators.yaml").read_text())
        del registry["gen_b"]  # gen_b stands for an imported set
        (root / "generators.yaml").write_text(yaml.safe_dump(registry))
        result = shipped.run_stage(root, clusters, repo_root, transforms=("jpeg95",))
    finally:
        _registered.pop(shipped.BACKBONE)
    assert result.exit_code == 0, result.output
    trained = load_detector(root / "detector").trained_on
    assert trained["generators"] == ["gen_a", "gen_b"] and trained["random_weight_generators"] == ["gen_a"]


def test_a_manifest_row_with_a_fractional_caption_index_is_named(tmp_path, clusters):
    from stages.contracts.errors import InputError

    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(child_bytes(0))
    pd.DataFrame({"path": ["a.jpg"], "parent": ["1"], "caption_index": ["2.5"]}).to_csv(folder / "m.csv", index=False)
    with pytest.raises(InputError, match=r"m.csv row 0: caption_index is '2.5'; expected an integer or empty"):
        import_set(tmp_path, clusters, "manifest", folder / "m.csv")
    pd.DataFrame({"path": ["a.jpg"], "parent": ["1"], "caption_index": ["-1"]}).to_csv(folder / "m.csv", index=False)
    out, _ = import_set(tmp_path, clusters, "manifest", folder / "m.csv")
    assert list(read_manifest(out)["child_id"]) == [child_id(1, -1)]


def test_the_same_image_twice_is_counted_once_and_across_splits_or_as_a_parent_is_a_leak(tmp_path, clusters):
    """Children are hashed by content: a copy in the same split is a duplicate (imported once), a copy whose parent
    is in another split is a leak, and so is a child with the bytes of a parent's photograph (real and fake)."""
    table = read_clusters(clusters)
    split = dict(zip(table["cluster_id"], table["split"], strict=True))
    root = tmp_path / "cocofake"
    write_cocofake(root, per_parent=2)
    folder = {c: root / ("train2014" if c % 2 else "val2014") / str(c) for c in range(N_PARENTS)}
    same = next(c for c in range(1, N_PARENTS) if split[c] == split[0])
    other = next(c for c in range(1, N_PARENTS) if split[c] != split[0])
    shutil.copy(folder[0] / "0_0.jpg", folder[same] / f"{same}_1.jpg")  # a copy within the split
    shutil.copy(folder[0] / "0_1.jpg", folder[other] / f"{other}_1.jpg")  # a copy across splits
    parent = table["image_path"].iloc[3]
    parent_file = next(p for p in (clusters.parent / parent, tmp_path / "parents" / parent) if p.is_file())
    shutil.copy(parent_file, folder[3] / "3_0.jpg")  # a parent's photograph as its own child
    from stages.contracts.errors import InputError

    with pytest.raises(InputError, match=r"3_0\.jpg.*same image \(same bytes\) as the parent \(real\) image"):
        import_set(tmp_path, clusters, "cocofake", root)
    out, result = import_set(tmp_path, clusters, "cocofake", root, on_bad="skip")
    assert result["skipped"]["duplicate"] == 1 and result["skipped"]["leak"] == 2
    kept = imported(out)
    assert len(kept) == 2 * N_PARENTS - 3
    assert len({data for *_, data in kept.values()}) == len(kept)  # every image once
    # of two copies one is kept (the first in the originals' order); the parent's photograph never is
    taken = {(c, i) for c, i, *_ in kept.values()}
    assert len(taken & {(0, 0), (same, 1)}) == 1 and len(taken & {(0, 1), (other, 1)}) == 1 and (3, 0) not in taken
