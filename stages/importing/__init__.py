"""Importing published children: reading a set's layout (COCOFake's folders, one child per parent, a manifest, a
local Hugging Face dataset), tying each child to its parent in the clusters table, and writing the children
folder of stages.contracts.children with the generate stage's resumable shards."""
