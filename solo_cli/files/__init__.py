"""Files: atomic writes, the run-folder lock and adapters fetched from the Hugging Face Hub."""
