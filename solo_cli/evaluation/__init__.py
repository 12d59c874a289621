"""Evaluation: the eval set, loss and generation on it, and the E2E metrics (BLEU, NIST, METEOR,
ROUGE-L, CIDEr, chrF).
"""
