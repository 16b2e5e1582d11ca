"""streammix: which stars belong to a stellar stream.

Per-star membership probabilities and smooth models of a stream's track, width,
density, kinematics and distance, from a mixture of a stream and a background
whose parameters are smooth functions of the coordinate along the stream.
"""

from __future__ import annotations

from .config import Config
from .data import ColumnMap, StarTable, read_stars
from .errors import InputError
from .fit import FittedModel, fit, load
from .provenance import __version__

__all__ = ["ColumnMap", "Config", "FittedModel", "InputError", "StarTable", "__version__", "fit", "load", "read_stars"]
