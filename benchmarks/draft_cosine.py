"""What draft decoding changes: the cosine between each COCO-mini photo's embedding with embed.jpeg_decode=full
and with =draft, per backbone (the figure README "Draft decoding" quotes).

    python benchmarks/draft_cosine.py [--backbones efficientnet_lite0 openclip_vitb32_random] [--threads 2]
        [--coco ../shared/data/coco-mini]

For each backbone: how many photos draft decoding reduces (a JPEG is reduced only when its shorter side is at
least twice the backbone's resize), then the median and the minimum cosine over all photos and over the
reduced ones alone (an unreduced photo has exactly the same pixels, cosine 1). No timing: run it anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def embed_all(backbone, paths: list[Path], draft: int | None, batch: int = 32):
    import numpy as np
    import torch

    from stages.imaging.load import load_rgb

    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            pixels = torch.stack([backbone.transform(load_rgb(p, draft=draft)) for p in paths[start:start + batch]])
            out.append(backbone.image_encoder(pixels).float().numpy())  # (B, D)
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "openclip_vitb32_random"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--coco", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    args = parser.parse_args()
    if not args.coco.is_dir():
        sys.exit(f"{args.coco} is absent: this script needs ../shared/data/coco-mini")

    import numpy as np
    import torch
    from PIL import Image

    from stages.embedding.backbones import get_spec, load_backbone, resize_side

    torch.set_num_threads(args.threads)
    paths = sorted(args.coco.rglob("*.jpg"))
    shorter = [min(Image.open(p).size) for p in paths]
    print(f"{len(paths)} coco-mini photos (shorter side {min(shorter)}..{max(shorter)} px)")
    for alias in args.backbones:
        backbone = load_backbone(get_spec(alias, REPO / "stages" / "embedding" / "backbones.yaml"))
        side = resize_side(backbone.transform)
        if side is None:
            print(f"{alias}: its preprocessing has no leading resize; draft decoding does not apply")
            continue
        full, drafted = embed_all(backbone, paths, None), embed_all(backbone, paths, side)
        cosine = (full * drafted).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(drafted, axis=1))
        reduced = [c for c, s in zip(cosine.tolist(), shorter, strict=True) if s >= 2 * side]
        line = (f"{alias}: resize {side} px, {len(reduced)} of {len(paths)} photos reduced; cosine full vs draft: "
                f"median {statistics.median(cosine.tolist()):.4f}, min {cosine.min():.4f}")
        if reduced:
            line += f"; over the reduced ones: median {statistics.median(reduced):.4f}, min {min(reduced):.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
