"""Resolve a tiny model's name to its folder: what recipes (``${mempo_tiny_model:…}``) and ``mempo-eval --model
tiny:…`` both name, so it lives with the fixtures rather than in either entry point.

    tiny_model_path("random")   # the tiny offline Qwen2, random weights (built on first use)
    tiny_model_path("format")   # the same, briefly fine-tuned to write the MemPO turn format
"""

from __future__ import annotations


def tiny_model_path(kind: str = "random") -> str:
    """The tiny offline Qwen2 folder (built on first use): `random` weights, or `format` (briefly fine-tuned to
    write the MemPO turn format, `mempo_verl.testing.warm_start`, where that module is installed)."""
    from mempo_verl.tiny.qwen_model import tiny_model_dir

    if kind == "random":
        return str(tiny_model_dir())
    if kind == "format":
        from mempo_verl.testing.warm_start import format_tuned_model_dir

        return str(format_tuned_model_dir())
    raise ValueError(f"${{mempo_tiny_model:{kind}}}: unknown kind; choose one of ['random', 'format']")
