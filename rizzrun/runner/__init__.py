"""The runner: the only place that knows Lightning. Builds components from a composed config,
trains them with one LightningModule + a Lightning Trainer, and writes the run folder."""
