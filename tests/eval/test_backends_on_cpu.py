"""Backends (mempo_verl/eval/backends.py): reading completions answers, the request body, the local model backend."""

import asyncio
import json

import pytest

from mempo_verl.eval.backends import (
    BackendError,
    EpisodeServer,
    LocalModelBackend,
    completion_request,
    completions_url,
    parse_completion,
)


def encode(text):
    return [ord(c) for c in text]  # a stand-in tokenizer: one id per character


def answer(**choice):
    return json.dumps({"choices": [{"index": 0, "text": "ab", "finish_reason": "stop", **choice}]})


def test_ids_from_return_token_ids():
    out = parse_completion(answer(token_ids=[5, 6], logprobs={"token_logprobs": [-0.5, -1.0]}), encode)
    assert (out.token_ids, out.log_probs, out.stop_reason) == ([5, 6], [-0.5, -1.0], "completed")
    assert out.extra_fields["token_ids_source"] == "token_ids"


def test_ids_from_vllm_token_id_strings():
    logprobs = {"tokens": ["token_id:7", "token_id:151645"], "token_logprobs": [-0.1, None]}
    out = parse_completion(answer(logprobs=logprobs, finish_reason="length"), encode)
    assert (out.token_ids, out.log_probs, out.stop_reason) == ([7, 151645], [-0.1, 0.0], "length")
    assert out.extra_fields["token_ids_source"] == "logprob_tokens"


def test_text_only_answer_is_retokenized_and_marked():
    out = parse_completion(answer(logprobs={"tokens": ["a", "b"], "token_logprobs": [-1, -2, -3]}), encode)
    assert out.token_ids == [97, 98] and out.extra_fields["token_ids_source"] == "text"
    assert out.log_probs is None  # three log-probs for two ids: not aligned, dropped


@pytest.mark.parametrize(
    "payload",
    [
        "<html>502 Bad Gateway</html>",
        json.dumps({"choices": []}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"choices": [{"index": 0}]}),
        json.dumps({"choices": [{"token_ids": ["1"], "text": None}]}),
    ],
)
def test_garbage_is_a_bad_response(payload):
    with pytest.raises(BackendError) as info:
        parse_completion(payload, encode)
    assert info.value.kind == "bad_response" and not info.value.retryable


def test_urls_and_request_body():
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/completions"):
        assert completions_url(url) == "http://h:1/v1/completions"
    body = completion_request("m", [1, 2], {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "top_k": -1}, seed=3)
    assert body["prompt"] == [1, 2] and body["max_tokens"] == 8 and body["seed"] == 3
    assert body["return_token_ids"] and body["return_tokens_as_token_ids"] and "top_k" not in body  # -1 = off


def test_local_backend_samples_by_seed_whatever_the_order(tiny_model, tokenizer):
    backend = LocalModelBackend(tiny_model, tokenizer, "qwen2", threads=1)
    params = {"max_tokens": 6, "temperature": 1.0, "top_p": 1.0, "top_k": -1}
    prompt = tokenizer.encode("Hello world")

    async def turns(seed, n):
        server = EpisodeServer(backend, seed)
        return [(await server.generate("r", prompt_ids=prompt, sampling_params=params)).token_ids for _ in range(n)]

    first = asyncio.run(turns(10, 2))
    other = asyncio.run(turns(99, 1))  # another episode in between changes nothing
    again = asyncio.run(turns(10, 2))
    assert first == again and first[0] != first[1]  # turn t samples with seed + t
    assert other[0] != first[0]


def test_device_adapter_keeps_policy_servers_interface(tiny_model, tokenizer):
    # the adapter LocalModelBackend puts around a model on an accelerator, exercised here on the CPU
    from mempo_verl.eval.backends import _OnDevice
    from mempo_verl.testing.policy_server import PolicyServer

    params = {"max_tokens": 4, "temperature": 1.0, "logprobs": True}
    prompt = tokenizer.encode("Hello world")

    def run(model):
        server = PolicyServer(model, tokenizer, mode="sampling", seed=5)
        return asyncio.run(server.generate("r", prompt_ids=prompt, sampling_params=params))

    direct, adapted = run(tiny_model), run(_OnDevice(tiny_model))
    assert adapted.token_ids == direct.token_ids and adapted.log_probs == pytest.approx(direct.log_probs)


def test_local_backend_loads_float32_whatever_the_checkpoint_config_says(tiny_model_path, tmp_path):
    # verl's Hugging Face checkpoints write dtype bfloat16 into config.json over fp32 weights; transformers would
    # then load bf16 (slow on CPUs without AMX, and not what the run trained)
    import shutil

    import torch

    from mempo_verl.eval import BackendConfig

    folder = shutil.copytree(tiny_model_path, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert LocalModelBackend.from_pretrained(BackendConfig(model=str(folder))).model.dtype == torch.float32
    auto = LocalModelBackend.from_pretrained(BackendConfig(model=str(folder), dtype="auto"))
    assert auto.model.dtype == torch.bfloat16
