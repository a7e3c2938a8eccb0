"""CoDE's contrastive objective: InfoNCE over real and fake embeddings with global/local views.

For a batch of B (parent, child) pairs the model embeds eight views, each (B, D):

    real, fake              the plain views (no augmentation)
    aug_real, aug_fake      augmented views (up to `num_transform` augmentations each)
    global_real, global_fake, local_real, local_fake   multi-crop views (DINO-style global / local crops)

Real anchors (the fake term mirrors it with the classes swapped):

    L_real = 1/2 * [ InfoNCE(real_i, aug_real_perm(i), {aug_fake_j})         other reals are positives
                   + InfoNCE(local_real_i, global_real_i, {global_fake_j}) ] own global view is the positive

where perm is a derangement of the batch (every anchor is paired with another image of its class, as
the released code does by rolling the augmented views) and {x_j} are all B negatives of the other class.

`symmetric` (the paper): L = L_real + L_fake. `released` (the released training loop): L = 2 * L_real;
it adds the real term twice and drops the fake term, a bug kept here as an option for comparison.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so stage --help stays fast
    import torch

VIEWS = ("real", "fake", "aug_real", "aug_fake", "global_real", "local_real", "global_fake", "local_fake")


class LossVariant(StrEnum):
    symmetric = "symmetric"
    released = "released"


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean InfoNCE of each query against its own positive and a shared set of negatives (cosine logits).

    query, positive: (B, D); negatives: (M, D). Returns a scalar."""
    import torch
    import torch.nn.functional as F

    query, positive, negatives = (F.normalize(x, dim=-1) for x in (query, positive, negatives))
    positive_logit = (query * positive).sum(dim=-1, keepdim=True)  # (B, 1)
    negative_logits = query @ negatives.T  # (B, M)
    logits = torch.cat([positive_logit, negative_logits], dim=1) / temperature  # (B, 1 + M)
    target = torch.zeros(len(query), dtype=torch.long, device=query.device)  # the positive is column 0
    return F.cross_entropy(logits, target)


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded random permutation of range(n) with no fixed point (n >= 2): each anchor gets another image."""
    import torch

    if n < 2:
        raise ValueError(f"a batch of {n} has no other image of the same class; CoDE needs batches of 2 or more")
    order = torch.randperm(n, generator=generator)
    if bool((order == torch.arange(n)).any()):
        # a fixed point: fall back to a random cyclic shift, which has none
        shift = int(torch.randint(1, n, (1,), generator=generator))
        order = torch.roll(torch.arange(n), shift)
    return order


def class_term(anchor: torch.Tensor, augmented_same: torch.Tensor, augmented_other: torch.Tensor,
               local_same: torch.Tensor, global_same: torch.Tensor, global_other: torch.Tensor,
               perm: torch.Tensor, temperature: float) -> torch.Tensor:
    """The loss of one class's anchors: same-class pair term and local-to-global term, averaged."""
    pairs = info_nce(anchor, augmented_same[perm], augmented_other, temperature)
    multiscale = info_nce(local_same, global_same, global_other, temperature)
    return (pairs + multiscale) / 2


def code_loss(z: dict[str, torch.Tensor], perm_real: torch.Tensor, perm_fake: torch.Tensor, *,
              temperature: float = 0.1, variant: LossVariant = LossVariant.symmetric) -> dict[str, torch.Tensor]:
    """The CoDE loss of one batch. z maps each name in VIEWS to (B, D) embeddings; perm_* are derangements.

    Returns {"loss", "real", "fake"} (the total and the two class terms, scalars)."""
    real = class_term(z["real"], z["aug_real"], z["aug_fake"], z["local_real"], z["global_real"], z["global_fake"],
                      perm_real, temperature)
    fake = class_term(z["fake"], z["aug_fake"], z["aug_real"], z["local_fake"], z["global_fake"], z["global_real"],
                      perm_fake, temperature)
    total = real + fake if variant is LossVariant.symmetric else real + real
    return {"loss": total, "real": real, "fake": fake}
