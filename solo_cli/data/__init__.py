"""Data: reading rows from JSONL, JSON, CSV, Parquet, save_to_disk folders and Hub datasets, checking
them, and encoding them into token ids with loss masks.
"""
