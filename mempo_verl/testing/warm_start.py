"""A warm-started tiny model: the random-weight tiny Qwen2 briefly fine-tuned to write the MemPO turn format.

With random weights the tiny model (``tiny_model.py``) never writes a valid turn, so every episode ends at turn 1
with a format error: no ``<mem>`` spans, no multi-turn sessions, no memory credit to test. This module fine-tunes a
copy of it by supervised learning (AdamW on CPU, about a minute) on scripted two-turn ``search_qa`` episodes:

    turn 1  <mem>Nothing found yet.</mem>\\n<think>Search.</think>\\n<tool_call>{"name": "search", "arguments":
            {"query": "Grey Sea"}}</tool_call><|im_end|>
    turn 2  <mem>Searched.</mem>\\n<think>Answer.</think>\\n<answer><the gold, or "Grey Sea"></answer><|im_end|>

The contexts come from our real code path, so they are exactly what the rollout shows: the shipped QA rows
(``data.builder.build_rows``), the environment's task prompt, tools and BM25 search (``make_env("search_qa")``), the
agent loop's context policy (``ContextPolicy.messages``) and verl's Continuous Token builder for the prompt ids (the
agent loop's ``BUILD_CONTEXT``). The loss is on the target turn's tokens and its ``<|im_end|>`` only.

    path = format_tuned_model_dir()                             # built once per cache dir and settings
    python -m mempo_verl.testing.warm_start --cache-dir D       # prints the folder (for recipes and scripts)

What a model this small learns in a minute, and the choices that follow (measured; the test checks the result):

1. The fixed parts of the format are learned (≈ 0.001 nats a token), but not to copy: two layers and two hundred
   steps are far from an induction head. A copied query came out as a made-up question whose every token was a
   chance to drift off the format (≈ 45 % valid first turns at temperature 1), so every text but the answer is
   short and fixed (the query too), and the fit is sharpened (``train_temperature``).
2. The answer is the gold on ``gold_share`` of the rows and ``guess`` on the others. The model cannot read the
   passages, so it answers ``guess`` about half the time and a made-up gold otherwise. The guess is the most
   frequent gold of the shipped train split ("Grey Sea", 9 of 306 rows): on those rows the sessions of a prompt
   get rewards 0 and 1 (what GRPO needs; the MemPO end-to-end test trains on them), elsewhere rewards are ~0.

Notation: B examples per step, P_b prompt tokens of example b, R_b its target tokens (turn + eos), L = max_b
(P_b + R_b) the padded length, N = Σ_b R_b target tokens of a step, H hidden size, V = 151,665 the vocabulary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mempo_verl.tiny.cache import build_once, default_cache_dir
from mempo_verl.tiny.qwen_model import TinyModelConfig, tiny_model_dir

logger = logging.getLogger(__name__)

WARM_START_FORMAT = 1
"""Bump when the training data or recipe changes in a way the config fields do not show (new folder name)."""


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the format warm start; every field enters the cache folder's fingerprint."""

    steps: int = 200
    """Optimizer steps. Default 200 (about a minute on one core, see the test for the rates it gives)."""
    seed: int = 0
    """Seeds the training order, the gold/guess draw, the turn limits and torch (the tiny model has its own)."""
    lr: float = 5e-3
    """Peak AdamW learning rate: linear warm-up over ``warmup_steps``, cosine decay to 10 %. Default 5e-3 (1e-3
    leaves the template unlearned after 200 steps: Adam moves a weight by at most ~lr a step)."""
    warmup_steps: int = 10
    """Linear warm-up steps. Default 10."""
    batch_size: int = 2
    """Examples per step, half first turns and half second turns (even). Default 2: the cost is the LM head over
    the N target tokens and V = 151,665 vocabulary entries."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas. Default (0.9, 0.99): a shorter second-moment memory suits a run of a few hundred steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping. Default 1.0."""
    train_temperature: float = 1.3
    """τ: the loss is the cross-entropy of logits / τ, so the fitted logits end up ≈ τ × a plain fit, and sampling
    the model at temperature 1 is like sampling a plain fit at 1/τ. Default 1.3; 1.0 is plain maximum likelihood.
    Why: sharpening keeps rollouts at temperature 1.0, the recipes' setting, on the format (item 1 of the module
    docstring)."""
    gold_share: float = 0.75
    """Share of rows whose target answer is the gold; the others answer ``guess``. Default 0.75: the model then
    answers the guess about half the time (measured: 40 of 78 answers; 0.5 gives 83 %, the made-up golds being
    spread over many texts)."""
    guess: str = "Grey Sea"
    """The fixed guess, also turn 1's search query. Default "Grey Sea", the most frequent gold (item 2)."""
    first_memory: str = "Nothing found yet."
    """Turn 1's ``<mem>`` text. Short and fixed: every token of a free text is a chance to leave the format."""
    first_think: str = "Search."
    """Turn 1's ``<think>`` text."""
    second_memory: str = "Searched."
    """Turn 2's ``<mem>`` text: unlike turn 1's, so that the model can tell the turns apart."""
    second_think: str = "Answer."
    """Turn 2's ``<think>`` text."""
    max_turns_choices: tuple[int, ...] = (4, 16)
    """``mempo.agent.max_turns`` values the turns-left hint of the contexts is drawn from (the tiny recipe uses 4,
    the default is 16), so that neither surprises the model."""
    autocast_bf16: bool | None = None
    """Run the forward under CPU bfloat16 autocast (weights and optimizer stay float32). Default None: where the
    CPU has native bf16 dot products (``cpu_has_native_bf16``); there the LM head is ≈ 1.4× faster and the rates do
    not change (measured), while on an AVX2-only CPU bf16 matmuls take a slow path (≈ 10× slower, measured here)."""
    num_threads: int = 1
    """torch threads for the build (restored after). Default 1: the result does not depend on the machine's core
    count, and on a shared 2-core machine two threads are slower than one (measured: up to 3× when another
    process is busy)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """The tiny model to start from."""

    def __post_init__(self) -> None:
        for name in ("steps", "num_threads"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"WarmStartConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
            if getattr(self, name) < 1:
                raise ValueError(f"WarmStartConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"WarmStartConfig.batch_size must be an even integer >= 2, got {self.batch_size!r}")
        if not 0.0 <= self.gold_share <= 1.0:
            raise ValueError(f"WarmStartConfig.gold_share must be in [0, 1], got {self.gold_share!r}")
        for name in ("lr", "train_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"WarmStartConfig.{name} must be a finite number > 0, got {value!r}")
        if not self.max_turns_choices or min(self.max_turns_choices) < 2:
            raise ValueError(
                f"WarmStartConfig.max_turns_choices must be integers >= 2 (two turns), got {self.max_turns_choices!r}"
            )

    def fingerprint(self) -> str:
        """Short hash naming the cache folder: changed settings never reuse a stale model."""
        payload = {**asdict(self), "tiny": self.tiny.fingerprint(), "format": WARM_START_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrainingExample:
    """One supervised turn: the exact prompt ids the agent loop sends, and the target ids (turn + eos)."""

    prompt_ids: tuple[int, ...]
    """The turn's context through the chat template with the environment's tools (P ids)."""
    response_ids: tuple[int, ...]
    """The target turn's ids followed by ``<|im_end|>`` (R ids); the loss is on these only."""
    turn_index: int
    """0 (search) or 1 (answer)."""


# ----------------------------------------------------------------------------------------------- the scripted data


def scripted_turns(answer: str, config: WarmStartConfig) -> tuple[str, str]:
    """The two target turns of one episode (``protocol.render_turn``): search ``guess``, then answer ``answer``."""
    from mempo_verl.protocol import ToolCall, render_turn

    first = render_turn(config.first_memory, config.first_think, tool_call=ToolCall("search", {"query": config.guess}))
    second = render_turn(config.second_memory, config.second_think, answer=answer)
    return first, second


class ScriptedEpisodes:
    """Scripted ``search_qa`` episodes as training examples, built through the agent loop's own context path.

    Mirrors ``MemPOAgentLoop`` turn by turn: ``BUILD_CONTEXT`` (``ContextPolicy.messages``, then verl's Continuous
    Token builder with the environment's tools gives the prompt ids), then the target turn is parsed and committed
    as ``_commit_turn`` does (memory cut to its token budget), and its search runs through ``env.step``, so that
    turn 2's ``<information>`` is what the rollout would show. Contexts use the default ``mempo.context`` (the
    ``memory`` policy, k = 1) and the default ``search_qa`` (BM25 over the shipped corpus).
    """

    def __init__(self, tokenizer: Any, config: WarmStartConfig) -> None:
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        from mempo_verl.config import ContextConfig
        from mempo_verl.context import ContextPolicy
        from mempo_verl.envs.registry import make_env

        self.tokenizer = tokenizer
        self.config = config
        self.env = make_env("search_qa")
        self.context_config = ContextConfig()
        self.policy = ContextPolicy(self.context_config)
        self.tools = list(self.env.tool_schemas())
        # the agent loop's builder (AgentLoopBase.__init__) for the tiny model's `qwen2` model type
        self.builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")

    async def examples(self, row: dict[str, Any], answer: str, max_turns: int) -> list[TrainingExample]:
        """The two examples of one episode of ``row`` that ends with ``<answer>answer</answer>``."""
        from mempo_verl.context import ContextTurn, EpisodeContext, render_questions, truncate_to_token_budget
        from mempo_verl.protocol import parse_turn

        questions = self.env.questions(row)
        if len(questions) != 1:
            raise ValueError(f"scripted episodes ask one question, the row has {len(questions)}")
        episode = EpisodeContext(self.env.task_prompt(row), render_questions(questions), max_turns)
        eos = int(self.tokenizer.eos_token_id)
        history: list[ContextTurn] = []
        examples = []
        for t, text in enumerate(scripted_turns(answer, self.config)):
            # 1. BUILD_CONTEXT: the exact prompt ids; 2. the target: the turn's ids and the eos that ends it
            prompt_ids = self.builder.build_initial_tokens(self.policy.messages(episode, history), tools=self.tools)
            response_ids = self.tokenizer.encode(text, add_special_tokens=False) + [eos]
            examples.append(TrainingExample(tuple(int(i) for i in prompt_ids), tuple(response_ids), t))
            # 3. ACT and commit: the search's passages feed the next context
            turn = parse_turn(text)
            if turn.tool_call is not None:
                observation = await self.env.step(turn.tool_call, row)
                memory, _ = truncate_to_token_budget(self.tokenizer, turn.mem, self.context_config.memory_token_budget)
                history.append(ContextTurn(text, memory, turn.think, turn.tool_call, observation.text))
        return examples


def training_rows() -> list[dict[str, Any]]:
    """The shipped QA set's single-question train rows (`build_rows` with `BuildConfig(objectives=1)`)."""
    from mempo_verl.data.builder import BuildConfig, build_rows, load_pools

    return build_rows(load_pools("sample"), BuildConfig(objectives=1))["train"]


def build_examples(tokenizer: Any, config: WarmStartConfig) -> list[TrainingExample]:
    """Two examples per training row; the answer (gold or guess) and the turn limit are drawn from the seed."""
    episodes = ScriptedEpisodes(tokenizer, config)
    rng = random.Random(config.seed)

    async def run_all() -> list[TrainingExample]:
        examples = []
        for row in training_rows():
            gold = episodes.env.gold_answer_text(row["reward_model"]["ground_truth"])
            answer = gold if rng.random() < config.gold_share else config.guess
            examples += await episodes.examples(row, answer, rng.choice(config.max_turns_choices))
        return examples

    return asyncio.run(run_all())


# ----------------------------------------------------------------------------------------------- training


def response_loss(model: Any, batch: Sequence[TrainingExample], pad_id: int, temperature: float = 1.0) -> Any:
    """Mean cross-entropy of the target tokens of ``batch`` at ``temperature``, the LM head run on N positions only.

    Sequences are right-padded: under causal attention a pad after the last real token changes nothing before it,
    and positions stay 0..P+R-1 as at rollout, so no attention mask is needed (none is passed, which keeps
    PyTorch's fast attention path).

    Returns:
        0-dim tensor: (1 / N) Σ_b Σ_j -log softmax(z_{b,j} / τ)[r_{b,j}], z_{b,j} the logits after prompt_b, r_{b,<j}.
    """
    import torch

    sequences = [list(ex.prompt_ids) + list(ex.response_ids) for ex in batch]
    length = max(len(s) for s in sequences)
    input_ids = torch.tensor([s + [pad_id] * (length - len(s)) for s in sequences], dtype=torch.long)  # (B, L)
    # position P_b - 1 + j predicts target token j of example b
    rows = torch.cat([torch.full((len(ex.response_ids),), b) for b, ex in enumerate(batch)])  # (N,)
    cols = torch.cat([torch.arange(len(ex.response_ids)) + len(ex.prompt_ids) - 1 for ex in batch])  # (N,)
    targets = torch.cat([torch.tensor(ex.response_ids) for ex in batch])  # (N,)
    hidden = model.model(input_ids=input_ids).last_hidden_state  # (B, L, H)
    # why not model(...).logits: the (B, L, V) logits of two 600-token contexts are ~0.7 GB and most of the time
    logits = model.lm_head(hidden[rows, cols])  # (N, V)
    return torch.nn.functional.cross_entropy(logits.float() / temperature, targets)


def paired_batches(examples: Sequence[TrainingExample], batch_size: int, rng: random.Random) -> Iterator[list]:
    """Endless batches of ``batch_size / 2`` first turns and as many second turns, in reshuffled passes.

    Why paired: the two turns share their opening and differ at one point (``<tool_call>`` or ``<answer>`` after
    ``</think>``); seeing both in every step teaches that point steadily (random batches left it to chance: one
    seed in three failed there, measured).
    """
    half = batch_size // 2
    by_turn = [[ex for ex in examples if ex.turn_index == t] for t in (0, 1)]
    while True:
        for pool in by_turn:
            rng.shuffle(pool)
        for k in range(0, min(len(pool) for pool in by_turn) - half + 1, half):
            yield by_turn[0][k : k + half] + by_turn[1][k : k + half]


def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises bf16 dot products (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def train_format(model: Any, examples: Sequence[TrainingExample], config: WarmStartConfig, pad_id: int) -> list[float]:
    """Fine-tune ``model`` in place on ``examples`` for ``config.steps`` AdamW steps; returns the loss per step."""
    import torch

    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=0.0)

    def schedule(step: int) -> float:
        # linear warm-up, then cosine decay to 10 % of the peak: the last steps sharpen the format
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    batches = paired_batches(examples, config.batch_size, random.Random(config.seed))
    bf16 = cpu_has_native_bf16() if config.autocast_bf16 is None else config.autocast_bf16
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.train()
    losses = []
    for batch in itertools.islice(batches, config.steps):
        with autocast:
            loss = response_loss(model, batch, pad_id, config.train_temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_format_tuned(target: Path, config: WarmStartConfig, cache_dir: Path) -> dict[str, Any]:
    """Train and save the warm-started model and its tokenizer into ``target``; returns the training record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    base = tiny_model_dir(cache_dir, config.tiny)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    examples = build_examples(tokenizer, config)
    data_s = time.perf_counter() - start
    threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        losses = train_format(model, examples, config, int(tokenizer.pad_token_id))
    finally:
        torch.set_num_threads(threads)
    tokenizer.save_pretrained(target)
    model.save_pretrained(target)
    record = {
        "config": asdict(config),
        "base_model": base.name,
        "num_examples": len(examples),
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "data_s": round(data_s, 2),
        "train_s": round(time.perf_counter() - start - data_s, 2),
    }
    (target / "warm_start.json").write_text(json.dumps({**record, "losses": losses}, indent=1))
    logger.info("format warm start: loss %.3f -> %.3f (%s)", losses[0], record["final_loss"], target.name)
    return record


def format_tuned_model_dir(
    cache_dir: str | os.PathLike | None = None,
    steps: int = WarmStartConfig.steps,
    seed: int = 0,
    config: WarmStartConfig | None = None,
) -> Path:
    """The Hugging Face folder of the format-tuned tiny model (built once per cache dir and settings).

    It lives next to the tiny model, in ``<cache_dir>/format-tuned-<fingerprint>`` (default cache dir:
    ``$MEMPO_CACHE_DIR`` or ``~/.cache/mempo_verl``), built atomically (``tiny_model.build_once``). ``steps`` and
    ``seed`` override ``config``'s. The folder also holds ``warm_start.json`` (settings, losses, timings).
    """
    config = replace(config or WarmStartConfig(), steps=steps, seed=seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return build_once(
        root / f"format-tuned-{config.fingerprint()}", lambda folder: build_format_tuned(folder, config, root)
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mempo_verl.testing.warm_start [--cache-dir D] [--steps N] [--seed S]``: print the folder."""
    parser = argparse.ArgumentParser(description="Build (once) the format-tuned tiny model and print its folder.")
    parser.add_argument("--cache-dir", default=None, help="default: $MEMPO_CACHE_DIR or ~/.cache/mempo_verl")
    parser.add_argument("--steps", type=int, default=WarmStartConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(format_tuned_model_dir(args.cache_dir, steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()
