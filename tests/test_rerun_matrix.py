"""The rerun matrix (issue 21 item 5, STYLE 22): what each kind of change costs, as the stages whose command runs.

One temporary git + DVC repository of the offline demo is built and reproduced once (the baseline); every change
below starts from that baseline, is applied as a researcher would (an edit of params.yaml or of a registry, then
`dvc repro`; or `dvc exp run`), and the stages DVC reports as "Running stage '<name>':" must be exactly the
table's. Skipped stages ("didn't change") and run-cache restores ("is cached") do not count. The run cache is
emptied before each change, so each is measured as made for the first time: DVC restores from it only stages
whose outputs are cached, metrics or plots (check and the gates, for example; never one with a persist output or
a `cache: false` output that is not a metric or plot), and an earlier change would otherwise hide their runs.

EXPECTED is the matrix of the new design (docs/development.md, "The rerun matrix", copies it: tests/test_docs.py
checks the copy); BEFORE is what main ran at 52a3a9d, measured with this file's helper mode. To measure the matrix
of the current checkout:

    python -m tests.test_rerun_matrix            # every change: the stages that ran, against EXPECTED
    python -m tests.test_rerun_matrix probe_grid exp_temp   # some of them
    python -m tests.test_rerun_matrix --table    # EXPECTED as the Markdown table in docs/development.md
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The demo's names ({b}, {s}, ...) in the table below, and what the changes add ({new}, {wild}, {bench}).
NAMES = {"b": "openclip_vitb32_random",  # embed.backbones
         "s": "tiny_random",  # children.sets
         "new": "tiny_clip_random",  # the backbone change 6 adds (registered in the copy at the baseline)
         "wild": "wild",  # the imported children set change 5 adds
         "bench": "demo_clean"}  # the benchmark set change 10 adds

# ---- The rerun matrix of the new design: change -> the stages whose command runs. One place to adjust.
STUDY_WILD = ("distances@{b}-{wild}", "distances_model@model-{wild}", "probe@{b}-{wild}-cross0",
              "probe_model@model-{wild}-cross0", "retrieval@{b}-{wild}", "retrieval_model@model-{wild}",
              "disentangle_train@{b}-{wild}", "disentangle_train_model@model-{wild}", "disentangle@{b}-{wild}",
              "disentangle_model@model-{wild}")
PROBE = ("probe@{b}-{s}-cross0", "probe_model@model-{s}-cross0", "disentangle@{b}-{s}", "disentangle_model@model-{s}",
         "report")
EXPECTED: dict[str, tuple[str, ...]] = {
    "probe_grid": PROBE,  # the S probe rescores; the projections are not trained again
    "disentangle_value": ("disentangle_train@{b}-{s}", "disentangle_train_model@model-{s}", "disentangle@{b}-{s}",
                          "disentangle_model@model-{s}", "tsne@{s}", "report"),
    # the gates read the registry and keep their bytes; the report names each generator's provenance
    "generator_entry": ("check@setting0", "select@code_train", "select@code_eval", "select@model", "report"),
    "backbone_entry": ("check@setting0", "report"),
    "children_set": ("check@setting0", "import_children@{wild}", "embed_children@{b}-{wild}",
                     "embed_model_children@{wild}", *STUDY_WILD,
                     "probe@{b}-{s}-cross0", "probe_model@model-{s}-cross0",  # the cross test reads every set
                     "tsne@{wild}", "select@code_train", "select@code_eval", "select@model",  # same output bytes
                     "report"),
    "backbone_added": ("check@setting0", "embed_parents@{new}", "embed_children@{new}-{s}", "distances@{new}-{s}",
                       "probe@{new}-{s}-cross0", "retrieval@{new}-{s}", "disentangle_train@{new}-{s}",
                       "disentangle@{new}-{s}", "report"),
    "backbone_removed": ("check@setting0", "report"),
    # setting.json records the epochs (the benchmark fits CoDE's heads by it); on the demo the best epoch is the
    # first whatever the count, so model.pt keeps its bytes and code_eval is skipped
    "code_epochs": ("code_train", "benchmark@demo", "report"),
    "model_head": ("detector", "benchmark@demo", "report"),  # a placeholder: only logreg exists
    "layout_column": ("check@setting0", "report"),  # check reads the layout's study stages
    "benchmark_set": ("check@setting0", "benchmark@{bench}", "report"),
    "exp_temp": PROBE,
    "exp_queue": PROBE,
}
CHANGES = {
    "probe_grid": "a probe grid value: `probe.c_steps=5`",
    "disentangle_value": "a disentangle value: `disentangle.temperature=0.2`",
    "generator_entry": "an entry of `stages/generation/generators.yaml` the demo does not use (sd14's guidance)",
    "backbone_entry": "an entry of `stages/embedding/backbones.yaml` the demo does not use (resnet50_imagenet's)",
    "children_set": "a second children set only the study reads: imported `wild` in `children.sets`",
    "backbone_added": "a backbone added to `embed.backbones`",
    "backbone_removed": "... and removed again",
    "code_epochs": "`code_train.epochs=1`",
    "model_head": "`model.head` (expected, not measured: `logreg` is its one value)",
    "layout_column": "a column in `stages/reporting/layout.yaml`",
    "benchmark_set": "a second entry in `benchmark.sets`",
    "exp_temp": "`dvc exp run --temp -S probe.c_steps=5`",
    "exp_queue": "the same change queued: `dvc exp run --queue -S probe.c_steps=5`, `dvc exp run --run-all`",
}

# Measured on main at 52a3a9d (before issue 21) with the helper mode: the stages that ran. Not asserted; the helper
# prints it beside what runs now (the note: change, stages that ran before, stages that run now).
STUDY_WILD_BEFORE = tuple(name for name in STUDY_WILD if not name.startswith("disentangle_train"))
PROBE_BEFORE = ("probe@{b}-{s}-cross0", "probe_model@model-{s}-cross0", "disentangle@{b}-{s}",
                "disentangle_model@model-{s}", "report")
BEFORE: dict[str, tuple[str, ...]] = {
    "probe_grid": PROBE_BEFORE,
    "disentangle_value": ("disentangle@{b}-{s}", "disentangle_model@model-{s}", "tsne@{s}", "report"),
    "generator_entry": ("check@setting0", "detector", "report"),  # the detector: the same bytes again
    "backbone_entry": ("check@setting0", "report"),
    "children_set": ("check@setting0", "import_children@{wild}", "embed_children@{b}-{wild}",
                     "embed_model_children@{wild}", *STUDY_WILD_BEFORE, "probe@{b}-{s}-cross0",
                     "probe_model@model-{s}-cross0", "tsne@{wild}", "code_train", "code_eval", "detector",
                     "benchmark_demo@setting0", "benchmark@demo", "report"),
    "backbone_added": ("check@setting0", "embed_parents@{new}", "embed_children@{new}-{s}", "distances@{new}-{s}",
                       "probe@{new}-{s}-cross0", "retrieval@{new}-{s}", "disentangle@{new}-{s}", "report"),
    "backbone_removed": ("check@setting0", "report"),  # and metrics/report.md still names it 8 times
    "code_epochs": ("code_train", "benchmark@demo", "report"),  # model.pt the same bytes: code_eval skipped
    "layout_column": ("report",),
    "benchmark_set": ("benchmark@{bench}", "report"),
    "exp_temp": (*PROBE_BEFORE, "code_train"),  # its checkpoints (persist, cache: false) are not in the copy
    "exp_queue": (*PROBE_BEFORE, "code_train"),
}


def expected(change: str, matrix: dict[str, tuple[str, ...]] = EXPECTED) -> set[str]:
    return {name.format(**NAMES) for name in matrix.get(change, ())}


def table() -> str:
    """EXPECTED as a Markdown table (the rerun matrix of docs/development.md)."""
    rows = ["| change | stages that run |", "|---|---|"]
    rows += [f"| {CHANGES[c]} | {', '.join(f'`{n.format(**NAMES)}`' for n in EXPECTED[c])} |" for c in EXPECTED]
    return "\n".join(rows)


# ---- The demo repository and its baseline

# a tiny random-weight open_clip model: seconds to embed the demo on a CPU (tests/test_model_backbone_dvc.py's)
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                             "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
COPIED = ("stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore", "detectors")
RUNNING = re.compile(r"^Running stage '([^']+)':", re.M)
CACHED = re.compile(r"^Stage '([^']+)' is cached", re.M)
QUEUED = "queued_probe"


@dataclass
class Ran:
    """What one step ran: the stages whose command ran, those restored from the run cache, its seconds."""

    ran: set[str]
    cached: set[str] = field(default_factory=set)
    seconds: float = 0.0


class Demo:
    """The demo in a throwaway git + DVC repository, reproduced and committed once; reset() brings it back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                    "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                    "TQDM_DISABLE": "1"}
        self.snapshot = root.parent / "untracked-outputs"
        self.kept: list[Path] = []  # outputs below the root that neither git nor DVC's cache restores
        self.base = ""
        self.dirty = False

    def run(self, *args: str) -> str:
        done = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    def timed(self, *args: str) -> Ran:
        start = time.monotonic()
        out = self.run(*args)
        return Ran(set(RUNNING.findall(out)), set(CACHED.findall(out)), time.monotonic() - start)

    def build(self) -> float:
        """Copy the pipeline, register the tiny backbone, `dvc repro` and commit; the seconds the repro took."""
        self.root.mkdir(parents=True)
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, self.root / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.exists():
                (self.root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, self.root / name)
        # the hand-written ignores (data/code/.gitignore keeps CoDE's checkpoints out of git) beside DVC's own
        for source in [*REPO.glob("data/**/.gitignore"), *REPO.glob("models/**/.gitignore")]:
            (self.root / source.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, self.root / source.relative_to(REPO))
        import yaml

        registry = self.root / "stages" / "embedding" / "backbones.yaml"
        entry = {NAMES["new"]: {"library": "open_clip", "architecture": "tiny", "weights": "random", "seed": 0,
                                "model_cfg": TINY_CLIP}}
        registry.write_text(registry.read_text() + "\n" + yaml.safe_dump(entry, sort_keys=False))
        self.run("git", "init", "-q")
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", "the demo")
        start = time.monotonic()
        self.run("dvc", "repro")
        seconds = time.monotonic() - start
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", "the demo, reproduced")
        self.base = self.run("git", "rev-parse", "HEAD").strip()
        from dvc.repo import Repo

        with Repo(str(self.root)) as repo:
            uncached = sorted({Path(out.fs_path).relative_to(self.root) for out in repo.index.outs
                               if not out.use_cache})
        for relative in uncached:
            ignored = subprocess.run(["git", "check-ignore", "-q", str(relative)], cwd=self.root).returncode == 0
            if ignored and (self.root / relative).exists():
                self.kept.append(relative)
                (self.snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                _copy(self.root / relative, self.snapshot / relative)
        self.dirty = True
        self.reset()
        return seconds

    def reset(self) -> None:
        """Back to the baseline (git's files, DVC's outputs, the snapshot's), checked; and an empty run cache."""
        if self.dirty:
            self.run("git", "reset", "-q", "--hard", self.base)
            self.run("git", "clean", "-qfd")
            self.run("dvc", "checkout", "--force")
            for relative in self.kept:
                _copy(self.snapshot / relative, self.root / relative)
            status = self.run("dvc", "status")
            assert "Data and pipelines are up to date." in status, f"the baseline did not come back:\n{status}"
            assert self.run("git", "status", "--porcelain") == "", "the baseline's git tree did not come back"
            self.dirty = False
        shutil.rmtree(self.root / ".dvc" / "cache" / "runs", ignore_errors=True)

    def edit(self, path: str, change: Callable[[dict], None]) -> None:
        """Edit a YAML file of the repository in place, its comments and layout kept (ruamel, as DVC does)."""
        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.preserve_quotes = True
        yaml.width = 4096
        data = yaml.load(self.root / path)
        change(data)
        yaml.dump(data, self.root / path)
        self.dirty = True

    def repro(self) -> Ran:
        self.dirty = True
        return self.timed("dvc", "repro")


def _copy(source: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


# ---- The changes: each applies one row of the table to the baseline (or to the step before) and runs it

def _params(demo: Demo, change: Callable[[dict], None]) -> Ran:
    demo.edit("params.yaml", change)
    return demo.repro()


def probe_grid(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["probe"].__setitem__("c_steps", 5))


def disentangle_value(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["disentangle"].__setitem__("temperature", 0.2))


def generator_entry(demo: Demo) -> Ran:
    demo.edit("stages/generation/generators.yaml", lambda g: g["sd14"].__setitem__("guidance_scale", 8.0))
    return demo.repro()


def backbone_entry(demo: Demo) -> Ran:
    demo.edit("stages/embedding/backbones.yaml", lambda b: b["resnet50_imagenet"].__setitem__("channels_last", False))
    return demo.repro()


def write_wild_set(demo: Demo) -> str:
    """A published set as the manifest layout reads it: two small PIL children of each demo parent (a reduced
    copy and its mirror image), named by the parent's source id; the manifest's path, relative to the root."""
    import pandas as pd
    from PIL import Image, ImageOps

    folder = demo.root / "imports" / NAMES["wild"]
    folder.mkdir(parents=True)
    rows = []
    for parent in pd.read_parquet(demo.root / "data" / "clusters.parquet").itertuples():
        with Image.open(demo.root / parent.image_path) as image:
            small = image.convert("RGB").resize((48, 48))
        for index, child in enumerate((small, ImageOps.mirror(small))):
            name = f"{parent.source_id}_{index}.png"
            child.save(folder / name)
            rows.append({"path": name, "parent": parent.source_id, "caption_index": index})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return f"imports/{NAMES['wild']}/manifest.csv"


def children_set(demo: Demo) -> Ran:
    manifest = write_wild_set(demo)

    def change(p: dict) -> None:
        p["import_children"]["sets"][NAMES["wild"]] = {"layout": "manifest", "root": manifest, "generator": ""}
        p["children"]["sets"].append(NAMES["wild"])  # code_train.data, code_eval.data, model.generators unchanged

    return _params(demo, change)


def backbone_added(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["embed"]["backbones"].append(NAMES["new"]))


def backbone_removed(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["embed"]["backbones"].remove(NAMES["new"]))


def code_epochs(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["code_train"].__setitem__("epochs", 1))


def model_head(demo: Demo) -> Ran:
    return _params(demo, lambda p: p["model"].__setitem__("head", "mlp"))  # a second head, once one exists


def layout_column(demo: Demo) -> Ran:
    layout = demo.root / "stages" / "reporting" / "layout.yaml"
    anchor = "      - {key: test.chance, label: test Chance}\n"
    text = layout.read_text()
    assert text.count(anchor) == 1, "Table 1's last column moved: update this change"
    layout.write_text(text.replace(anchor, anchor + "      - {key: test.clusters, label: test Clusters}\n"))
    demo.dirty = True
    return demo.repro()


def benchmark_set(demo: Demo) -> Ran:
    # the demo's own set again, clean only (other transforms): a second instance over the same root
    entry = {"layout": "real_fake", "root": "data/benchmark_demo", "manifest": "", "split": "", "duplicates": "error",
             "transforms": []}
    return _params(demo, lambda p: p["benchmark"]["sets"].__setitem__(NAMES["bench"], entry))


def exp_temp(demo: Demo) -> Ran:
    ran = demo.timed("dvc", "exp", "run", "--temp", "-S", "probe.c_steps=5")
    assert demo.run("git", "status", "--porcelain") == "", "exp run --temp changed the workspace"
    return ran


def exp_queue(demo: Demo) -> Ran:
    """Queued, then run by `dvc exp run --run-all` (it starts a worker and returns when the queue is done); the
    stages that ran come from `dvc queue logs`. No worker is left behind: left alone, the idle worker lingers
    about 15 s, so `dvc queue stop` ends it at once and the test waits until the queue says so."""
    start = time.monotonic()
    demo.run("dvc", "exp", "run", "--queue", "-S", "probe.c_steps=5", "-n", QUEUED)
    demo.run("dvc", "exp", "run", "--run-all")
    demo.run("dvc", "queue", "stop")
    deadline = time.monotonic() + 60
    while "Worker status: 0 active, 0 idle" not in (status := demo.run("dvc", "queue", "status")):
        if time.monotonic() > deadline:
            demo.run("dvc", "queue", "stop", "--kill")
            raise AssertionError(f"the queue's worker did not stop:\n{status}")
        time.sleep(1)
    assert re.search(rf"\b{QUEUED}\b.*\bSuccess\b", status), status
    assert demo.run("git", "status", "--porcelain") == "", "the queued run changed the workspace"
    logs = demo.run("dvc", "queue", "logs", QUEUED)
    return Ran(set(RUNNING.findall(logs)), set(CACHED.findall(logs)), time.monotonic() - start)


STEPS: dict[str, Callable[[Demo], Ran]] = {
    "probe_grid": probe_grid, "disentangle_value": disentangle_value, "generator_entry": generator_entry,
    "backbone_entry": backbone_entry, "children_set": children_set, "backbone_added": backbone_added,
    "backbone_removed": backbone_removed, "code_epochs": code_epochs, "model_head": model_head,
    "layout_column": layout_column, "benchmark_set": benchmark_set, "exp_temp": exp_temp, "exp_queue": exp_queue}


def report_has_no_removed_backbone(demo: Demo) -> str:
    mentions = (demo.root / "metrics" / "report.md").read_text().count(NAMES["new"])
    return f"metrics/report.md still mentions the removed {NAMES['new']} {mentions} times" if mentions else ""


AFTER: dict[str, Callable[[Demo], str]] = {"backbone_removed": report_has_no_removed_backbone}

# A case: steps from the baseline, each after the one before.
CASES: dict[str, tuple[str, ...]] = {
    "probe_grid": ("probe_grid",), "disentangle_value": ("disentangle_value",),
    "generator_entry": ("generator_entry",), "backbone_entry": ("backbone_entry",),
    "children_set": ("children_set",), "backbone_added_removed": ("backbone_added", "backbone_removed"),
    "code_epochs": ("code_epochs",), "model_head": ("model_head",), "layout_column": ("layout_column",),
    "benchmark_set": ("benchmark_set",), "exp_temp": ("exp_temp",), "exp_queue": ("exp_queue",)}
# model.head has one value (logreg): there is no other head to change it to, so its row (what reads `model`:
# the detector, then what reads the detector) cannot be measured until a second head exists
PLACEHOLDERS = {"model_head": "model.head has one value (logreg): no second head to measure the change with"}


def play(demo: Demo, case: str) -> list[tuple[str, Ran, str]]:
    """Reset to the baseline and play one case: (step, what ran, what else went wrong) per step."""
    demo.reset()
    played = []
    for step in CASES[case]:
        ran = STEPS[step](demo)
        played.append((step, ran, AFTER[step](demo) if step in AFTER else ""))
    return played


def mismatch(step: str, ran: Ran) -> str:
    want = expected(step)
    if ran.ran == want:
        return ""
    return (f"{step}: ran {sorted(ran.ran)}\n  not expected: {sorted(ran.ran - want)}\n"
            f"  expected, did not run: {sorted(want - ran.ran)}" + (f"\n  run cache: {sorted(ran.cached)}"
                                                                    if ran.cached else ""))


# ---- The test

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    demo = Demo(tmp_path_factory.mktemp("rerun_matrix") / "repo")
    demo.build()
    return demo


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(case, id=case, marks=[pytest.mark.skip(reason=PLACEHOLDERS[case])]
                                               if case in PLACEHOLDERS else []) for case in CASES])
def test_a_change_runs_exactly_the_stages_of_the_matrix(demo, case):
    problems = []
    for step, ran, after in play(demo, case):
        problems += [text for text in (mismatch(step, ran), after) if text]
    assert not problems, "\n".join(problems)


# ---- The helper mode: measure the matrix of this checkout

def main(argv: list[str]) -> int:
    import tempfile

    if "--table" in argv:
        print(table())
        return 0
    cases = [a for a in argv if not a.startswith("-")] or [c for c in CASES if c not in PLACEHOLDERS]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown change(s) {unknown}; known: {sorted(CASES)}")
    with tempfile.TemporaryDirectory(prefix="rerun_matrix_") as folder:
        demo = Demo(Path(folder) / "repo")
        print(f"baseline: dvc repro in {demo.build():.0f} s", flush=True)
        rows = ["| change | stages that ran | run cache | s | against EXPECTED | against BEFORE |", "|---" * 6 + "|"]
        for case in cases:
            for step, ran, after in play(demo, case):
                verdicts = ["same" if ran.ran == expected(step, matrix) else
                            f"extra {sorted(ran.ran - expected(step, matrix))}, "
                            f"missing {sorted(expected(step, matrix) - ran.ran)}" for matrix in (EXPECTED, BEFORE)]
                rows.append(f"| {step} | {', '.join(sorted(ran.ran))} | {', '.join(sorted(ran.cached))} | "
                            f"{ran.seconds:.0f} | {verdicts[0]}{'; ' + after if after else ''} | {verdicts[1]} |")
                print(rows[-1], flush=True)
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
