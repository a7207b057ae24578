"""rizzrun's Optuna sweeper for Hydra (`hydra/sweeper=optuna`), on current Optuna (ask/tell).

The search space is written as in the official hydra-optuna-sweeper (`hydra.sweeper.params`:
`choice(...)`, `a,b,c`, `range(...)`, `interval(...)`, `tag(log, interval(...))`,
`int(interval(...))`); that plugin pins optuna<3, whose sqlite storage breaks on SQLAlchemy 2.

Hydra imports every module of the `hydra_plugins` namespace when it starts, so these modules
import optuna only inside the functions that need it, and none of them uses
`from __future__ import annotations`: Hydra runs a module before it is in sys.modules, where
dataclasses cannot resolve string annotations.
"""
