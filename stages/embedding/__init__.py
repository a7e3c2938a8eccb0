"""Embedding images and captions: the backbone registry (backbones.yaml), loading a backbone offline by library,
name and tag, and the resumable, chunked, multi-process embedding run that writes the HDF5 caches."""
