"""Evaluation of trained runs: memorization (extraction) metrics and held-out loss."""
