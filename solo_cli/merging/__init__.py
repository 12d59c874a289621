"""Merging: combining adapters into one (combine) and baking an adapter into a standalone model folder (export)."""
