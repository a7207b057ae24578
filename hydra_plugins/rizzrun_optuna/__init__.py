"""rizzrun's Optuna sweeper for Hydra (`hydra/sweeper=optuna`), on current Optuna (ask/tell).

The search space is written as in the official hydra-optuna-sweeper (`hydra.sweeper.params`:
`choice(...)`, `a,b,c`, `range(...)`, `interval(...)`, `tag(log, interval(...))`,
`int(interval(...))`); that plugin pins optuna<3, whose sqlite storage breaks on SQLAlchemy 2.

Hydra executes every module of the `hydra_plugins` namespace when it scans for plugins (again, into
the same module object, when it was imported before: its classes are then new objects), except
modules whose name starts with "_": the search space and the objective live in such modules, so
their classes stay the same objects in a process that imported them before a scan. Every module
imports optuna only inside the functions that need it (the scan runs at each Hydra start), and none
uses `from __future__ import annotations`: Hydra runs a module before it is in sys.modules, where
dataclasses cannot resolve string annotations.
"""
