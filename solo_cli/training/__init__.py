"""Training: the config (every `solo train` option), a run and its folder, the loop, batches,
optimizer, checkpoints, resume, distributed runs and tracking.
"""
