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


class DataFileError(RefquantError, ValueError):
    """A data file cannot be used: unreadable, truncated, not the format its suffix says, holding Python objects
    (pickle), or holding arrays that do not name the model's inputs. The message names the file."""


class ArgumentError(RefquantError, ValueError):
    """A function argument is out of its documented range, or an invalid combination (the message names it)."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A function argument has the wrong type: a bool or float where an int is needed, a string where a list is."""


class NonFiniteError(RefquantError, ValueError):
    """A tensor holds NaN or Inf where a finite value is needed (calibration statistics, a quantizer's range).
    ``tensor`` and ``op`` name the tensor and the op that produced it when known."""

    def __init__(self, message: str, *, tensor: str | None = None, op: str | None = None, count: int = 0):
        super().__init__(message)
        self.tensor, self.op, self.count = tensor, op, count


class OpError(RefquantError):
    """An op's forward failed on the values it was given at run time (shapes that only this input contradicts, an
    index out of range, a dtype the op cannot take); the message names the op and its input shapes. Each instance
    is also of the standard type the op raised (:func:`op_error` makes ``OpValueError`` for ValueError, and so on),
    so code that catches ValueError / IndexError / TypeError still does."""


_OP_ERRORS: dict = {}


def op_error(base: type) -> type:
    """The subclass of :class:`OpError` and ``base`` (ValueError, IndexError, TypeError, ...), made once."""
    if base not in _OP_ERRORS:
        _OP_ERRORS[base] = type(f"Op{base.__name__}", (OpError, base), {"__module__": __name__})
    return _OP_ERRORS[base]
