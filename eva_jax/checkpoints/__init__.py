"""Checkpoint formats: Hugging Face safetensors (incl. FP8) in and out."""
