"""rizzrun's compute kernels, imported as `rizzrun.kernels` (never as `kernels`).

This top-level folder is linked into the package as `rizzrun/kernels` (a symlink), so it ships in
the wheel and imports from a checkout as `rizzrun.kernels.<op>`; the unrelated PyPI distribution
named `kernels` can never shadow it. One sub-package per op, each with its forms side by side:
a readable reference, efficient PyTorch forms (chunked / recurrent) and a Triton form, selected
by `impl` (see each op's `__init__`). Importing this package imports no torch.
"""
