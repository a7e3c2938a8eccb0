"""The select stage: a selection names exactly its consumer's sets with fingerprints that move with their bytes and
only with them; the detector reads which sets have random weights from it; bad input is named."""

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from stages import select
from stages.contracts.errors import InputError
from stages.contracts.selection import fingerprint, read_selection, selection_random_weights


def make_set(root, name, payload=b"shard"):
    folder = root / name
    (folder / "shards").mkdir(parents=True)
    (folder / "manifest.parquet").write_bytes(b"manifest of " + name.encode())
    (folder / "shards" / "shard-00000.parquet").write_bytes(payload)
    return folder


def test_a_selection_keeps_its_bytes_when_an_unselected_set_changes_and_moves_with_a_selected_one(tmp_path):
    root = tmp_path / "children"
    make_set(root, "a")
    make_set(root, "b")
    out = tmp_path / "sel.json"
    select.run(root, ["a"], None, out, progress=False)
    first = out.read_bytes()
    make_set(root, "c")  # a new set the consumer does not read
    (root / "b" / "shards" / "shard-00000.parquet").write_bytes(b"changed")
    select.run(root, ["a"], None, out, progress=False)
    assert out.read_bytes() == first
    (root / "a" / "shards" / "shard-00000.parquet").write_bytes(b"shard but other")
    select.run(root, ["a"], None, out, progress=False)
    assert out.read_bytes() != first
    assert json.loads(out.read_text())["sets"]["a"]["files"] == 2


def test_a_fingerprint_sees_a_same_size_byte_edit_a_rename_and_an_added_file(tmp_path):
    folder = make_set(tmp_path, "a", payload=b"abcdef")
    base = fingerprint(folder)
    shard = folder / "shards" / "shard-00000.parquet"
    stat = shard.stat()
    shard.write_bytes(b"abcdeF")
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: still seen
    assert fingerprint(folder)["sha256"] != base["sha256"]
    shard.write_bytes(b"abcdef")
    assert fingerprint(folder) == base
    shard.rename(folder / "shards" / "shard-00001.parquet")
    assert fingerprint(folder)["sha256"] != base["sha256"]
    (folder / "extra").write_bytes(b"")
    assert fingerprint(folder)["files"] == 3


def test_the_detectors_selection_records_random_weights_of_registered_sets_only(tmp_path):
    root = tmp_path / "children"
    for name in ("tiny", "real", "imported"):
        make_set(root, name)
    registry = tmp_path / "generators.yaml"
    entry = {"model_id": "", "height": 8, "width": 8, "steps": 1, "guidance_scale": 1.0}
    registry.write_text(yaml.safe_dump({"tiny": {**entry, "random_weights": True}, "real": entry,
                                        "unused": entry}))
    out = tmp_path / "model.json"
    select.run(root, ["tiny", "real", "imported"], registry, out, progress=False)
    selection = read_selection(out)
    assert selection.registry == {"tiny": {"random_weights": True}, "real": {"random_weights": False},
                                  "imported": None}
    assert selection_random_weights(selection, ["real", "tiny", "imported"], where="x") == ["tiny"]
    before = out.read_bytes()
    # another entry, or a field the detector does not read, edited: the selection keeps its bytes
    registry.write_text(yaml.safe_dump({"tiny": {**entry, "random_weights": True, "steps": 9}, "real": entry,
                                        "unused": {**entry, "steps": 3}}))
    select.run(root, ["tiny", "real", "imported"], registry, out, progress=False)
    assert out.read_bytes() == before
    with pytest.raises(InputError, match=r"does not select \['other'\]"):
        selection_random_weights(selection, ["other"], where="x")


def test_the_command_unions_generators_and_fit(tmp_path):
    root = tmp_path / "children"
    make_set(root, "a")
    make_set(root, "b")
    out = tmp_path / "sel.json"
    result = CliRunner().invoke(select.app, ["--children-root", str(root), "--generators", "a", "--fit", "b",
                                             "--fit", "a", "--registry", "", "--embeddings", "", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list(json.loads(out.read_text())["sets"]) == ["a", "b"]
    assert json.loads(out.read_text())["registry"] == {} and json.loads(out.read_text())["caches"] == {}


def test_a_missing_set_or_a_fifo_in_a_set_is_named_and_nothing_is_written(tmp_path):
    root = tmp_path / "children"
    folder = make_set(root, "a")
    out = tmp_path / "sel.json"
    result = CliRunner().invoke(select.app, ["--children-root", str(root), "--generators", "gone",
                                             "--registry", "", "--embeddings", "", "--out", str(out)])
    assert result.exit_code == 2 and "gone: children set not found" in result.output
    os.mkfifo(folder / "shards" / "pipe")
    result = CliRunner().invoke(select.app, ["--children-root", str(root), "--generators", "a",
                                             "--registry", "", "--embeddings", "", "--out", str(out)])
    assert result.exit_code == 2 and "pipe: is not a regular file" in result.output
    assert not out.exists()


def test_a_selection_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "sel.json"
    path.write_text('{"registry": {}, "sets": {}}')  # no caches: an older or hand-made file
    with pytest.raises(InputError, match="expected"):
        read_selection(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="is not a selection file"):
        read_selection(path)
    with pytest.raises(InputError, match="selection not found"):
        read_selection(tmp_path / "none.json")


def test_the_detectors_selection_moves_with_its_sets_caches_only(tmp_path):
    """The detector reads model.generators' caches of data/embeddings/model, which also holds every other set's:
    its selection fingerprints those caches, so another set's new cache leaves it alone (on the last main the
    detector depended on the whole folder and reran when a set only the study reads was added)."""
    root = tmp_path / "children"
    make_set(root, "a")
    caches = tmp_path / "embeddings"
    caches.mkdir()
    (caches / "a.h5").write_bytes(b"cache of a")
    out = tmp_path / "model.json"
    select.run(root, ["a"], None, out, embeddings=caches, progress=False)
    first = out.read_bytes()
    assert read_selection(out).caches["a"]["bytes"] == 10
    (caches / "wild.h5").write_bytes(b"another set's cache")
    select.run(root, ["a"], None, out, embeddings=caches, progress=False)
    assert out.read_bytes() == first
    (caches / "a.h5").write_bytes(b"cache of A")
    select.run(root, ["a"], None, out, embeddings=caches, progress=False)
    assert out.read_bytes() != first
    (caches / "a.h5").unlink()
    with pytest.raises(InputError, match="a.h5: not found"):
        select.run(root, ["a"], None, out, embeddings=caches, progress=False)
