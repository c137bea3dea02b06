"""Selective Language Modeling (Rho-1): reference model, per-token scoring, SLM training, export, experiment."""
