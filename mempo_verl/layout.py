"""Segment layouts: how one session's turns become token ids and training rows, chosen once from the context policy.

``context.POLICY_LAYOUTS`` names each policy's layout; ``MemPOAgentLoop`` builds that layout once per session and
asks it for every turn's prompt ids (``next_prompt``), hands it every generation (``append``), and takes the rows
from it at session end (``rows``). Nothing else in the loop knows which layout runs.

    per_turn   (``memory``, ``mem1``) turn t's prompt is the chat template of the policy's rewritten context; each
               turn is its own row: prompt = the ids the model saw, response = exactly its generated ids (mask 1).
               The prompt is bounded by ``rollout.prompt_length``, each turn's generation by ``response_length``.
    sequence   (``full``, ReAct) one growing sequence: turn t's prompt = the ids already sent + turn t-1's generated
               ids + the new context tokens, through verl's Continuous Token builder (as ``ToolAgentLoop`` does);
               one row for the trajectory: prompt = the first turn's prompt, response = every later token, mask 1
               on generated and 0 on context tokens. The whole response is bounded by ``response_length``.

Notation: t is the 0-based turn index; ``used`` is how many response ids of the turn's row precede its generation
(0 under ``per_turn``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mempo_verl.context import SegmentLayoutName
from mempo_verl.protocol import Message


@dataclass(frozen=True)
class TurnPrompt:
    """What the layout gives the loop for turn t."""

    prompt_ids: list[int]
    """The ids sent to ``generate`` (under ``sequence``: the whole sequence so far)."""
    response_start: int
    """Where the turn's generated ids start in its row's response ids (``used``; 0 under ``per_turn``)."""
    max_tokens: int
    """The row's response budget left for the turn: ``response_length - response_start``."""
    fits: bool
    """False when the context does not fit its budget; the layout then kept nothing of it."""


@dataclass(frozen=True)
class Row:
    """One training row's token ids (one ``AgentLoopOutput``)."""

    turns: tuple[int, ...]
    """Indices of the turns whose generated ids are in the response: one under ``per_turn``, all under ``sequence``."""
    prompt_ids: list[int]
    """(P,) the row's prompt."""
    response_ids: list[int]
    """(R,) generated ids (and, under ``sequence``, the context tokens between turns)."""
    response_mask: list[int]
    """(R,) 1 on generated ids, 0 on context tokens."""
    response_logprobs: list[float] | None
    """(R,) rollout log-probs, 0.0 on context tokens; None when the server gave none."""


class SegmentLayout(ABC):
    """One session's layout: prompt building, appending the generated ids, grouping turns into rows.

    Args:
        token_builder: verl's Continuous Token builder of the agent loop (``build_initial_tokens``,
            ``merge_context_tokens``, ``align_response_metadata``).
        tools: the tool schemas the chat template receives.
        prompt_length, response_length: verl's ``rollout.prompt_length`` / ``response_length``.
    """

    name: ClassVar[SegmentLayoutName]

    def __init__(self, token_builder: Any, tools: Sequence[dict], prompt_length: int, response_length: int) -> None:
        self.token_builder = token_builder
        self.tools = list(tools)
        self.prompt_length = prompt_length
        self.response_length = response_length

    def _initial_prompt(self, messages: list[Message]) -> TurnPrompt:
        """A prompt of its own: the chat template of ``messages``, bounded by ``prompt_length``."""
        ids = list(self.token_builder.build_initial_tokens(messages, tools=self.tools))
        return TurnPrompt(ids, 0, self.response_length, fits=len(ids) <= self.prompt_length)

    @abstractmethod
    def next_prompt(self, messages: list[Message]) -> TurnPrompt:
        """Turn t's prompt from the context policy's messages for turn t."""

    @abstractmethod
    def append(self, prompt: TurnPrompt, response_ids: list[int], logprobs: list[float] | None) -> None:
        """Record one turn's generation (``response_ids`` and their rollout log-probs) for its prompt."""

    @abstractmethod
    def rows(self) -> list[Row]:
        """The session's rows, in order, covering every appended turn once."""


class PerTurnLayout(SegmentLayout):
    """``per_turn``: every turn's prompt is rendered afresh; one row per turn."""

    name = "per_turn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: list[Row] = []

    def next_prompt(self, messages: list[Message]) -> TurnPrompt:
        return self._initial_prompt(messages)

    def append(self, prompt: TurnPrompt, response_ids: list[int], logprobs: list[float] | None) -> None:
        self._rows.append(
            Row(
                turns=(len(self._rows),),
                prompt_ids=list(prompt.prompt_ids),
                response_ids=list(response_ids),
                response_mask=[1] * len(response_ids),
                response_logprobs=list(logprobs) if logprobs is not None else None,
            )
        )

    def rows(self) -> list[Row]:
        return list(self._rows)


@dataclass
class _Sequence:
    """The one growing sequence of the ``sequence`` layout."""

    prompt_ids: list[int]
    """The first turn's prompt: the row's prompt."""
    token_ids: list[int]
    """Prompt + every token since (generated and context): what the next ``generate`` is sent."""
    response_mask: list[int] = field(default_factory=list)
    """1 on generated tokens, 0 on context tokens, for ``token_ids[len(prompt_ids):]``."""
    response_logprobs: list[float] | None = field(default_factory=list)
    """Rollout log-probs aligned with ``response_mask`` (0.0 on context tokens); None when the server gave none."""


class SequenceLayout(SegmentLayout):
    """``sequence``: one growing sequence, one row for the trajectory."""

    name = "sequence"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sequence: _Sequence | None = None
        self._turns = 0

    def next_prompt(self, messages: list[Message]) -> TurnPrompt:
        if self._sequence is None:
            prompt = self._initial_prompt(messages)
            if prompt.fits:
                self._sequence = _Sequence(prompt_ids=list(prompt.prompt_ids), token_ids=list(prompt.prompt_ids))
            return prompt
        merged = self._merge_context(self._sequence, messages)
        used = len(merged.token_ids) - len(self._sequence.prompt_ids)
        # why: the growing response must leave room to generate, and the first prompt must still fit
        fits = used < self.response_length and len(merged.token_ids) - used <= self.prompt_length
        if fits:
            # only a sequence that fits replaces the old one: tokens never sent must not enter the row
            self._sequence = merged
        return TurnPrompt(list(merged.token_ids), used, self.response_length - used, fits)

    def _merge_context(self, sequence: _Sequence, messages: list[Message]) -> _Sequence:
        """The sequence with the new user message's tokens appended (verl's Continuous Token merge).

        The policy's messages for turn t extend turn t-1's by [assistant, user]; ``messages[:-1]`` is what the
        sequence already renders, so only the user message (and the chat template's boundary) is tokenized.
        """
        builder = self.token_builder
        merge = builder.merge_context_tokens(messages[:-1], messages, sequence.token_ids, tools=self.tools)
        mask, logprobs = builder.align_response_metadata(merge, sequence.response_mask, sequence.response_logprobs)
        return _Sequence(sequence.prompt_ids, list(merge.token_ids), mask, logprobs)

    def append(self, prompt: TurnPrompt, response_ids: list[int], logprobs: list[float] | None) -> None:
        """The generated ids join the sequence verbatim, mask 1, with their log-probs."""
        sequence = self._sequence
        sequence.token_ids.extend(response_ids)
        sequence.response_mask.extend([1] * len(response_ids))
        if sequence.response_logprobs is not None and logprobs is not None:
            sequence.response_logprobs.extend(logprobs)
        else:
            # why: one turn without log-probs leaves the sequence without aligned log-probs
            sequence.response_logprobs = None
        self._turns += 1

    def rows(self) -> list[Row]:
        if self._sequence is None:
            return []
        sequence = self._sequence
        return [
            Row(
                turns=tuple(range(self._turns)),
                prompt_ids=list(sequence.prompt_ids),
                response_ids=sequence.token_ids[len(sequence.prompt_ids) :],
                response_mask=list(sequence.response_mask),
                response_logprobs=list(sequence.response_logprobs) if sequence.response_logprobs is not None else None,
            )
        ]


LAYOUTS: dict[SegmentLayoutName, type[SegmentLayout]] = {"per_turn": PerTurnLayout, "sequence": SequenceLayout}
"""The layout class of each name (``context.POLICY_LAYOUTS`` picks the name)."""
