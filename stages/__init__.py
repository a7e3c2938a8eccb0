"""parentage: real photographs (parents) versus the images a diffusion model makes from their captions
(children). Each top-level module of this package is one command: a DVC stage (``python -m stages.<name>``)
or a tool (``detect``, ``cli``). The code they share lives in the subpackages, one per subject:

    contracts   what stages hand each other: labels, ids, errors, atomic writes, and the clusters table,
                children folder and embedding cache formats
    imaging     reading images safely, and the robustness transforms
    sources     captioned image sources (demo, COCO, manifests) and building the clusters table
    generation  the generator registry (generators.yaml), loading diffusers pipelines, writing children
    embedding   the backbone registry (backbones.yaml), loading backbones, resumable embedding into caches
    heads       the one classification toolkit: linear head, threshold rule, metrics
    study       the COCOFake study: cluster view of caches, distances, probe, retrieval, disentanglement
    code        CoDE: network, views and augmentations, contrastive loss, training loop, evaluation heads
    shipped     the shipped detector: its artifact, its training and robustness, scoring files from the wild
    reporting   the report: table layout, the papers' numbers, rendering

Every ``__init__.py`` holds only a docstring, so importing a subpackage runs nothing but the modules named.
"""
