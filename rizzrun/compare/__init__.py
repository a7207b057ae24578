"""`rizzrun compare`: which run won. Reads runs from folders (runs.py) or W&B (wandb_runs.py)
into `Run` records, finds the config keys that differ and the seed groups (configs.py), builds
the table of final/best metrics with mean ± 95 % CI per group (table.py, stats.py), renders it
(render.py) and plots curves (plot.py); command.py wires them for the CLI. Torch-free."""
