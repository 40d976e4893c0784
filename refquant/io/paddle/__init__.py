"""Paddle inference models in, without Paddle (``docs/paddle_import.md``).

* :mod:`.program` is the neutral form both program formats are read into, the file lookup and the input limits;
* :mod:`.pdmodel` reads the legacy ``ProgramDesc`` protobuf (with :mod:`.protowire`), :mod:`.pir` the PIR JSON
  program, :mod:`.params` the ``.pdiparams`` parameter file;
* :mod:`.importer` walks the neutral program and :mod:`.converters` (one module per op family) map each Paddle op
  onto refquant ops.
"""
from .importer import import_paddle, read_program  # noqa: F401
