"""The environment contract: what the agent loop needs from a task, and nothing more.

An environment is stateless across episodes: everything an episode needs (its questions, its documents, its gold
answers) travels in the dataset row, and `step` receives that row. One instance therefore serves every session of
an agent-loop worker concurrently, and a shared resource (a retriever, an HTTP client) lives on the instance.

Third-party environments subclass `Environment` and register with `@register_env("name")` or an entry point in
the group `mempo_verl.envs` (see `mempo_verl/envs/registry.py` and `examples/custom_env/`).

Helpers for implementations: `sample_extra_info` / `sample_questions` read a row as the agent loop receives it
(parquet values may be numpy arrays), and `turn_format_prompt` words a task prompt in the MemPO turn format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mempo_verl.protocol import DEFAULT_TAGS, TagSet, ToolCall, render_block, render_tool_call, render_turn
from mempo_verl.rewards import AnswerScore
from mempo_verl.values import as_python


@dataclass(frozen=True)
class Observation:
    """What the environment answers to one tool call.

    Attributes:
        text: shown to the model inside `<information>…</information>` on the next turn.
        ok: False when the call failed (unknown tool, bad arguments, backend down); the text then explains the
            failure to the model and the episode goes on.
        error: machine-readable failure kind for metrics (e.g. "unknown_tool", "bad_arguments",
            "retriever_unavailable"); None when ok.
        metrics: per-call numbers to aggregate (e.g. {"retrieval_latency_s": 0.01, "retrieval_attempts": 1}).
    """

    text: str
    ok: bool = True
    error: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


class Environment(ABC):
    """A task the MemPO agent loop can run. See the module docstring for the statelessness contract."""

    @abstractmethod
    def task_prompt(self, sample: Mapping[str, Any]) -> str:
        """The system/task instructions shown on every turn (format rules, tool usage)."""

    @abstractmethod
    def questions(self, sample: Mapping[str, Any]) -> list[str]:
        """The question(s) of the episode, one per objective, in answer order."""

    @abstractmethod
    def tool_schemas(self) -> list[dict[str, Any]]:
        """OpenAI function schemas of the tools (`{"type": "function", "function": {...}}`), as verl's tools use."""

    @abstractmethod
    async def step(self, tool_call: ToolCall, sample: Mapping[str, Any]) -> Observation:
        """Run one tool call for the episode of `sample`. Must not raise on bad calls: return `ok=False`."""

    @abstractmethod
    def score(self, answer: str | None, ground_truth: Any) -> AnswerScore:
        """Score the final answer (None when the episode ended without one) against the row's ground truth."""

    @abstractmethod
    def gold_answer_text(self, ground_truth: Any) -> str:
        """The gold answer as the model should write it inside `<answer>` (memory credit teacher-forces it)."""


def sample_extra_info(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The row's `extra_info` as a plain dict (numpy values from parquet converted); {} when the row has none."""
    extra_info = sample.get("extra_info")
    if extra_info is None:
        return {}
    if not isinstance(extra_info, Mapping):
        raise TypeError(f"sample['extra_info'] must be a mapping, got {type(extra_info).__name__}")
    return {key: as_python(value) for key, value in extra_info.items()}


def sample_questions(sample: Mapping[str, Any]) -> list[str]:
    """The row's questions, one per objective: `extra_info["questions"]` (the data builder's column), or a single
    `extra_info["question"]`. Raises ValueError naming the keys found when neither is there."""
    extra_info = sample_extra_info(sample)
    questions = extra_info.get("questions")
    if questions is None and isinstance(extra_info.get("question"), str):
        questions = [extra_info["question"]]
    if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q for q in questions):
        raise ValueError(
            "the row needs extra_info['questions'] (a non-empty list of strings) or extra_info['question']; "
            f"got extra_info keys {sorted(extra_info)}"
        )
    return questions


def answer_format_example(num_objectives: int) -> str:
    """The answer a k-objective episode expects, as text: 'answer 1; answer 2' (k = 2); '…' stands in past 3."""
    if num_objectives <= 3:
        return "; ".join(f"answer {i}" for i in range(1, num_objectives + 1))
    return f"answer 1; answer 2; …; answer {num_objectives}"


def turn_format_prompt(
    task: str,
    call_template: ToolCall,
    call_result: str,
    example_mem: str,
    example_think: str,
    example_call: ToolCall,
    num_objectives: int = 1,
    tags: TagSet = DEFAULT_TAGS,
) -> str:
    """A task prompt in the MemPO turn format (DESIGN §3): the task, the blocks of a turn, a one-turn example.

    Every built-in environment words its prompt through this function, so the format rules read the same
    everywhere; a third-party environment can too. The example turn is rendered with `protocol.render_turn`, so it
    parses as a valid turn.

    Args:
        task: what the episode asks, one or two sentences.
        call_template: the tool call with placeholder arguments, e.g. `ToolCall("search", {"query": "..."})`.
        call_result: what a call returns, e.g. "the top 3 passages".
        example_mem / example_think / example_call: the example turn's blocks.
        num_objectives: k; with k > 1 the answer is k answers in question order, separated by semicolons.
    """
    if num_objectives == 1:
        answer_rule = f"Write only the answer, e.g. {render_block('answer', 'Paris', tags)}."
    else:
        example = render_block("answer", answer_format_example(num_objectives), tags)
        answer_rule = f"Answer all {num_objectives} questions in order, separated by semicolons: {example}."
    mem, think, info = tags.open("mem"), tags.open("think"), tags.open("information")
    lines = [
        task,
        "Each turn, write these blocks in this order:",
        f"{mem}…{tags.close('mem')}: your memory. Rewrite it in full every turn: it replaces your previous memory "
        "and earlier turns may not be shown again, so keep everything you still need (facts found, answers so far, "
        "what is left to do).",
        f"{think}…{tags.close('think')}: your reasoning for this turn.",
        "Then exactly one action:",
        f"{render_tool_call(call_template, tags)}: returns {call_result}, shown next turn in "
        f"{info}…{tags.close('information')}.",
        f"{tags.open('answer')}…{tags.close('answer')}: your final answer; it ends the episode. {answer_rule}",
        "Example turn:",
        render_turn(example_mem, example_think, tool_call=example_call, tags=tags),
    ]
    return "\n".join(lines)
