"""Memory stays flat with the number of inputs: the detect and embed loops hold at most a batch (a chunk for
embed's part files) of per-image objects at any time, whatever N. Each test counts the live per-image tensors
through weak references while the loop runs (cheap: tiny images, a tiny backbone, no worker processes)."""

from __future__ import annotations

import io
import tracemalloc
import weakref
from pathlib import Path

import pytest
from PIL import Image


class Live:
    """Weak references to the objects a loop made; `alive()` counts those not yet freed; `most` the peak."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.most = 0

    def add(self, obj):
        self.refs.append(weakref.ref(obj))
        return obj

    def alive(self) -> int:
        count = sum(ref() is not None for ref in self.refs)
        self.most = max(self.most, count)
        return count


def small_files(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 10), (i % 256, (7 * i) % 256, 0)).save(folder / f"{i:05d}.png")
    return [str(folder)]


def test_detect_holds_at_most_a_batch_of_images_whatever_n(tmp_path):
    from stages.detect import OutputFormat, write_rows
    from stages.shipped.rows import score_inputs
    from stages.shipped.wild import expand_inputs
    from tests.test_detector_artifact import random_detector
    from tests.tiny_backbone import TinyBackbone

    class Counting(TinyBackbone):
        def __init__(self) -> None:
            super().__init__()
            self.views, self.outputs = Live(), Live()

        def preprocess(self, image):
            return self.views.add(super().preprocess(image))

        def embed(self, pixels):
            self.views.alive()
            self.outputs.alive()
            return self.outputs.add(super().embed(pixels))

    batch, peaks = 8, {}
    for n in (40, 160):
        backbone = Counting()
        inputs = expand_inputs(small_files(tmp_path / str(n), n))
        tracemalloc.start()
        tally = write_rows(score_inputs(random_detector(), backbone, inputs, batch_size=batch, workers=0,
                                        progress=False), io.StringIO(), OutputFormat.csv)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (tally.scored, tally.failed) == (n, 0)
        # the batch being embedded (its views are stacked, then freed) and the one before, never more
        assert backbone.views.most <= 2 * batch, backbone.views.most
        assert backbone.outputs.most <= 2, backbone.outputs.most
    # the rows are written as they come: 4x the files costs the output text and nothing per image besides
    assert peaks[160] < peaks[40] + 160 * 1024, peaks


@pytest.mark.parametrize("workers", [0])
def test_embed_holds_at_most_a_chunk_whatever_n(tmp_path, workers):
    import numpy as np
    import torch
    from accelerate import PartialState

    from stages.contracts.clusters import read_clusters
    from stages.contracts.embeddings import read_embeddings
    from stages.embedding import runner
    from stages.embedding.backbones import Backbone, BackboneSpec
    from tests.fixtures import write_clusters

    inputs, outputs = Live(), Live()

    class Encoder(torch.nn.Module):
        def forward(self, x):  # (B, 3, 4, 4) -> (B, 3)
            inputs.alive()
            outputs.alive()
            return outputs.add(x.mean(dim=(2, 3)))

    def transform(image):
        array = np.asarray(image.resize((4, 4)), dtype=np.float32) / 255
        return inputs.add(torch.from_numpy(array).permute(2, 0, 1).contiguous())

    backbone = Backbone(BackboneSpec("tiny_memory", "timm", "mean", "random"), Encoder(), transform, 3)
    config = runner.RunConfig(batch_size=4, chunk_size=8, workers=workers, precision=runner.Precision.fp32,
                              skip_bad=False, progress=False)
    for n in (12, 48):
        rows = runner.parent_rows(read_clusters(write_clusters(tmp_path / str(n), n_parents=n, n_captions=1)))
        out = tmp_path / str(n) / "parents.h5"
        runner.embed_rows(rows, backbone, out, kind="images", attrs={**backbone.attrs(), "image_set": "parents"},
                          config=config, state=PartialState(cpu=True))
        assert len(read_embeddings(out).id) == n
    assert inputs.most <= 2 * config.batch_size, inputs.most
    # a finished batch's features are copied to numpy at once: the torch outputs never pile up
    assert outputs.most <= 2, outputs.most
