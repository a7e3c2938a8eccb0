"""The COCOFake study (paper Tables 1-4): the cluster view of the embedding caches, intra-cluster distances, the
linear probe protocol, caption retrieval, and semantic / style disentanglement."""
