"""The package version, in one place: the build reads it, ``refquant.__version__`` and ``refquant info`` show it."""
__version__ = "0.1.0"
