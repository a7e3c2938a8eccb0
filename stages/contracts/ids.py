"""Row ids shared by every output. A parent and its children are tied by `cluster_id`; ids are strings so
they read the same in Parquet, HDF5, CSV and JSON."""


def parent_id(cluster_id: int) -> str:
    """The id of the parent of a cluster: ``p000000000042``."""
    return f"p{cluster_id:012d}"


def child_id(cluster_id: int, caption_index: int) -> str:
    """The id of the child generated from caption ``caption_index`` of a cluster: ``c000000000042_3``.

    A negative index means the caption is unknown (an imported child whose set does not say which caption
    made it): the k-th such child of a cluster (0-based, in the import's stable order) has caption_index
    -(k+1) and the id ``c000000000042_u{k}``, so ids stay unique and derivable from (cluster_id,
    caption_index). Unique within one generator's children; the generator's alias qualifies it across
    generators."""
    if caption_index < 0:
        return f"c{cluster_id:012d}_u{-caption_index - 1}"
    return f"c{cluster_id:012d}_{caption_index}"


def caption_id(cluster_id: int, caption_index: int) -> str:
    """The id of one caption of a cluster: ``t000000000042_3``."""
    return f"t{cluster_id:012d}_{caption_index}"
