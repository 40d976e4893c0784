"""Every error refquant raises on bad input, so callers can catch them precisely."""


class RefquantError(Exception):
    """Base class of refquant's errors."""


class GraphError(RefquantError, ValueError):
    """A graph is malformed: a dangling tensor name, a cycle, two producers of one tensor."""


class ShapeError(RefquantError, ValueError):
    """A tensor has the wrong shape or dtype for the op or graph input that receives it."""


class UnsupportedOpError(RefquantError, NotImplementedError):
    """An op type refquant has no implementation for (the message names the op and the node)."""


class ModelFormatError(RefquantError, ValueError):
    """A model file is truncated, corrupted, of an unknown version or otherwise not a refquant model."""
