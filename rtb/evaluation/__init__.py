"""Evaluation of protections: mask families, per-edit metrics, summaries, reports and CLIP-FID."""
