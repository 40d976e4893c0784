"""The compiled kernels land here: setup.py builds ``kernels/<name>.pyx`` into ``refquant._kernels.<name>``.

Call them through :mod:`refquant._dispatch`, which falls back to the NumPy twin when one is not built.
"""
