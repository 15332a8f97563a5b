"""The tiny world's tokenizer and model (mempo_verl/tiny/world.py): what verl, vLLM and the turn grammar need."""

import pytest

from mempo_verl.tiny.world import SPECIAL_TOKENS, TAG_TOKENS, TinyWorldConfig, tiny_world_model_dir


@pytest.fixture(scope="module")
def world_path(model_cache):
    return tiny_world_model_dir(model_cache)


@pytest.fixture(scope="module")
def world_tokenizer(world_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world_path)


def test_chatml_specials_and_tags_are_single_tokens_and_names_are_fragments(world_tokenizer):
    from mempo_verl.envs.synthetic import NAME_POOL

    tok = world_tokenizer
    assert len(tok) == TinyWorldConfig().vocab_size == 640
    # ids 0, 1, 2 in SPECIAL_TOKENS order: pad, message start, eos
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 2)
    for tag in TAG_TOKENS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1, tag
    # names are split into fragments shared across names (copied piece by piece): most take 2+ tokens, and the
    # 128 names use far fewer than 128 distinct first pieces
    pieces = [tok.encode(f" {w}", add_special_tokens=False) for w in NAME_POOL]
    assert sum(len(p) >= 2 for p in pieces) > 0.8 * len(NAME_POOL)
    assert len({p[0] for p in pieces}) < len(NAME_POOL) / 2
    # tags are content: they survive skipping special tokens, the end-of-message token does not
    text = "<mem>Q1: Keshmar.</mem>\n<think>All found.</think>\n<answer>Keshmar</answer>"
    ids = tok.encode(text + "<|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == text + "<|im_end|>"  # byte-level BPE: exact round trip


def test_any_text_round_trips(world_tokenizer):
    # byte-level: characters never seen in training still encode (as bytes) and decode back
    for text in ["Beyoncé — 東京 🙂", "   two  spaces\n\ttab", '{"name": "lookup", "arguments": {"key": "X"}}']:
        assert world_tokenizer.decode(world_tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_is_chatml_with_one_tools_line(world_tokenizer):
    messages = [{"role": "system", "content": "Task."}, {"role": "user", "content": "Q?"}]
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {}}}]
    text = world_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    expected = (
        "<|im_start|>system\nTask.\nTools: lookup<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected
    plain = world_tokenizer.apply_chat_template(messages, tokenize=False)
    assert plain == "<|im_start|>system\nTask.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"


def test_synthetic_texts_are_short(world_tokenizer):
    from mempo_verl.envs.synthetic import brief_task_prompt, make_synthetic_rows, oracle_turns

    row = make_synthetic_rows(1, objectives=2, hops=1, seed=3, split="test", names="pool")[0]
    doc = row["extra_info"]["documents"][0]
    # measured: ~75 tokens for the brief prompt, ~65 for a document, ~50 for an oracle turn
    assert len(world_tokenizer.encode(brief_task_prompt(2))) < 100
    assert len(world_tokenizer.encode(f"{doc['key']}: {doc['text']}")) < 100
    assert all(len(world_tokenizer.encode(t)) < 80 for t in oracle_turns(row))


def test_model_shape_serves_on_vllm_cpu(world_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(world_path)
    assert config.model_type == "qwen2" and config.hidden_size // config.num_attention_heads == 64
    assert (config.num_hidden_layers, config.vocab_size, config.tie_word_embeddings) == (4, 640, True)
    model = AutoModelForCausalLM.from_pretrained(world_path)
    n = sum(p.numel() for p in model.parameters())
    # by hand: 640 x 128 embeddings (81,920) + 4 layers x (q 16,512 + k, v 8,256 each + o 16,384 + MLP 196,608
    # + two norms 256) = 4 x 246,272 = 985,088, + the final norm 128
    assert n == 81_920 + 4 * (16_512 + 2 * 8_256 + 16_384 + 196_608 + 256) + 128


def test_built_once(world_path, model_cache):
    assert tiny_world_model_dir(model_cache) == world_path
    with pytest.raises(ValueError, match="must be 64"):
        TinyWorldConfig(hidden_size=128, num_attention_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyWorldConfig(vocab_size=300)
