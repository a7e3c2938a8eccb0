"""The documentation as a reader meets it: every relative link of README.md and docs/**/*.md leads to a file (and
heading) that exists, derived copies match their source, and every command a page marks as runnable runs as
written in a copy of the repository's files (what a fresh clone holds), offline.

Markers (docs/development.md, "Documentation"): a fenced ``sh`` or ``python`` block right after
``<!-- runnable -->`` runs in the fast suite; after ``<!-- runnable after-demo -->`` it runs once the demo pipeline
has run in the copy (slow)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.imports import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
RUNNABLE = re.compile(r"<!-- runnable( after-demo)? -->\n```(sh|python)\n(.*?)```", re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_front_page_is_short_and_the_docs_exist():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    assert len(PAGES) > 10, "the per-stage reference lives in docs/"
    assert "this machine" not in (REPO / "README.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_exists(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.relative_to(REPO)}: link {target!r} leads to no file"
        assert REPO in file.parents or file == REPO, f"{page.relative_to(REPO)}: link {target!r} leaves the repository"
        if anchor:
            assert file.suffix == ".md" and anchor in anchors(file), \
                f"{page.relative_to(REPO)}: link {target!r}: no heading with that anchor in {file.name}"


def test_the_link_check_catches_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `title`: here\n\n[ok](#a-title-here) [bad](#nope) [gone](missing.md)\n"
                    "```\n[x](in-code.md)\n```\n")
    assert anchors(page) == {"a-title-here"}
    assert links(page) == ["#a-title-here", "#nope", "missing.md"]


def test_no_runnable_command_reads_outside_the_repository():
    """No parent folder and no absolute path (a user's clone has neither the maintainers' folders nor ../shared)."""
    absolute = re.compile(r"(?:^|[\s=\"'])/\w")
    for page in PAGES:
        for _, _, body in RUNNABLE.findall(page.read_text()):
            assert "../" not in body and not absolute.search(body), f"{page.relative_to(REPO)}: {body}"


def test_the_rerun_matrix_in_the_docs_is_the_tests_matrix():
    from tests.test_rerun_matrix import table

    assert table() in (REPO / "docs" / "development.md").read_text(), \
        "docs/development.md's rerun matrix differs from tests/test_rerun_matrix.py: paste `python -m " \
        "tests.test_rerun_matrix --table` there"


def test_citation_file_is_valid_cff():
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors", "license"} <= set(cff)
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    titles = {r["title"] for r in cff["references"]}
    assert any("Parents and Children" in t for t in titles) and any("Contrasting Deepfakes" in t for t in titles)
    for reference in cff["references"]:
        assert reference["type"] in ("article", "conference-paper") and reference["authors"]
        assert all({"family-names", "given-names"} <= set(a) for a in reference["authors"])
    assert (REPO / "LICENSE").read_text().startswith("MIT License") and cff["license"] == "MIT"


# ------------------------------------------------------------------------------- runnable commands
def blocks(after_demo: bool) -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for flag, language, body in RUNNABLE.findall(page.read_text()):
            if bool(flag) == after_demo:
                found.append((str(page.relative_to(REPO)), language, body))
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The repository's files (tracked, and new ones git does not ignore) in a fresh folder and git repository,
    with this interpreter's environment as its .venv and its own packages first on the import path (what
    `pip install -e .` in a clone gives)."""
    root = tmp_path_factory.mktemp("clone") / "parentage"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if name == ".venv" or name.startswith(".venv/") or not source.is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(sys.prefix)
    env = {**os.environ, "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return root, env


def run_block(clone, page: str, language: str, body: str) -> None:
    root, env = clone
    command = ["bash", "-euo", "pipefail", "-c", body] if language == "sh" else [sys.executable, "-c", body]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, \
        f"{page}: this block fails as written:\n{body}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"


def test_fast_runnable_blocks_run_in_a_fresh_copy(clone):
    found = blocks(after_demo=False)
    assert found, "the front page marks at least `parentage --help` as runnable"
    for page, language, body in found:
        run_block(clone, page, language, body)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_after_demo_blocks_run_after_the_demo_pipeline(clone):
    """The front page's path to a first scored image: the demo pipeline (what `make demo` runs after installing),
    then every block marked after-demo, in a fresh copy."""
    found = blocks(after_demo=True)
    assert any(page == "README.md" for page, _, _ in found)
    root, env = clone
    done = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for page, language, body in found:
        run_block(clone, page, language, body)
    assert (root / "scores.csv").read_text().startswith("path,score,logit,label,")
