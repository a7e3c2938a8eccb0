"""Generating children: the generator registry (generators.yaml), loading a diffusers pipeline by id or local
directory, planning per-child seeds and shards, writing the children folder, and the offline tiny generator."""
