"""The Paddle importer's public names at their former path; the code lives in :mod:`refquant.io.paddle`."""
from .paddle.importer import import_paddle, read_program  # noqa: F401
