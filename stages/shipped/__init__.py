"""The detector the project ships: its pickle-free artifact, training it from embedding caches, its robustness
grid, and scoring image files from the wild (detect)."""
