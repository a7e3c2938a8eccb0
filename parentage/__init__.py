"""parentage's Python API: score images with a detector artifact, read an embedding cache.

    import parentage

    detector = parentage.Detector.load("data/detector")          # or a converted CoDE release's head
    scores = detector.score(["a.jpg", "b.png"])                   # paths, PIL images or image tensors
    scores.logit, scores.probability, scores.label                 # (N,) arrays; label 1 = fake, 0 = real

    cache = parentage.read_embeddings("data/embeddings/model/parents.h5")
    cache.embeddings, cache.ids, cache.labels                      # (N, D) float32, (N,) str, (N,) int8

`parentage detect` (the command line) scores files through the same `Detector`. The pipeline itself is the
`stages` package, which `dvc.yaml` runs.
"""

from parentage.api import Detector, Embeddings, Scores, read_embeddings

__all__ = ["Detector", "Embeddings", "Scores", "read_embeddings"]
