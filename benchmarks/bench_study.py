"""Benchmark of the study stages (the layout's: distances, probe, retrieval, disentangle; with disentangle_train,
tsne and the report) on synthetic
embedding caches of COCOFake's shape: 123,287 clusters (113,287 train, 5,000 val, 5,000 test), 1 parent +
5 children each (about 740k images), 512-d, plus 5 captions per cluster.

    python benchmarks/bench_study.py                       # COCOFake size, 1 disentangle epoch
    python benchmarks/bench_study.py --scale 0.1 --epochs 2

Each stage runs as its own process (`python -m stages.<name> ...`, exactly as DVC calls it) and reports its
wall time and its peak resident memory (the child's ru_maxrss). Disentanglement is timed per epoch and
extrapolated to the paper's 25 epochs. Everything is printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's `stages`, whatever is installed
COCOFAKE = {"train": 113_287, "val": 5_000, "test": 5_000}
# runs a stage module as __main__ and reports the process's own peak memory (VmHWM: unlike ru_maxrss it
# does not inherit the benchmark's memory through fork), whatever its exit
CHILD = ("import runpy, sys\n"
         "module = sys.argv[1]; sys.argv = [module] + sys.argv[2:]\n"
         "try:\n    runpy.run_module(module, run_name='__main__')\n"
         "finally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
         "    print('MAXRSS_KB', hwm, file=sys.stderr)\n")


def run_stage(module: str, args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak MiB, output) of one stage process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, module, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stdout}\n{done.stderr}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB"))
    return wall, peak / 1024, done.stdout.strip()


def dvc_args(stage: str) -> list[str]:
    """The arguments dvc.yaml passes to the first instance of `stage`, as DVC renders it with params.yaml."""
    from tests.test_params import render

    return next(args for name, (_, args) in render(REPO).items() if name.split("@")[0] == stage)


def study_stages() -> tuple[str, ...]:
    from stages.reporting.layout import study_stages as read

    return read(REPO / "stages" / "reporting" / "layout.yaml")


def workspace_args(stage: str, root: Path, overrides: dict) -> list[str]:
    """dvc.yaml's arguments of the first instance of `stage`, on the synthetic caches under `root`: its backbone
    folder is `bench` and its set `gen`, its data/ and metrics/ paths are under `root`, params.yaml is a copy
    (under `root`) whose instances are those, and `overrides` replace options the stage has."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    backbone, generator = params["embed"]["backbones"][0], params["children"]["sets"][0]
    params["embed"]["backbones"], params["children"]["sets"] = ["bench"], ["gen"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))

    def moved(word: str) -> str:
        for old, new in ((f"/{backbone}/", "/bench/"), (f"/{generator}.", "/gen."), ("/model/", "/bench/")):
            word = word.replace(old, new)
        if word.endswith(f"/{backbone}"):
            word = word[:-len(backbone)] + "bench"
        if word == generator:
            return "gen"
        if word == "params.yaml" or word.startswith(("data/", "metrics")):
            return str(root / word)
        return word

    args = [moved(word) for word in dvc_args(stage)]
    return with_options(args, {key: value for key, value in overrides.items()
                               if f"--{key.replace('_', '-')}" in args})


def with_options(args: list[str], overrides: dict) -> list[str]:
    """`args` (``--option value`` pairs) with each option of `overrides` (snake_case; a list: repeated) given
    only its new value(s)."""
    options = {f"--{key.replace('_', '-')}": value if isinstance(value, list) else [value]
               for key, value in overrides.items()}
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    kept = [a for option, value in pairs if option not in options for a in (option, value)]
    return kept + [str(a) for option, values in options.items() for value in values for a in (option, value)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCOFake's clusters per split")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1, help="disentangle epochs timed (paper: 25)")
    parser.add_argument("--c-steps", type=int, default=7, help="probe C grid size")
    parser.add_argument("--tsne-clusters", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=None, help="where the caches go (default: a temp dir)")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run (default: all; disentangle and tsne need "
                             "disentangle_train's weights)")
    options = parser.parse_args()

    from tests.synthetic import SyntheticSpec, write_synthetic_caches

    sizes = {split: max(3, round(n * options.scale)) for split, n in COCOFAKE.items()}
    total = sum(sizes.values())
    spec = SyntheticSpec(n_clusters=total, dim=options.dim, style=0.5,
                         val_fraction=sizes["val"] / total, test_fraction=sizes["test"] / total)
    with tempfile.TemporaryDirectory(dir=options.workdir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        folder = write_synthetic_caches(root / "data" / "embeddings", "bench", spec, ("gen",))
        print(f"synthetic caches: {total} clusters ({sizes}), {total * 6} images + {total * 5} captions, "
              f"{options.dim}-d, written in {time.perf_counter() - start:.1f} s "
              f"({sum(p.stat().st_size for p in folder.iterdir()) / 2**30:.2f} GiB)")
        parents, children = folder / "parents.h5", folder / "gen.h5"
        # every option as dvc.yaml passes it to the first instance (rendered by DVC with params.yaml), its backbone
        # and set renamed to the synthetic ones and its data/ and metrics/ paths moved under the work folder: the
        # stages are the layout's study stages (stages.reporting.layout.study_stages) with what they need, so a
        # new study stage or option reaches this benchmark without an edit here
        stages = [(name, workspace_args(name, root, overrides))
                  for name, overrides in (("disentangle_train", {"epochs": options.epochs}),
                                          *((stage, {"c_steps": options.c_steps}) for stage in study_stages()),
                                          ("tsne", {"max_clusters": options.tsne_clusters}), ("report", {}))]
        print(f"{'stage':<12} {'wall s':>8} {'peak MiB':>9}")
        results = {}
        chosen = options.stages.split(",") if options.stages else [name for name, _ in stages]
        for name, args in stages:
            if name not in chosen:
                continue
            wall, peak, _ = run_stage(f"stages.{name}", args)
            results[name] = {"wall_s": wall, "peak_mib": peak}
            print(f"{name:<12} {wall:8.1f} {peak:9.0f}", flush=True)
        print(f"total wall: {sum(r['wall_s'] for r in results.values()):.1f} s (disentangle: {options.epochs} "
              "epoch(s), its S probe and projections)")
        epoch = None
        if "disentangle_train" in chosen:
            epoch = time_one_epoch(parents, children)
            print(f"disentangle training alone: {epoch:.1f} s per epoch of {sizes['train']} clusters -> "
                  f"{25 * epoch / 60:.1f} min for the paper's 25 epochs")
        print(json.dumps({"sizes": sizes, "dim": options.dim, "epochs": options.epochs, "stages": results,
                          "disentangle_epoch_s": epoch}))


def time_one_epoch(parents: Path, children: Path) -> float:
    """Seconds of one training epoch (batch 1024, in this process, data already in memory)."""
    from stages.study.clusters import load_clusters
    from stages.study.disentangle import DisentangleConfig, train_projections

    train = load_clusters(parents, children).select("train").embeddings
    start = time.perf_counter()
    config = DisentangleConfig(epochs=1, batch_size=1024, lr=1e-3, weight_decay=0.01, temperature=0.07, seed=0,
                               device="cpu")
    train_projections(train, config, progress=False)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
