"""Captioned image sources (the built-in demo, COCO caption files with an optional Karpathy split, CSV / JSONL /
Parquet manifests) and building the clusters table from them. The demo's captions live in demo/."""
