"""Inference: loading a base model with an adapter, generation, exports and `inspect` reports."""
