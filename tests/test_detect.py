import csv
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stages import detect
from stages.shipped import rows
from stages.shipped.wild import expand_inputs
from tests.test_detector_artifact import random_detector
from tests.tiny_backbone import TinyBackbone
from tests.wild_files import write_bad, write_png_bomb, write_wild_folder


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild")
    good, bad = write_wild_folder(root)
    return root, good, bad


def rows_for(arguments, **kwargs) -> list[rows.Row]:
    inputs = expand_inputs([str(a) for a in arguments])
    return list(rows.score_inputs(random_detector(), TinyBackbone(), inputs, batch_size=4, progress=False,
                                    **kwargs))


def test_folder_recurses_and_every_file_gets_one_row(wild):
    root, good, bad = wild
    rows = rows_for([root], workers=2)
    by_path = {row.path: row for row in rows}
    bad = {name: path for name, path in bad.items() if name != "notes.txt"}  # not an image: skipped in folders
    assert len(rows) == len(by_path) == len(good) + len(bad)
    for path in good.values():
        row = by_path[str(path)]
        assert row.error is None and 0 <= row.score <= 1 and row.label in ("real", "fake"), row
        assert row.label == ("fake" if row.score >= row.threshold else "real")
        assert row.detector == random_detector().id
    for path in bad.values():
        row = by_path[str(path)]
        assert row.score is None and row.label is None and row.error, row
    assert "truncated" in by_path[str(bad["truncated.jpg"])].error
    assert by_path[str(bad["empty.png"])].error == "empty file"
    assert "over the limit" in by_path[str(bad["bomb.png"])].error
    assert "decompression bomb" in by_path[str(bad["huge_header.png"])].error
    assert "not a readable image" in rows_for([root / "nested" / "deeper" / "notes.txt"])[0].error


def test_scores_do_not_depend_on_batching_or_workers(wild):
    root, _, _ = wild
    one = [(r.path, r.score) for r in rows_for([root], workers=0)]
    many = rows_for([root], workers=2)
    assert [r.path for r in many] == [p for p, _ in one]
    np.testing.assert_allclose([r.score or -1 for r in many], [s or -1 for _, s in one], rtol=1e-5)


def test_expand_files_globs_missing_and_duplicates(wild, tmp_path):
    root, good, _ = wild
    (tmp_path / "empty_folder").mkdir()
    (root / ".hidden").mkdir(exist_ok=True)
    (root / ".hidden" / "x.jpg").write_bytes(b"")
    inputs = expand_inputs([str(good["photo.jpg"]), str(root / "**" / "*.jpg"), str(tmp_path / "nope.png"),
                            str(tmp_path / "*.nomatch"), str(tmp_path / "empty_folder")])
    paths = [i.path for i in inputs]
    jpgs = sorted(str(p) for p in root.rglob("*.jpg") if ".hidden" not in p.parts)
    assert paths[0] == str(good["photo.jpg"])
    assert sorted(paths[1:len(jpgs)]) == sorted(set(jpgs) - {str(good["photo.jpg"])}), "no duplicate rows"
    assert [i.problem for i in inputs[-3:]] == ["file not found", "no file matches this pattern",
                                                "folder holds no files"]
    assert all(".hidden" not in p for p in paths)


@pytest.mark.parametrize("fmt", list(detect.OutputFormat))
def test_output_formats_parse(wild, fmt):
    root, good, bad = wild
    stream = io.StringIO()
    tally = detect.write_rows(iter(rows_for([root])), stream, fmt)
    assert (tally.scored, tally.failed) == (len(good), len(bad) - 1)  # notes.txt is skipped
    assert sum(tally.labels.values()) == tally.scored and set(tally.labels) == {"real", "fake"}
    text = stream.getvalue()
    if fmt is detect.OutputFormat.csv:
        records = list(csv.DictReader(io.StringIO(text)))
        assert list(records[0]) == list(detect.COLUMNS)
        assert all((r["score"] == "") == bool(r["error"]) == (r["logit"] == "") for r in records)
        # the label is the logit against the detector's threshold, the score its sigmoid
        threshold = random_detector().threshold
        assert all(r["label"] == ("fake" if float(r["logit"]) >= threshold else "real") for r in records if r["logit"])
        assert all(float(r["threshold"]) == random_detector().score_threshold for r in records)
    else:
        records = [json.loads(line) for line in text.splitlines()]
        assert all(list(r) == list(detect.COLUMNS) for r in records)
        assert all((r["score"] is None) == (r["error"] is not None) for r in records)
    assert len(records) == len(good) + len(bad) - 1


def test_bomb_is_refused_without_allocating_its_pixels(tmp_path, repo_root):
    """Decoding the 12000x12000 bomb to RGB takes over 400 MB; under a 300 MB address-space cap on top of
    what the interpreter already maps, reading it must still fail cleanly with our error."""
    bomb = write_png_bomb(tmp_path / "bomb.png", 12_000, 12_000)
    code = textwrap.dedent(f"""
        import resource
        from stages.contracts.errors import InputError
        from stages.imaging.load import load_rgb
        from tests.wild_files import photo
        photo(0)  # numpy and PIL are imported and mapped before the cap
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))
        try:
            load_rgb({str(bomb)!r})
        except InputError as error:
            print("refused:", error.problem)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: declares 12000x12000" in done.stdout


def test_every_bad_file_alone_fails(tmp_path):
    bad = write_bad(tmp_path / "bad")
    rows = rows_for(sorted(bad.values()))
    assert len(rows) == len(bad) and all(r.error for r in rows)


def run_isolated(code: str, repo_root, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with a time limit, so a hang fails the test instead of the suite."""
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=repo_root, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for more than {timeout} s")


def test_a_fifo_gets_an_error_row_and_is_skipped_inside_folders(tmp_path, repo_root):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    from tests.images import photo

    photo(0, (32, 32)).save(folder / "ok.png")
    done = run_isolated(f"""
        from stages.contracts.errors import Skips
        from tests.test_detect import rows_for
        from stages.shipped.wild import expand_inputs
        for row in rows_for([{str(folder / "pipe.jpg")!r}, {str(folder)!r}], workers=0):
            print("row", row.path, row.error)
        skips = Skips(skip=True)
        expand_inputs([{str(folder)!r}], skips)
        print("skipped", dict(skips.counts))
    """, repo_root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"row {folder / 'pipe.jpg'} not a regular file (a FIFO); not read"
    assert lines[1] == f"row {folder / 'ok.png'} None"
    assert lines[2:] == ["skipped {'special_file': 1}"]


def test_globs_and_walks_end_on_looping_links(tmp_path, repo_root):
    from tests.images import photo

    loops = tmp_path / "loops"
    (loops / "a").mkdir(parents=True)
    (loops / "b").mkdir()
    photo(0, (16, 16)).save(loops / "a" / "x.png")
    photo(1, (16, 16)).save(loops / "b" / "y.jpg")
    for name in ("a", "b"):  # two links up: the number of paths through them doubles at every level
        (loops / name / "up").symlink_to(loops)
    (tmp_path / "self").symlink_to(tmp_path / "self")  # a link to itself
    done = run_isolated(f"""
        from stages.shipped.wild import expand_inputs
        for pattern in [{str(loops / "**" / "*")!r}, {str(loops)!r}, {str(tmp_path / "self")!r}]:
            print(sorted((i.path, i.problem) for i in expand_inputs([pattern])), flush=True)
    """, repo_root, timeout=30)
    assert done.returncode == 0, done.stderr
    by_glob, by_walk, loop = (eval(line) for line in done.stdout.splitlines())  # noqa: S307 - our own output
    assert len(by_glob) == len(by_walk) == 2, "each image once"
    assert {os.path.realpath(p) for p, _ in by_glob} == {str(loops / "a" / "x.png"), str(loops / "b" / "y.jpg")}
    assert loop == [(str(tmp_path / "self"), "not a regular file (a link that loops or points nowhere); not read")]


def test_walks_skip_and_count_what_is_not_an_image(wild, tmp_path):
    from stages.contracts.errors import Skips

    root, good, bad = wild
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "readme.md").write_text("hi")
    skips = Skips(skip=True)
    inputs = expand_inputs([str(tmp_path), str(root / "nested" / "deeper" / "*"), str(bad["notes.txt"])], skips)
    assert skips.counts == {"broken_link": 1, "not_an_image": 2}  # readme.md, notes.txt by the glob
    assert inputs[-1].path == str(bad["notes.txt"]) and inputs[-1].problem is None, "named files keep their row"


@pytest.mark.parametrize("fmt", list(detect.OutputFormat))
def test_names_that_are_not_utf8_are_written(tmp_path, fmt):
    from tests.images import photo

    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    photo(0, (16, 16)).save(tmp_path / name)
    stream = io.StringIO()
    tally = detect.write_rows(iter(rows_for([tmp_path])), stream, fmt)
    assert (tally.scored, tally.failed) == (1, 0)
    text = stream.getvalue()
    text.encode("utf-8")  # the output is valid UTF-8
    path = next(csv.DictReader(io.StringIO(text)))["path"] if fmt is detect.OutputFormat.csv \
        else json.loads(text)["path"]
    assert path == str(tmp_path / "caf\\xe9.png")


def test_probability_never_underflows_to_zero_and_the_logit_is_exact():
    assert rows.probability(-800.0) > 0.0 and rows.probability(-800.0) < rows.probability(-700.0)
    assert rows.probability(0.0) == 0.5 and rows.probability(800.0) == 1.0  # float64 saturates: read the logit
    row = detect.Row("a.png", rows.probability(-1234.5), -1234.5, "real", 0.5, "d", None, None)
    stream = io.StringIO()
    detect.write_rows([row], stream, detect.OutputFormat.csv)
    written = next(csv.DictReader(io.StringIO(stream.getvalue())))
    assert float(written["logit"]) == -1234.5 and float(written["score"]) > 0.0


def test_summary_counts_each_label(wild, tmp_path, monkeypatch):
    root, good, bad = wild
    detector_folder = tmp_path / "det"
    from stages.shipped.artifact import save_detector

    save_detector(random_detector(), detector_folder)
    from stages.shipped import wild

    monkeypatch.setattr(wild, "load_checked", lambda *a: (random_detector(), TinyBackbone()))
    out, summary = tmp_path / "rows.csv", tmp_path / "summary.json"
    tally = detect.detect([str(root)], detector_folder, out, detect.OutputFormat.csv, registry=tmp_path / "r.yaml",
                          workers=0, progress=False, summary=summary)
    rows = list(csv.DictReader(out.open()))
    written = json.loads(summary.read_text())
    for name in ("real", "fake"):
        assert written["labels"][name] == tally.labels[name] == sum(r["label"] == name for r in rows)
    assert written["scored"] == len(good) and written["failed"] == len(bad) - 1
    assert "scored (" in tally.line() and f"{tally.labels['fake']} fake" in tally.line()
