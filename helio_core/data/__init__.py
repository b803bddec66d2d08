"""Data: raw sources, prepared splits, the distilled set on disk, and the augmented views students train on."""
