"""Shared fixtures: the tiny offline Qwen2 models and tokenizer, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """The session's model cache: pass it as `MEMPO_CACHE_DIR` and the recipes' `${mempo_tiny_model:…}` reuse it."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model_path(model_cache):
    """Hugging Face folder of the tiny Qwen2 model (random weights, real Qwen2.5 tokenizer)."""
    from mempo_verl.tiny.qwen_model import tiny_model_dir

    return tiny_model_dir(model_cache)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
