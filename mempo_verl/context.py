"""Context policies: which earlier turns the model sees when it writes turn t. Pure functions of strings.

MemPO (arXiv 2603.00680) rewrites the context every turn; ReAct / Search-R1 append to it (DESIGN §3 "context at
turn t"). With ``history`` the turns 0..t-1 of the episode (``turns.TurnRecord``), turn t sees:

    memory  system: task prompt
            user:   questions, turns-left hint, then for each of the last k turns (k = ``retain_turns``):
                    <mem>m</mem> [<think>…</think>] [<tool_call>…</tool_call>] <information>o</information>
    mem1    memory with k = 1 and the tool call kept (MEM1's consolidated state: latest internal state, latest
            query, latest information). The only difference from ``memory`` k = 1 is the kept tool call.
    full    system: task prompt; user: questions + hint; then assistant: turn 0 text; user: <information>o_0
            </information> + hint; … (every turn appended, as verl's ToolAgentLoop does)

Each policy also names its segment layout (``ContextPolicy.layout``, chosen here once): under ``memory``/``mem1``
each turn is its own training segment whose prompt is this context (``per_turn``); under ``full`` the trajectory is
one growing sequence, one segment (``sequence``: the agent loop appends tokens instead of re-rendering,
``layout.py``).

Notation: t is the 0-based index of the turn being written; ``max_turns`` T; turns left (this one included) is
T - t. A message is ``{"role": "system" | "user" | "assistant", "content": str}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mempo_verl.config import ContextConfig, ContextPolicyName
from mempo_verl.protocol import DEFAULT_TAGS, Message, TagSet, render_information
from mempo_verl.turns import TurnRecord, render_earlier_turn

SegmentLayoutName = Literal["per_turn", "sequence"]
"""How a session's turns become training rows (``layout.py``): one row per turn, or one growing sequence."""


@dataclass(frozen=True)
class EpisodeContext:
    """What every turn of an episode shows, whatever the policy."""

    task_prompt: str
    """The environment's instructions (``Environment.task_prompt``), the system message."""
    question_text: str
    """The question(s) as shown (``render_questions``); the memory-credit contexts use the same text."""
    max_turns: int
    """T, the episode's turn limit (for the turns-left hint)."""


def render_questions(questions: Sequence[str]) -> str:
    """One question as is; k questions as ``Question 1: …`` lines, in answer order (answers go ``a1; …; ak``)."""
    if isinstance(questions, str) or not questions:
        raise ValueError(f"questions must be a non-empty list of strings, got {questions!r}")
    if len(questions) == 1:
        return questions[0]
    return "\n".join(f"Question {i}: {q}" for i, q in enumerate(questions, start=1))


def turns_left_hint(config: ContextConfig, turns_left: int) -> str | None:
    """The hint text for ``turns_left`` (this turn included), or None when the hint is off."""
    if not config.turns_left_hint:
        return None
    return config.turns_left_template.format(turns_left=turns_left)


def _user_content(parts: Sequence[str | None]) -> str:
    return "\n\n".join(p for p in parts if p)


def memory_messages(
    episode: EpisodeContext,
    history: Sequence[TurnRecord],
    config: ContextConfig,
    tags: TagSet = DEFAULT_TAGS,
    *,
    retain: int | None = None,
    keep_call: bool | None = None,
) -> list[Message]:
    """The rewritten context of turn t = len(history): task prompt, questions, hint, the last k turns' blocks.

    ``retain`` (k; None = every turn) and ``keep_call`` default to ``config.retain_turns`` and ``config.keep_call``.
    """
    if retain is None and config.retain_turns != "all":
        retain = int(config.retain_turns)
    keep_call = config.keep_call if keep_call is None else keep_call
    retained = history[-retain:] if retain is not None and history else history
    blocks = [render_earlier_turn(turn, tags, keep_think=config.keep_think, keep_call=keep_call) for turn in retained]
    hint = turns_left_hint(config, episode.max_turns - len(history))
    return [
        {"role": "system", "content": episode.task_prompt},
        {"role": "user", "content": _user_content([episode.question_text, hint, *blocks])},
    ]


def mem1_messages(
    episode: EpisodeContext, history: Sequence[TurnRecord], config: ContextConfig, tags: TagSet = DEFAULT_TAGS
) -> list[Message]:
    """MEM1: the latest memory, the latest tool call and its information (``memory`` with k = 1, call kept)."""
    return memory_messages(episode, history, config, tags, retain=1, keep_call=True)


def full_messages(
    episode: EpisodeContext, history: Sequence[TurnRecord], config: ContextConfig, tags: TagSet = DEFAULT_TAGS
) -> list[Message]:
    """ReAct / Search-R1: every earlier turn as an assistant message, its information as the next user message.

    Turn t's messages extend turn t-1's by exactly ``[assistant, user]`` (append-only), which is what lets the
    agent loop append the new tokens to the ids already sent instead of re-tokenizing the history.
    """
    first_hint = turns_left_hint(config, episode.max_turns)
    messages: list[Message] = [
        {"role": "system", "content": episode.task_prompt},
        {"role": "user", "content": _user_content([episode.question_text, first_hint])},
    ]
    for t, turn in enumerate(history):
        if turn.observation is None:
            # why: a turn without a tool call ends the episode, so no later context can follow it
            raise ValueError(f"full context: turn {t} has no observation but is followed by another turn")
        hint = turns_left_hint(config, episode.max_turns - t - 1)
        messages.append({"role": "assistant", "content": turn.text})
        messages.append({"role": "user", "content": _user_content([render_information(turn.observation, tags), hint])})
    return messages


_POLICIES: dict[ContextPolicyName, Callable[[EpisodeContext, Sequence[TurnRecord], ContextConfig, TagSet], list]] = {
    "memory": memory_messages,
    "mem1": mem1_messages,
    "full": full_messages,
}

POLICY_LAYOUTS: dict[ContextPolicyName, SegmentLayoutName] = {
    "memory": "per_turn",
    "mem1": "per_turn",
    # why: full's contexts are append-only (``full_messages``), so the trajectory is one sequence
    "full": "sequence",
}
"""Each policy's segment layout: the one place that knows which policy lays its turns out how."""


@dataclass(frozen=True)
class ContextPolicy:
    """The configured policy: ``messages(episode, history)`` gives turn t's chat messages, t = len(history)."""

    config: ContextConfig
    tags: TagSet = DEFAULT_TAGS

    @property
    def name(self) -> ContextPolicyName:
        return self.config.policy

    @property
    def layout(self) -> SegmentLayoutName:
        """The policy's segment layout (``POLICY_LAYOUTS``)."""
        return POLICY_LAYOUTS[self.config.policy]

    def messages(self, episode: EpisodeContext, history: Sequence[TurnRecord]) -> list[Message]:
        if len(history) >= episode.max_turns:
            raise ValueError(f"turn {len(history)} is past max_turns={episode.max_turns}")
        return _POLICIES[self.config.policy](episode, history, self.config, self.tags)


def truncate_to_token_budget(tokenizer: Any, text: str, budget: int | None) -> tuple[str, bool]:
    """Cut ``text`` to its first ``budget`` tokens (character-exact through the offset mapping).

    Returns ``(text, truncated)``; ``budget=None`` never cuts. The cut ends at a token's last character, so no
    multi-byte character is split; trailing whitespace is dropped (a block's content is stripped, ``protocol``).
    """
    if budget is None:
        return text, False
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    ids = encoding["input_ids"]
    if len(ids) <= budget:
        return text, False
    if "offset_mapping" in encoding:
        offsets = encoding["offset_mapping"]
        # byte-level BPE gives every token of a split multi-byte character that character's whole span: when the
        # first dropped token shares it, the character is dropped too
        cut = min(offsets[budget - 1][1], offsets[budget][0])
        return text[:cut].rstrip(), True
    # slow tokenizers have no offsets: decode the kept ids (may differ from the text in normalisation)
    return tokenizer.decode(ids[:budget], skip_special_tokens=True).rstrip(), True
