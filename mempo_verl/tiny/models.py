"""Resolve a tiny model's name to its folder: what recipes (``${mempo_tiny_model:…}``) and ``mempo-eval --model
tiny:…`` both name, so it lives with the fixtures rather than in either entry point.

    tiny_model_path("random")   # the tiny offline Qwen2, Qwen2.5 vocabulary, random weights (built on first use)
    tiny_model_path("sft")      # the tiny world's SFT checkpoint (shipped; the turn format on `synthetic`)
"""

from __future__ import annotations

KINDS = ("random", "sft")


def tiny_model_path(kind: str = "random") -> str:
    """The folder of the tiny model ``kind`` (one of ``KINDS``), built on first use."""
    if kind == "random":
        from mempo_verl.tiny.qwen_model import tiny_model_dir

        return str(tiny_model_dir())
    if kind == "sft":
        from mempo_verl.tiny.data import tiny_world_sft_model

        return tiny_world_sft_model()
    raise ValueError(f"${{mempo_tiny_model:{kind}}}: unknown kind; choose one of {list(KINDS)}")
