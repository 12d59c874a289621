"""The E2E scorer's metrics, one module per family: mteval (BLEU, NIST, chrF) and coco (METEOR, ROUGE-L, CIDEr)."""
