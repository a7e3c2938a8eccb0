"""detect: score image files, folders (recursively) and globs with a trained detector; write CSV or JSON lines.

    parentage detect photos/ 'downloads/**/*.png' --detector data/detector --out scores.csv

One row per file: path, score (probability that the image is generated), logit (the head's decision value, exact:
what the benchmark ranks and thresholds, so AUCs recomputed from it are the benchmark's), label (real / fake: the
logit at least the detector's threshold), threshold (shown as a probability, so fake is score >= threshold),
detector (its id), caveat (empty, or what the detector was trained on that makes its scores meaningless for
real generators: random-weight generators or backbone; said once on stderr too), error. A file that cannot be
read (missing, empty, truncated, not an image, a decompression bomb, a FIFO or other special file named
explicitly) gets a row with its error and empty score, and the run goes on. Inside folders and glob matches,
files that are not images (by their suffix), special files and broken links are skipped and counted (on stderr
and in the summary line); links that loop are followed only once. File names that are not UTF-8 are written
with backslash escapes. The probability saturates in float64 (1.0 above a logit of about 37) but never
underflows to 0.0 for a finite logit (it is at least the smallest positive double): rank and compare the logit.
The run ends with the count of images called real and fake (stderr, and the --summary JSON when given).
The scoring is the Python API's (parentage.Detector), so a notebook and this command agree.
Exit code: 0 when at least one file was scored; 1 when every input failed; 2 for a usage error (no
detector, no paths, a detector whose backbone is not the one the registry gives). Runs offline.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

import typer

from stages.contracts.device import device_option
from stages.contracts.errors import InputError, Skips, user_errors
from stages.contracts.hub import stay_offline
from stages.contracts.runtime import Command, parallel_option
from stages.imaging.load import MAX_PIXELS, JpegDecode
from stages.shipped.rows import LABEL_NAMES, Row

app = Command()

COLUMNS = ("path", "score", "logit", "label", "threshold", "detector", "caveat", "error")
# the registry shipped inside the package, so detect works from any folder
REGISTRY = Path(__file__).parent / "embedding" / "backbones.yaml"
# the pipeline's detector in the checkout the package runs from (an editable install), whatever the cwd
DETECTOR = Path(__file__).resolve().parents[1] / "data" / "detector"


class OutputFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


@dataclass
class Tally:
    """What a run wrote: rows scored and failed, and the scored rows per label (real, fake)."""

    scored: int = 0
    failed: int = 0
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABEL_NAMES, 0))

    def line(self) -> str:
        return f"{self.scored} scored ({', '.join(f'{n} {name}' for name, n in self.labels.items())}), " \
               f"{self.failed} failed"


def write_rows(rows: Iterable[Row], stream: IO[str], fmt: OutputFormat) -> Tally:
    """Write rows as they come (CSV with a header, or one JSON object a line); return what was written. The
    logit is written at full precision (Python's shortest round-trip repr) in both formats."""
    tally = Tally()
    writer = csv.DictWriter(stream, fieldnames=COLUMNS) if fmt is OutputFormat.csv else None
    if writer:
        writer.writeheader()
    for row in rows:
        record = {key: printable(value) if isinstance(value, str) else value for key, value in asdict(row).items()}
        if writer:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        else:
            stream.write(json.dumps(record) + "\n")
        stream.flush()
        tally.failed += row.error is not None
        tally.scored += row.error is None
        if row.label is not None:
            tally.labels[row.label] += 1
    return tally


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a file name that are not UTF-8 (kept by Python as lone surrogates)
    are written as backslash escapes, ``caf\\xe9.jpg``, so every name reaches the output and its row is kept."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextmanager
def output(out: Path, inputs: Sequence[Path | str] = ()):
    """stdout for ``-``, else a temporary file renamed onto `out` when every row is written. `out` is none of
    `inputs` (the files scored, the detector folder, the registry) and lies in none of their folders."""
    if str(out) == "-":
        yield sys.stdout
        return
    from stages.contracts.io import atomic_path

    with atomic_path(out, kind="file", inputs=inputs) as tmp, tmp.open("w", newline="") as stream:
        yield stream


def detect(paths: Sequence[str], detector_path: Path, out: Path, fmt: OutputFormat, *, registry: Path,
           batch_size: int = 32, workers: int = 2, device: str = "cpu", max_pixels: int = MAX_PIXELS,
           progress: bool = True, skips: Skips | None = None, jpeg_decode: JpegDecode | None = None,
           summary: Path | None = None) -> Tally:
    """Score every input and write the rows; return what was written. Files left out of folders and globs
    (not images, special files, broken links) are counted in `skips`. With `summary`, the counts (scored and
    failed rows, scored rows per label, skipped files by reason) are also written there as JSON."""
    from stages.shipped.wild import expand_inputs

    if not paths:
        raise InputError("PATHS", "no image paths given; pass files, folders or globs")
    inputs = expand_inputs(paths, skips)
    if summary is not None and str(out) != "-" and Path(summary).absolute() == Path(out).absolute():
        raise InputError("--summary", f"{summary} is also --out; give it another name")
    # the output is checked (never an input, the detector's folder, a special file) before the detector loads
    guarded = [*(i.path for i in inputs), detector_path, registry]
    with output(out, guarded) as stream:
        from parentage import Detector  # the Python API: the command scores files exactly as it does

        detector = Detector.load(detector_path, registry=registry, device=device)
        if detector.caveat:
            print(f"warning: detector {detector.id} was {detector.caveat}: its scores only tell such images from "
                  "photographs and say nothing about real generators (docs/detect.md: \"A real detector\")",
                  file=sys.stderr)
        rows = detector.rows(inputs, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                             progress=progress, jpeg_decode=jpeg_decode)
        tally = write_rows(rows, stream, fmt)
    if summary is not None:
        with output(summary, guarded) as stream:
            json.dump({"scored": tally.scored, "failed": tally.failed, "labels": tally.labels,
                       "skipped": dict(sorted((skips.counts if skips else {}).items())),
                       "detector": detector.id}, stream, indent=2, sort_keys=True)
            stream.write("\n")
    return tally


@app.command()
def main(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) and globs "
                                                "(quote them; ** recurses)."),
    detector: Path = typer.Option(DETECTOR, help="Detector folder written by the detector stage (default: the "
                                                 "checkout's data/detector, from any working directory)."),
    registry: Path = typer.Option(REGISTRY, help="Backbone registry: the detector's backbone is loaded from it "
                                                 "by alias (offline) and must match the one it was trained on."),
    out: Path = typer.Option(Path("-"), help="Output file; - for stdout."),
    format: OutputFormat = typer.Option(OutputFormat.csv, "--format", help="csv (with a header) or jsonl."),
    summary: Path | None = typer.Option(None, help="Also write the run's counts as JSON here: rows scored and "
                                                   "failed, scored rows per label, files skipped by reason."),
    batch_size: int = typer.Option(32, min=1, envvar="PARENTAGE_DETECT_BATCH_SIZE",
                                   help="Images per backbone forward."),
    workers: int = parallel_option(min(4, os.cpu_count() or 1), envvar="PARENTAGE_DETECT_WORKERS",
                                   help="DataLoader worker processes reading and preprocessing images."),
    device: str = device_option("cpu", envvar="PARENTAGE_DETECT_DEVICE", what="the backbone"),
    max_pixels: int = typer.Option(MAX_PIXELS, min=1, help="Files declaring more pixels are refused unread "
                                                           "(decompression bombs)."),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
    jpeg_decode: JpegDecode | None = typer.Option(None, help="full or draft (a JPEG at least twice the backbone's "
                                                            "resize decoded reduced, faster; gpu reads as full "
                                                            "here); default: as the detector's training images "
                                                            "were."),
) -> None:
    """Score images with a trained detector: one row per input file, errors included."""
    skips = Skips(skip=True)
    stay_offline()  # no command downloads a model: weights come from disk or the local caches
    with user_errors():
        tally = detect(paths, detector, out, format, registry=registry, batch_size=batch_size, workers=workers,
                       device=device, max_pixels=max_pixels, progress=progress, skips=skips, jpeg_decode=jpeg_decode,
                       summary=summary)
    for reason, examples in skips.examples.items():
        more = skips.counts[reason] - len(examples)
        for example in examples:
            print(f"skipped {example}", file=sys.stderr)
        if more:
            print(f"skipped {more} more: {reason.replace('_', ' ')}", file=sys.stderr)
    left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skips.counts.items()))
    print(f"detect: {tally.line()}, {skips.total} skipped" + (f" ({left_out})" if left_out else ""),
          file=sys.stderr)
    if tally.scored == 0:
        print("error: every input failed; see the error column", file=sys.stderr)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
