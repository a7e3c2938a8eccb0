"""What the stages hand each other, defined once: labels and split names, row ids, the user-error type and skip
counter, atomic writes and metrics files, and the formats of the clusters table, the children folder and the
HDF5 embedding cache."""
