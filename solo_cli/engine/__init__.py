"""The engine: the Solo adapter and its hooks (modeling_solo.py, copied into exports), adapter files,
connection plans, decoder blocks, models, the loss, merging and model cards. Never prints; imports
nothing above it.
"""
