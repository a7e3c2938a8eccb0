"""The supervised contrastive loss (Khosla et al. 2020; the paper's eq. 5) over one batch.

For each anchor i with at least one positive: -1/|P(i)| * sum_{p in P(i)} log softmax_{a != i}(f_i . f_a / t)[p],
where P(i) are the other elements with i's label and the softmax runs over every element but i. The loss
is the mean over anchors that have a positive (the paper writes a sum; the mean only rescales it and keeps
the learning rate independent of the batch size, as in the reference implementation).
"""

from __future__ import annotations

import torch


def supcon_losses(features: torch.Tensor, labelings: list[torch.Tensor], temperature: float) -> list[torch.Tensor]:
    """features (B, D), l2-normalised; each labeling (B,) int -> one scalar loss per labeling.

    The loss of the same features under several labelings (e.g. clusters and real/fake), sharing the
    (B, B) similarity and log-softmax, which dominate the cost."""
    if temperature <= 0:
        raise ValueError(f"temperature is {temperature}; expected > 0")
    b = features.shape[0]
    self_mask = torch.eye(b, dtype=torch.bool, device=features.device)  # (B, B)
    logits = (features @ features.T / temperature).masked_fill(self_mask, float("-inf"))  # (B, B)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (B, B), log softmax over A(i)
    losses = []
    for labels in labelings:
        positives = (labels[:, None] == labels[None, :]) & ~self_mask  # (B, B)
        n_positives = positives.sum(dim=1)  # (B,)
        per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1) / n_positives.clamp(min=1)  # (B,)
        has_positive = n_positives > 0
        if not has_positive.any():
            raise ValueError("no anchor in the batch has a positive (batches must hold whole clusters)")
        losses.append(per_anchor[has_positive].mean())
    return losses
