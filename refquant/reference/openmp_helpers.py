"""Twin of ``refquant._kernels._openmp_helpers`` for when the kernels are not built: everything runs on one thread."""


def max_threads() -> int:
    """The twins are serial: 1."""
    return 1


def set_threads(n: int) -> None:
    """Nothing to set: the twins are serial."""


def build_facts() -> dict:
    """No compiled kernels, so no build facts."""
    return {}
