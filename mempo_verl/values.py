"""Plain Python values from what parquet (through pandas), numpy and TransferQueue hand back, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_python(value: Any) -> Any:
    """``value`` in plain Python, recursively: numpy arrays and scalars (and tensors) -> lists and Python scalars,
    tuples -> lists, mappings -> dicts with ``str`` keys; anything else as is. The result equals its JSON round trip
    when its leaves are JSON values."""
    # tolist first: tensordict's NonTensorStack (a TransferQueue column) is also a Mapping
    if not isinstance(value, (str, bytes)) and hasattr(value, "tolist"):
        return as_python(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): as_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_python(item) for item in value]
    return value
