"""rizzrun: a Hydra-configured experiment runner for language-model research."""

__version__ = "0.1.0"
