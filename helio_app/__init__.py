"""The `helio` command: the pipeline's stages for DVC, torchrun and people alike, and the tools around them
(label images, inspect an artifact, print and publish tables, queue the paper's experiments)."""
