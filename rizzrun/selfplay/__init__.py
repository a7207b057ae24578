"""Self-improvement loops that synthesise their own training data: regenesis.py (ReGenesis,
arXiv 2410.02108, and its STaR baseline, arXiv 2203.14465)."""
