"""The one label convention of the project, and the split names. Import these; never write 0/1 literals."""

from typing import Final

REAL: Final = 0  # a parent: a real photograph
FAKE: Final = 1  # a child: generated from one of its parent's captions

SPLITS: Final[tuple[str, ...]] = ("train", "val", "test")

PARENT_CAPTION_INDEX: Final = -1  # the caption index recorded for parents, which no caption generated
