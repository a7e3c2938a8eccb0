"""Code shared by several stages: labels and ids, atomic I/O, image reading, the HDF5 embedding cache."""
