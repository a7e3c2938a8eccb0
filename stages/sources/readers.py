"""Captioned image sources for the clusters stage: the built-in demo, COCO caption files, and manifests.

Each reader returns `Record`s in a stable order: one image with all of its captions (in annotation-id
order for COCO, column order for manifests), before any rule about how many captions a parent keeps.
Bad input found while reading (a duplicate id, a caption of an unknown image) goes through `Skips`."""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stages.contracts.errors import InputError, Skips


@dataclass
class Record:
    source_id: str
    image_path: Path
    captions: list[str]
    split: str | None = None  # set when the source decides the split (Karpathy's file)
    where: str = ""  # the file (and row) this record came from, for error messages


# --------------------------------------------------------------------------------------------- demo
# The demo's captions name each image "<package>:<file>": a photograph shipped in an installed package
# (scikit-image's data folder, scikit-learn's sample images), so the demo needs no download. The demo_parents
# stage copies them into the workspace (<images>/<package>/<file>) and the clusters table points there, never
# into a virtual environment that `dvc exp run --temp`, `dvc queue` or another machine would not have.
PACKAGE_IMAGE_DIRS = {"skimage": ("skimage", "data"), "sklearn": ("sklearn.datasets", "images")}


def _split_package_name(name: str) -> tuple[str, str]:
    package, sep, file_name = name.partition(":")
    if not sep or package not in PACKAGE_IMAGE_DIRS or not file_name or Path(file_name).name != file_name:
        raise InputError(f"demo image {name!r}", f"must be '<package>:<file>' with package in "
                         f"{sorted(PACKAGE_IMAGE_DIRS)}")
    return package, file_name


def package_image(name: str) -> Path:
    """Resolve ``"skimage:astronaut.png"`` to the file inside the installed package."""
    package, file_name = _split_package_name(name)
    module, folder = PACKAGE_IMAGE_DIRS[package]
    return Path(str(resources.files(module).joinpath(folder, file_name)))


def demo_image(images: Path, name: str) -> Path:
    """Where the demo_parents stage puts ``"skimage:astronaut.png"``: ``<images>/skimage/astronaut.png``."""
    package, file_name = _split_package_name(name)
    return images / package / file_name


def demo_image_names(captions_file: Path) -> list[str]:
    """The ``file_name`` of every image in the demo's captions file, in file order."""
    where = str(captions_file)
    try:
        data = json.loads(captions_file.read_text())
        return [str(image["file_name"]) for image in data["images"]]
    except FileNotFoundError as error:
        raise InputError(where, "caption file not found") from error
    except (json.JSONDecodeError, RecursionError, KeyError, TypeError) as error:
        raise InputError(where, f"not a COCO caption file with a file_name per image ({error})") from error


def read_demo(folder: Path, images: Path, skips: Skips) -> list[Record]:
    """The demo: ``captions.json`` in COCO format whose ``file_name``s are package images, read from their
    workspace copies under `images` (the demo_parents stage's output)."""
    captions_file = folder / "captions.json"
    return read_coco_file(captions_file, image_path=lambda name: demo_image(images, name), skips=skips)


# --------------------------------------------------------------------------------------------- COCO
def read_coco_file(captions_file: Path, *, image_path, skips: Skips) -> list[Record]:
    """One COCO caption file (``images`` + ``annotations``); `image_path` maps a file_name to a path."""
    where = str(captions_file)
    try:
        data = json.loads(captions_file.read_text())
    except FileNotFoundError as error:
        raise InputError(where, "caption file not found") from error
    except IsADirectoryError as error:
        raise InputError(where, "is a folder; expected a COCO caption file") from error
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(where, f"not valid JSON ({error})") from error
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InputError(where, "not a COCO caption file: expected keys 'images' and 'annotations'")

    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise InputError(where, "'images' and 'annotations' must be lists")
    records: dict[int, Record] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise InputError(f"{where}: images[{index}]", "expected keys 'id' and 'file_name' (a string)")
        image_id = _integer_id(image["id"], f"{where}: images[{index}]")
        if image_id in records:
            skips.handle(InputError(f"{where}: images[{index}]", f"duplicate image id {image_id}"),
                         "duplicate_id")
            continue
        records[image_id] = Record(str(image_id), image_path(image["file_name"]), [],
                                   where=f"{where}: image {image_id} ({image['file_name']})")

    keyed = []
    for index, annotation in enumerate(data["annotations"]):
        at = f"{where}: annotations[{index}]"
        if not isinstance(annotation, dict) or "id" not in annotation or "image_id" not in annotation:
            raise InputError(at, "expected keys 'id', 'image_id' and 'caption'")
        keyed.append((_integer_id(annotation["id"], at), _integer_id(annotation["image_id"], at), annotation))
    unknown: set[int] = set()
    bad: set[int] = set()
    for annotation_id, image_id, annotation in sorted(keyed, key=lambda item: item[0]):
        if image_id not in records:
            unknown.add(image_id)
            continue
        caption = annotation.get("caption", "")
        problem = caption_problem(caption)
        if problem:
            bad.add(image_id)
            skips.handle(InputError(f"{where}: annotation {annotation_id} (image {image_id})", problem),
                         "bad_caption")
            continue
        records[image_id].captions.append(caption)
    for image_id in sorted(unknown):
        skips.handle(InputError(where, f"captions refer to image id {image_id}, which is not in 'images'"),
                     "unknown_image")
    return [record for image_id, record in records.items() if image_id not in bad]


def _integer_id(value, where: str) -> int:
    """A COCO id: an integer (or a string of digits), never a float, a bool or anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise InputError(where, f"id {value!r} is not an integer")


def caption_problem(caption) -> str | None:
    """Why `caption` is not a caption (null, NaN, a number, a list...), or None for a string."""
    if isinstance(caption, str):
        return None
    if caption is None or (isinstance(caption, float) and caption != caption):
        return "caption is null (or NaN); expected a string"
    return f"caption {caption!r} is a {type(caption).__name__}; expected a string"


def read_coco(root: Path, captions_glob: str, karpathy_split: Path | None, skips: Skips) -> list[Record]:
    """COCO 2014 or 2017: every caption file matching `captions_glob` under `root`.

    An image ``file_name`` from ``captions_<sub>*.json`` (sub as in val2017) is looked for in ``root/<sub>/``, then
    ``root/images/<sub>/``, then ``root/``. With Karpathy's ``dataset_coco.json`` its split decides
    (restval counts as train) and images it does not list are bad input ("not_in_split_file")."""
    files = sorted(Path(p) for p in glob.glob(str(root / captions_glob)))
    if not files:
        raise InputError(str(root), f"no COCO caption file matches {captions_glob!r}",
                         "download annotations_trainval2014.zip or 2017 from the COCO site and point "
                         "clusters.input at the folder holding annotations/ and the image folders")
    records: list[Record] = []
    seen: dict[str, str] = {}
    for captions_file in files:
        # captions_val2017.json (or captions_val2017_all5000.json) -> the val2017 image folder
        match = re.search(r"(train|val|test)\d{4}", captions_file.stem)
        sub = match.group(0) if match else captions_file.stem
        folders = [root / sub, root / "images" / sub, root]
        for record in read_coco_file(captions_file, image_path=lambda name, f=folders: _first_existing(f, name),
                                     skips=skips):
            if record.source_id in seen:
                skips.handle(InputError(record.where, f"image id {record.source_id} also in "
                                        f"{seen[record.source_id]}"), "duplicate_id")
                continue
            seen[record.source_id] = str(captions_file)
            records.append(record)
    if karpathy_split is not None:
        splits = read_karpathy(karpathy_split)
        kept = []
        for record in records:
            split = splits.get(record.source_id)
            if split is None:
                skips.handle(InputError(record.where, f"not listed in {karpathy_split}"), "not_in_split_file")
                continue
            record.split = split
            kept.append(record)
        records = kept
    return records


def coco_problems(root: Path, captions_glob: str, karpathy_split: Path | None) -> list[str]:
    """What of a COCO source is missing (the folder, the caption files, each caption file's image folder, the
    split file), each with how to get it; empty when all is there. Images are not opened here (clusters checks
    every one)."""
    site = "https://cocodataset.org/#download"
    problems = []
    if not root.is_dir():
        problems.append(f"COCO folder {root} (clusters.input) does not exist: create it and fill it as below")
    files = sorted(Path(p) for p in glob.glob(str(root / captions_glob)))
    if not files:
        problems.append(f"caption files: none matches {root / captions_glob} (clusters.coco_captions): unzip "
                        f"annotations_trainval2014.zip from {site} into {root}")
    subs = {m.group(0) for f in files if (m := re.search(r"(train|val|test)\d{4}", f.stem))}
    year = (re.search(r"20\d\d", captions_glob) or re.search("2014", "2014")).group(0)
    for sub in sorted(subs) if files else [f"train{year}", f"val{year}"]:
        if not any((folder / sub).is_dir() for folder in (root, root / "images")):
            problems.append(f"images: folder {root / sub} is missing: download {sub}.zip from {site} and unzip it "
                            f"into {root}")
    if karpathy_split is not None and not karpathy_split.is_file():
        problems.append(f"Karpathy's split file {karpathy_split} (clusters.karpathy_split) is missing: download "
                        "caption_datasets.zip (Karpathy's dataset_coco.json, e.g. from "
                        "https://cs.stanford.edu/people/karpathy/deepimagesent/) and unzip dataset_coco.json there")
    return problems


def _first_existing(folders: list[Path], name: str) -> Path:
    for folder in folders:
        if (folder / name).exists():
            return folder / name
    return folders[0] / name  # reported as missing by the image check


def read_karpathy(path: Path) -> dict[str, str]:
    """Map COCO image id to train / val / test from Karpathy's ``dataset_coco.json`` (restval -> train)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise InputError(str(path), "Karpathy split file not found") from error
    except IsADirectoryError as error:
        raise InputError(str(path), "is a folder; expected Karpathy's dataset_coco.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(str(path), f"not valid JSON ({error}); expected Karpathy's dataset_coco.json") from error
    if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
        raise InputError(str(path), f"holds a {type(data).__name__}; expected Karpathy's dataset_coco.json "
                                    "(an object with a list 'images')")
    mapping = {"train": "train", "restval": "train", "val": "val", "test": "test"}
    out = {}
    for index, image in enumerate(data.get("images", [])):
        if not isinstance(image, dict) or image.get("split") not in mapping or "cocoid" not in image:
            raise InputError(f"{path}: images[{index}]", f"expected 'cocoid' and a split in {sorted(mapping)}")
        out[str(image["cocoid"])] = mapping[image["split"]]
    if not out:
        raise InputError(str(path), "no images listed: expected Karpathy's dataset_coco.json")
    return out


# ----------------------------------------------------------------------------------------- manifest
PATH_COLUMNS = ("image_path", "path", "image", "file", "file_name")
ID_COLUMNS = ("id", "image_id", "source_id")


def read_manifest(path: Path, skips: Skips) -> list[Record]:
    """A CSV, JSONL or Parquet file: an image path column (one of PATH_COLUMNS, relative paths resolved
    against the manifest's folder), an optional id column (ID_COLUMNS; the path otherwise), and captions
    either as a list column ``captions`` or as columns ``caption_1``, ``caption_2``, ... in order."""
    import pandas as pd

    where = str(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InputError(where, f"unknown manifest format {suffix!r}; expected .csv, .jsonl or .parquet")
    except FileNotFoundError as error:
        raise InputError(where, "manifest not found") from error
    except IsADirectoryError as error:
        raise InputError(where, "is a folder; expected a manifest file (.csv, .jsonl or .parquet)") from error
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputError(where, f"cannot be parsed ({error})") from error

    path_column = next((c for c in PATH_COLUMNS if c in frame.columns), None)
    if path_column is None:
        raise InputError(where, f"no image path column; expected one of {PATH_COLUMNS}, "
                         f"found {list(frame.columns)}")
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    caption_columns = sorted((c for c in frame.columns if re.fullmatch(r"caption_?\d+", str(c))),
                             key=lambda c: int(re.sub(r"\D", "", c)))
    if "captions" not in frame.columns and not caption_columns:
        raise InputError(where, "no caption column; expected a list column 'captions' or columns "
                         "'caption_1', 'caption_2', ...")

    records: list[Record] = []
    seen: set[str] = set()
    for row_number, row in enumerate(frame.to_dict("records"), start=1):
        row_where = f"{where}: row {row_number}"
        image = Path(str(row[path_column]))
        image = image if image.is_absolute() else path.parent / image
        source_id = str(row[id_column]) if id_column else str(row[path_column])
        if source_id in seen:
            skips.handle(InputError(row_where, f"duplicate id {source_id!r}"), "duplicate_id")
            continue
        seen.add(source_id)
        try:
            captions = _row_captions(row, caption_columns, row_where)
        except InputError as error:
            skips.handle(error, "bad_caption")
            continue
        records.append(Record(source_id, image, captions, where=f"{row_where} ({image})"))
    return records


def _row_captions(row: dict, caption_columns: list[str], where: str) -> list[str]:
    """The row's captions; an `InputError` naming the row when one is not a string.

    In ``caption_N`` columns an empty, null or NaN cell is an absent caption (every row has every column,
    so a parent with fewer captions leaves some empty); in a ``captions`` list every item must be a string."""
    if caption_columns:
        captions = []
        for column in caption_columns:
            value = row[column]
            if value is None or value == "" or (isinstance(value, float) and value != value):
                continue
            problem = caption_problem(value)
            if problem:
                raise InputError(f"{where}, column {column!r}", problem)
            captions.append(value)
        return captions
    value = row["captions"]
    if value is None or (isinstance(value, float) and value != value):
        raise InputError(where, "column 'captions' is null (or NaN); expected a list of strings")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InputError(where, "column 'captions' holds a string that is not a JSON list") from error
    if hasattr(value, "tolist"):  # a Parquet list column arrives as a numpy array
        value = value.tolist()
    if not isinstance(value, list):
        raise InputError(where, f"column 'captions' must be a list of strings, got {type(value).__name__}")
    for index, caption in enumerate(value):
        problem = caption_problem(caption)
        if problem:
            raise InputError(f"{where}, captions[{index}]", problem)
    return value
