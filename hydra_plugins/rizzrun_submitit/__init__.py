"""hydra-submitit-launcher's launchers as rizzrun runs them (`hydra/launcher=slurm|local`,
conf/hydra/launcher/): see `launchers`. Hydra only instantiates launchers from the
`hydra_plugins` namespace, hence this package. No `from __future__ import annotations` here (Hydra
runs these modules during its plugin scan, before they are in sys.modules)."""
