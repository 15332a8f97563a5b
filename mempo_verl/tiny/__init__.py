"""Shipped fixtures: the tiny world (the embedded default) and the random-weight tiny Qwen2 (`qwen_model`), their
builders and cache folder.

User-facing code (``main``, the CLIs) may import this room; ``mempo_verl.testing`` holds test helpers only.
"""

from mempo_verl.tiny.cache import build_once, default_cache_dir
from mempo_verl.tiny.world import TinyWorldConfig, build_tiny_world_tokenizer, tiny_world_model_dir

__all__ = ["TinyWorldConfig", "build_once", "build_tiny_world_tokenizer", "default_cache_dir", "tiny_world_model_dir"]
