"""The tiny model resolver (mempo_verl/tiny/models.py): `${mempo_tiny_model:…}` and `mempo-eval --model tiny:…`."""

import pytest

from mempo_verl.eval.cli import resolve_model
from mempo_verl.tiny import models


def test_random_is_the_session_tiny_model(model_cache, tiny_model_path, monkeypatch):
    monkeypatch.setenv("MEMPO_CACHE_DIR", str(model_cache))
    assert models.tiny_model_path("random") == str(tiny_model_path)  # the folder already built: reused
    assert resolve_model("tiny:random") == str(tiny_model_path)  # mempo-eval's `tiny:` names resolve here
    assert resolve_model("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"  # anything else passes through


def test_sft_is_the_shipped_tiny_world_checkpoint():
    from mempo_verl.tiny.data import SHIPPED_SFT_DIR

    # the shipped checkpoint is current (tests/e2e asserts its key), so nothing is trained here
    assert resolve_model("tiny:sft") == models.tiny_model_path("sft") == str(SHIPPED_SFT_DIR)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match=r"unknown kind; choose one of \['random', 'sft'\]"):
        models.tiny_model_path("huge")
