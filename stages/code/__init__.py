"""CoDE (Contrasting Deepfakes Diffusion): the ViT network, the released augmentations and crops, the global /
local InfoNCE loss, the resumable training loop, and the evaluation heads."""
