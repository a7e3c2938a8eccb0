"""CoDE's loader: each image of a pair decoded once, its views shipped as uint8 and normalised in the training
process to the same floats as before, and persistent loader workers that follow the epochs."""

import numpy as np
import pytest
import torch

from stages.code import augment as aug
from stages.code.data import EpochIndices, PairViews, ViewConfig, make_pairs, make_views, read_images
from stages.contracts.clusters import read_clusters
from tests.fixtures import write_children, write_clusters
from tests.images import photo

VIEWS = ViewConfig(image_size=32, local_size=16, num_transform=2, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                   crop_pct=0.9)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("code_loader")
    clusters = write_clusters(root, n_parents=12, size=(80, 60))
    write_children(root / "children" / "g1", read_clusters(clusters), generator="g1", size=(48, 48), fmt="PNG")
    return make_pairs(read_images(clusters, root / "children", ["g1"], ("train",)), "train")


def test_each_image_of_a_pair_is_decoded_once_for_its_eight_views(pairs, monkeypatch):
    import stages.imaging.load as load

    calls = []
    real = load.load_rgb

    def counting(source, **kwargs):
        calls.append(kwargs.get("where"))
        return real(source, **kwargs)

    monkeypatch.setattr(load, "load_rgb", counting)
    item = PairViews(pairs, VIEWS, seed=0)[0]
    assert len(item) == 8
    assert len(calls) == 2, calls  # the parent and the drawn child, each once


def test_views_travel_as_uint8_and_normalise_to_the_old_floats():
    img = photo(3, (90, 70))
    views = make_views(img, np.random.default_rng(0), VIEWS)
    assert all(v.dtype == torch.uint8 for v in views.values())
    from stages.code.net import MEAN, STD

    old = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    old = (old - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert torch.equal(aug.normalize(aug.to_uint8(img)), old)  # bit for bit
    assert torch.equal(aug.to_tensor(img), old)


def test_persistent_workers_follow_the_epochs(pairs):
    """One worker started once serves epochs 0 and 1 with exactly the views of the in-process loader."""
    def epochs(workers: int) -> list[list[dict]]:
        dataset = PairViews(pairs, VIEWS, seed=3)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=EpochIndices(dataset),
                                             num_workers=workers, persistent_workers=workers > 0)
        out = []
        for epoch in range(2):
            dataset.use_epoch(epoch)
            out.append(list(loader))
        return out

    inline, worker = epochs(0), epochs(1)
    for a, b in zip(inline, worker, strict=True):
        for x, y in zip(a, b, strict=True):
            assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(inline[0][0]["aug_real"], inline[1][0]["aug_real"])  # the epochs differ


def test_an_index_with_its_epoch_equals_the_index_after_use_epoch(pairs):
    a, b = PairViews(pairs, VIEWS, seed=1), PairViews(pairs, VIEWS, seed=1)
    b.use_epoch(2)
    assert all(torch.equal(a[(2, 1)][k], b[1][k]) for k in b[1])


@pytest.mark.slow
def test_a_loader_worker_trains_exactly_as_the_training_process(tmp_path, pairs):
    from stages.code.loss import LossVariant
    from stages.code.net import CodeNetConfig
    from stages.code.trainer import Monitor, TrainConfig, train

    refs = [ref for parent, children in pairs for ref in (parent, *children)]
    val = [dataclass_replace(ref, split="val") for ref in refs]
    net = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=32, local_size=16)
    config = TrainConfig(epochs=2, batch_size=2, lr=5e-4, weight_decay=2e-5, warmup_epochs=0, min_lr=0.0,
                         temperature=0.1, loss_variant=LossVariant.symmetric, monitor=Monitor.val_loss, patience=6,
                         probe_images=0, seed=0)
    torch.set_num_threads(1)
    histories = [train([*refs, *val], net, VIEWS, config, checkpoints=tmp_path / str(workers), num_workers=workers,
                       progress=False, log=lambda *_: None).history for workers in (0, 1)]
    assert histories[0] == histories[1]


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
