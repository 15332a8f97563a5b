"""One evaluated example as a record, its per-turn trace, and the append-only JSONL file that makes runs resumable.

``traces.jsonl`` holds one JSON line per attempt at an example (``EvalRecord.to_json``)::

    {"key": "memory|mempo_sample/k2/3", "method": "memory", "dataset": "mempo_sample", "objectives": 2,
     "example_id": "mempo_sample/k2/3", "status": "ok" | "error", "error": null | {"kind", "message", "turn"},
     "seed": 1234, "metrics": {...ExampleMetrics...}, "questions": [...], "ground_truth": ..., "gold_answer": "...",
     "turns": [{"turn", "context", "output", "output_ids", "blocks": {"mem", "think", "tool_call", "answer"},
                "format_errors", "observation", "prompt_tokens", "completion_tokens", "memory_tokens", ...}],
     "backend": {"requests": 2, "retokenized": 0}, "seconds": 1.7}

Each line is written whole and flushed before the next example starts: a crash loses at most the line being
written, which the reader skips. The last line of a key wins, so an example that failed and later succeeded reads
as succeeded; a run resumes by skipping the keys whose last line is ``ok``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mempo_verl.eval.backends import BackendErrorKind
from mempo_verl.eval.metrics import ExampleMetrics
from mempo_verl.protocol import DEFAULT_TAGS, TagSet, parse_turn
from mempo_verl.segments import Segment, decode_ids
from mempo_verl.values import as_python

logger = logging.getLogger(__name__)

ErrorKind = BackendErrorKind | Literal["bad_example", "episode_error"]
"""Why an example has no result: a backend failure (``BackendErrorKind``), a row the environment cannot read
(missing questions or ground truth), or any other exception inside the episode (e.g. a first prompt over
``prompt_length``)."""

Status = Literal["ok", "error"]


@dataclass(frozen=True)
class ExampleError:
    """Why an example failed."""

    kind: ErrorKind
    message: str
    turn: int | None = None
    """The 0-based turn whose request failed (backend errors); None otherwise."""


@dataclass(frozen=True)
class EvalRecord:
    """One attempt at one (method, example)."""

    key: str
    """``{method}|{example_id}``: the resume key."""
    method: str
    dataset: str
    objectives: int
    """k; 0 when the row does not say."""
    example_id: str
    status: Status
    seed: int
    """The episode's sampling seed (turn t uses seed + t)."""
    metrics: ExampleMetrics | None = None
    """None when the example failed."""
    error: ExampleError | None = None
    questions: tuple[str, ...] = ()
    ground_truth: Any = None
    gold_answer: str | None = None
    turns: tuple[dict[str, Any], ...] = ()
    """The per-turn trace (``turn_traces``)."""
    backend: Mapping[str, int] = field(default_factory=dict)
    """Requests made and how many answers had to be re-tokenized."""
    tools: tuple[dict[str, Any], ...] = ()
    """The environment's tool schemas (what the chat template showed)."""
    seconds: float = 0.0
    """Wall-clock time of the episode (not part of any summary: it depends on the machine and its load)."""

    def to_json(self) -> str:
        return json.dumps(as_python(asdict(self)), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> EvalRecord:
        data = json.loads(line)
        if data.get("metrics") is not None:
            m = dict(data["metrics"])
            m.update(em=tuple(m["em"]), f1=tuple(m["f1"]), memory_tokens=tuple(m["memory_tokens"]))
            data["metrics"] = ExampleMetrics(**m)
        if data.get("error") is not None:
            data["error"] = ExampleError(**data["error"])
        data["questions"] = tuple(data.get("questions") or ())
        data["turns"] = tuple(data.get("turns") or ())
        data["tools"] = tuple(data.get("tools") or ())
        return cls(**data)


def turn_traces(
    outputs: Sequence[Any],
    segments: Sequence[Segment],
    tokenizer: Any,
    tags: TagSet = DEFAULT_TAGS,
    contexts: Sequence[Sequence[Mapping[str, str]]] | None = None,
):
    """Every turn of an episode: the exact context it was generated from, its output, parsed blocks and tokens.

    Args:
        outputs: the episode's ``AgentLoopOutput``s; segments: their ``Segment``s (same order).
        contexts: each turn's chat messages (``data.sft.turn_messages``), stored as ``messages``; None: not stored.
    """
    traces = []
    for output, segment in zip(outputs, segments, strict=True):
        for turn in segment.turns:
            start, end = turn.response_span
            # under `full` the turn's context is the prompt plus everything the sequence held before its generation
            context_ids = list(output.prompt_ids) + list(output.response_ids[:start])
            parsed = parse_turn(turn.text, tags)
            traces.append(
                {
                    "turn": turn.turn_index,
                    "context": decode_ids(tokenizer, context_ids),
                    "output": turn.text,
                    "output_ids": [int(i) for i in output.response_ids[start:end]],
                    "blocks": {
                        "mem": parsed.mem,
                        "think": parsed.think,
                        "tool_call": asdict(turn.tool_call) if turn.tool_call is not None else None,
                        "answer": parsed.answer,
                    },
                    "action": turn.action,
                    "format_errors": list(turn.format_errors),
                    "observation": turn.observation,
                    "observation_ok": turn.observation_ok,
                    "observation_error": turn.observation_error,
                    "memory_in_context": turn.memory_in_context,
                    "memory_truncated": turn.memory_truncated,
                    "prompt_tokens": turn.prompt_tokens,
                    "completion_tokens": turn.completion_tokens,
                    "memory_tokens": turn.memory_tokens,
                }
            )
            if contexts is not None:
                traces[-1]["messages"] = [dict(m) for m in contexts[len(traces) - 1]]
    return traces


class RecordStore:
    """``traces.jsonl``: append-only, one ``EvalRecord`` per line, flushed and synced per record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.skipped_lines = 0
        """Lines ``load`` could not read (a crash mid-write leaves at most one)."""

    def load(self) -> dict[str, EvalRecord]:
        """The last record of each key, in first-seen key order; unreadable lines are skipped and counted."""
        records: dict[str, EvalRecord] = {}
        self.skipped_lines = 0
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = EvalRecord.from_json(line)
                except (ValueError, TypeError, KeyError) as exc:
                    self.skipped_lines += 1
                    logger.warning("%s:%d: unreadable record skipped (%s)", self.path, line_no, exc)
                    continue
                records[record.key] = record
        return records

    def append(self, record: EvalRecord) -> None:
        """Write one line, flushed and fsynced, after mending a last line a crash left without its newline."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(("\n" if needs_newline else "") + record.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
