"""Test helper: a ``turns.TurnRecord`` built from only the fields a test is about."""

from __future__ import annotations

from typing import Any

from mempo_verl.turns import TurnRecord


def turn_record(turn_index: int = 0, text: str = "", **fields: Any) -> TurnRecord:
    """A committed turn with ``fields`` set and every other field neutral: no memory, no tool call, no observation,
    empty spans, zero tokens. Tests of context rendering and memory credit name only what they read."""
    values: dict[str, Any] = dict(
        memory=None,
        memory_in_context=None,
        memory_truncated=False,
        think=None,
        action=None,
        tool_call=None,
        answer=None,
        observation=None,
        observation_ok=None,
        observation_error=None,
        observation_metrics={},
        mem_span=None,
        response_span=(0, 0),
        prompt_tokens=0,
        completion_tokens=0,
    )
    values.update(fields)
    return TurnRecord(turn_index=turn_index, text=text, **values)
