"""Self-improvement loops that make their own training data: spar.py (SPaR's tree-search refinement,
arXiv 2412.11605: edit distance, tree_search, independent_pairs, LMRefiner; run by job=refine,
rizzrun.runner.refine_job), regenesis.py (ReGenesis, arXiv 2410.02108, and its STaR baseline,
arXiv 2203.14465) and job.py (job=synthesize)."""
