"""Data: tokenizers, sources, Fill-in-the-Middle, packing and the grain pipeline."""
