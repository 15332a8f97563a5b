"""The one record of a model turn, from the agent loop to the memory-credit plan, and its one renderer.

A turn is recorded once, when ``MemPOAgentLoop`` commits it, as a ``TurnRecord``; that same record is what the
context policies render later contexts from (``context.py``), what every segment carries through verl's
``extra_fields`` and reads back (``segments.py``), and what the memory-credit plan rebuilds s_<t from
(``memory_credit.py``). ``protocol.Turn`` stays the parser's output: what the text says, before the loop knows
its tokens, observation and budget.

Why a module of its own: ``context.py`` renders the record, and imports flow one way (protocol -> context -> agent
loop -> segments -> memory credit), so the record must sit at or above ``context.py``. ``protocol.py`` is the tag
grammar and ``context.py`` the policies; the record (tokens, spans, observation status) is neither, and every stage
below imports it from here.

Notation: spans are half-open token index ranges ``[start, end)`` into the response ids of the turn's segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mempo_verl.protocol import DEFAULT_TAGS, TagSet, ToolCall, render_block, render_information, render_tool_call


@dataclass(frozen=True)
class TurnRecord:
    """One model turn as the agent loop committed it (under the per-turn layout a segment holds exactly one)."""

    turn_index: int
    """0-based index of the turn in its session."""
    text: str
    """The decoded turn, end-of-text strings stripped: shown whole under ``full`` and in s_<t (memory credit)."""
    memory: str | None
    """The ``<mem>`` content as written; None without a ``<mem>`` block (R^M undefined: A^T only, DESIGN §3)."""
    memory_in_context: str | None
    """The memory later contexts show: ``memory`` cut to ``mempo.context.memory_token_budget``."""
    memory_truncated: bool
    """True when ``memory_in_context`` is a cut of ``memory``."""
    think: str | None
    """The ``<think>`` content, or None (shown to later turns under ``context.keep_think``)."""
    action: Literal["tool_call", "answer"] | None
    """The valid turn's action; None for a malformed turn."""
    tool_call: ToolCall | None
    """The parsed tool call, or None; serialised as ``{"name": …, "arguments": {…}}``."""
    answer: str | None
    """The ``<answer>`` content, else None."""
    observation: str | None
    """The environment's reply, unwrapped; None when no tool ran."""
    observation_ok: bool | None
    """False when the tool call failed (reported in the observation text); None when no tool ran."""
    observation_error: str | None
    """Machine-readable failure kind of a failed call (``Observation.error``), else None."""
    observation_metrics: dict[str, float]
    """``Observation.metrics`` of the call (e.g. retrieval latency and attempts); {} when no tool ran."""
    mem_span: tuple[int, int] | None
    """``[start, end)`` of the ``<mem>…</mem>`` block in the segment's response ids, tags included."""
    response_span: tuple[int, int]
    """``[start, end)`` of this turn's generated ids in the segment's response ids."""
    prompt_tokens: int
    """Tokens of the context the turn was generated from."""
    completion_tokens: int
    """Tokens the model generated for the turn."""
    format_errors: tuple[str, ...] = ()
    """``ParseError.kind`` of every format error of the turn."""

    def __post_init__(self) -> None:
        # why: a record rebuilt from JSON with a wrong shape would render a silently wrong context
        if not isinstance(self.text, str):
            raise TypeError(f"TurnRecord.text must be a string, got {type(self.text).__name__}")
        if self.observation is not None and not isinstance(self.observation, str):
            raise TypeError(f"TurnRecord.observation must be a string or None, got {type(self.observation).__name__}")
        if self.tool_call is not None and not isinstance(self.tool_call, ToolCall):
            raise TypeError(f"TurnRecord.tool_call must be a ToolCall or None, got {type(self.tool_call).__name__}")

    @property
    def memory_tokens(self) -> int:
        """Generated tokens of the ``<mem>`` block (tags included); 0 without one."""
        return 0 if self.mem_span is None else self.mem_span[1] - self.mem_span[0]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurnRecord:
        """Rebuild from ``dataclasses.asdict`` of a record after a JSON round trip (lists back to tuples)."""
        data = dict(data)
        for key in ("mem_span", "response_span"):
            if data.get(key) is not None:
                data[key] = tuple(int(i) for i in data[key])
        if data.get("tool_call") is not None:
            data["tool_call"] = ToolCall(**data["tool_call"])
        data["format_errors"] = tuple(data.get("format_errors") or ())
        data["observation_metrics"] = dict(data.get("observation_metrics") or {})
        return cls(**data)


def render_earlier_turn(
    turn: TurnRecord,
    tags: TagSet = DEFAULT_TAGS,
    *,
    verbatim: bool = False,
    keep_think: bool = False,
    keep_call: bool = False,
) -> str:
    """An earlier turn as a later context shows it, then its ``<information>`` on the next line when a tool ran.

    Args:
        turn: the earlier turn.
        tags: tag names.
        verbatim: show the model's own text (the uncompressed history s_<t of memory credit's ``prefix``
            baseline); False: rebuild the turn from its blocks, one per line (the memory policies' retained turn):
            ``<mem>`` as later contexts show it (cut to its budget), ``<think>`` if ``keep_think``, the call if
            ``keep_call``. The flags apply only to the rebuilt form: the verbatim text holds every block as written.
    """
    if verbatim:
        blocks = [turn.text]
    else:
        blocks = []
        if turn.memory_in_context is not None:
            blocks.append(render_block("mem", turn.memory_in_context, tags))
        if keep_think and turn.think is not None:
            blocks.append(render_block("think", turn.think, tags))
        if keep_call and turn.tool_call is not None:
            blocks.append(render_tool_call(turn.tool_call, tags))
    if turn.observation is not None:
        blocks.append(render_information(turn.observation, tags))
    return "\n".join(blocks)
