"""The MemPO turn grammar: parse a model turn into typed fields, and render the canonical text back.

Each model turn is, in this order (MemPO, arXiv 2603.00680, §3; DESIGN §3 "turn format")::

    <mem>full rewrite of the agent's memory</mem>
    <think>reasoning</think>
    <tool_call>{"name": "search", "arguments": {"query": "..."}}</tool_call>      (one action: a tool call
    <answer>final answer</answer>                                                  or the final answer)

The environment's reply is wrapped in ``<information>…</information>`` by us (``render_information``); a model that
writes that block itself has hallucinated an observation, which is an error (``forbidden_block``).

Notation: a *block* is an opening tag, its content and its closing tag; a block's *role* is one of ``BlockRole``
(the field name, independent of the configured tag name); offsets are character offsets into the text passed to
``parse_turn``.

``parse_turn`` never raises on model output: every problem becomes a typed ``ParseError`` and the fields keep
whatever could be recovered, so that the caller can log them.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

Message = dict[str, str]
"""A chat message as the chat template takes it: ``{"role": "system" | "user" | "assistant", "content": str}``
(the context policies build them for each turn, the memory credit for each scoring context)."""

BlockRole = Literal["mem", "think", "tool_call", "answer", "information"]
"""The role of a block; also the key of ``Turn.spans`` and ``Turn.inner_spans``."""

BLOCK_ROLES: tuple[BlockRole, ...] = get_args(BlockRole)

Action = Literal["tool_call", "answer"]
"""What a valid turn asks for: run a tool, or end the episode with an answer."""

ErrorKind = Literal[
    "missing_close_tag",  # a block is opened and never closed, e.g. `<mem>` without `</mem>`
    "missing_open_tag",  # a stray closing tag, e.g. `</think>` with no `<think>` before it
    "duplicate_block",  # a role appears twice: two `<mem>`, two answers, two tool calls
    "both_actions",  # a tool call and an answer in the same turn
    "no_action",  # neither a tool call nor an answer
    "missing_mem",  # no `<mem>` block
    "invalid_tool_json",  # tool call content is not JSON, not an object, has no "name" string, bad "arguments"
    "text_outside_tags",  # non-whitespace text between or around blocks
    "out_of_order",  # `<mem>` must come first, `<think>` before the action
    "nested_tags",  # a tag inside a block, e.g. `<mem> … <think> … </think> … </mem>`
    "empty_answer",  # `<answer>` whose content is only whitespace
    "forbidden_block",  # the model wrote an `<information>` block (the environment's, never the model's)
]
"""One value per class of format error, so that error rates can be logged per kind."""

ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)

DEFAULT_EOS_STRINGS: tuple[str, ...] = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "</s>",
    "<eos>",
)
"""End-of-text strings that a decode with special tokens kept may leave at the end of a turn (Qwen, Llama, Phi,
Mistral, Gemma). Stripped from the end only; anywhere else they are ordinary text."""

# Only these roles are written by the model; `information` is ours.
_MODEL_ROLES: tuple[BlockRole, ...] = ("mem", "think", "tool_call", "answer")
# Position in the expected order; the two actions share a rank because exactly one of them is expected.
_ORDER_RANK: dict[BlockRole, int] = {"mem": 0, "think": 1, "tool_call": 2, "answer": 2}
_TAG_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


@dataclass(frozen=True)
class TagSet:
    """Tag names of the grammar (DESIGN §3: "tag names configurable"). Names are written without brackets.

    Tags match exactly and case-sensitively: ``<mem>`` and ``</mem>``, no attributes and no inner whitespace.
    """

    mem: str = "mem"
    """Memory block, a full rewrite of the agent's memory each turn. Default ``mem`` (paper)."""
    think: str = "think"
    """Reasoning block. Default ``think``."""
    tool_call: str = "tool_call"
    """Tool-call block holding ``{"name": …, "arguments": {…}}``. Default ``tool_call`` (Hermes/Qwen style)."""
    answer: str = "answer"
    """Final-answer block. Default ``answer``."""
    information: str = "information"
    """Environment reply block, rendered by us. Default ``information`` (Search-R1, MEM1)."""

    def __post_init__(self) -> None:
        for role in BLOCK_ROLES:
            name = getattr(self, role)
            if not isinstance(name, str) or not _TAG_NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"TagSet.{role}={name!r} is not a valid tag name: use letters, digits, '_', '.', ':' or '-', "
                    "starting with a letter or '_', without angle brackets"
                )
        names = {role: self.name(role) for role in BLOCK_ROLES}
        if len(set(names.values())) != len(names):
            raise ValueError(f"TagSet names must be distinct, got {names}")

    def name(self, role: BlockRole) -> str:
        """The tag name configured for ``role``."""
        return getattr(self, role)

    def open(self, role: BlockRole) -> str:
        """The opening tag of ``role``, e.g. ``<mem>``."""
        return f"<{self.name(role)}>"

    def close(self, role: BlockRole) -> str:
        """The closing tag of ``role``, e.g. ``</mem>``."""
        return f"</{self.name(role)}>"


DEFAULT_TAGS = TagSet()


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the tool's name and its keyword arguments (a JSON object)."""

    name: str
    arguments: dict = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ToolCall.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.arguments, dict):
            raise TypeError(f"ToolCall.arguments must be a dict, got {type(self.arguments).__name__}")


@dataclass(frozen=True)
class ParseError:
    """One format error in a model turn."""

    kind: ErrorKind
    """The class of error (one of ``ERROR_KINDS``)."""
    message: str
    """What was wrong and where, for logs."""
    position: int | None
    """Character offset in the parsed text where the problem is; ``None`` when it has no place (e.g. missing)."""


@dataclass(frozen=True)
class Turn:
    """A parsed model turn. Fields hold what could be recovered even when the turn has errors.

    Content fields (``mem``, ``think``, ``answer``) are stripped of surrounding whitespace and are ``None`` when
    their block is absent. When a role appears twice, the fields and spans describe its first block.
    """

    mem: str | None = None
    """Memory content, or ``None`` without a ``<mem>`` block (R^M undefined for this turn, DESIGN §3)."""
    think: str | None = None
    """Reasoning content, or ``None`` (the think block is optional)."""
    tool_call: ToolCall | None = None
    """The tool call, or ``None`` when absent or when its JSON is invalid."""
    answer: str | None = None
    """Final-answer content, or ``None`` when absent."""
    spans: dict[str, tuple[int, int]] = field(default_factory=dict, hash=False)
    """Role -> ``(start, end)`` of the whole block, tags included: ``text[start:end] == "<mem>…</mem>"``. A block
    whose closing tag is missing ends where the next tag (or the text) begins."""
    inner_spans: dict[str, tuple[int, int]] = field(default_factory=dict, hash=False)
    """Role -> ``(start, end)`` of the stripped content: ``text[start:end] == turn.mem`` (for ``tool_call``,
    the JSON text)."""
    errors: tuple[ParseError, ...] = ()
    """Every format error found, in text order for tag errors, then structural ones."""

    @property
    def is_valid(self) -> bool:
        """True iff the turn has no format error."""
        return not self.errors

    @property
    def action(self) -> Action | None:
        """``"tool_call"`` or ``"answer"`` for a valid turn; ``None`` for any invalid turn, so that a caller can
        dispatch on it without re-checking validity (a malformed turn ends the episode, DESIGN §3)."""
        if not self.is_valid:
            return None
        return "tool_call" if self.tool_call is not None else "answer"


@dataclass(frozen=True)
class _Tag:
    """One tag occurrence in the text."""

    start: int
    end: int
    role: BlockRole
    closing: bool


@dataclass(frozen=True)
class _Block:
    """One block found by the scanner; ``inner_*`` is the stripped content."""

    role: BlockRole
    start: int
    end: int
    inner_start: int
    inner_end: int


@functools.lru_cache(maxsize=16)
def _tag_regex(tags: TagSet) -> tuple[re.Pattern[str], dict[str, BlockRole]]:
    """Regex matching any opening or closing tag of ``tags``, and tag name -> role."""
    role_of = {tags.name(role): role for role in BLOCK_ROLES}
    alternatives = "|".join(re.escape(name) for name in sorted(role_of, key=len, reverse=True))
    return re.compile(rf"<(/?)({alternatives})>"), role_of


def strip_eos(text: str, eos_strings: tuple[str, ...] = DEFAULT_EOS_STRINGS) -> str:
    """Remove trailing whitespace and known end-of-text strings (repeatedly) from the end of ``text``.

    Only the end is touched, so offsets into the result are offsets into ``text``.
    """
    stripped = text.rstrip()
    while True:
        for eos in eos_strings:
            if eos and stripped.endswith(eos):
                stripped = stripped[: -len(eos)].rstrip()
                break
        else:
            return stripped


def _find_tags(text: str, tags: TagSet) -> list[_Tag]:
    pattern, role_of = _tag_regex(tags)
    return [_Tag(m.start(), m.end(), role_of[m.group(2)], m.group(1) == "/") for m in pattern.finditer(text)]


def _stripped_block(text: str, role: BlockRole, start: int, inner_start: int, inner_end: int, end: int) -> _Block:
    raw = text[inner_start:inner_end]
    lead = len(raw) - len(raw.lstrip())
    content_len = len(raw.strip())
    return _Block(role, start, end, inner_start + lead, inner_start + lead + content_len)


def _next_index(indices: list[int], after: int) -> int | None:
    """The first value in the sorted ``indices`` greater than ``after``, or None."""
    k = bisect.bisect_right(indices, after)
    return indices[k] if k < len(indices) else None


def _read_block(
    text: str, tag_list: list[_Tag], i: int, index: dict[tuple[BlockRole, bool], list[int]], errors: list[ParseError]
) -> tuple[_Block, int]:
    """Read the block opened by ``tag_list[i]``; return it and the index of the next unread tag.

    The grammar is flat, so the block closes at the next closing tag of its role. If that closing tag is missing,
    or the same role is opened again before it, the closing tag is missing and the block ends at the next tag
    (best effort: the content up to there is kept). Any other tag before the closing tag is nested.
    """
    opening = tag_list[i]
    tag = text[opening.start : opening.end]
    j_close = _next_index(index[(opening.role, True)], i)
    j_reopen = _next_index(index[(opening.role, False)], i)
    if j_close is None or (j_reopen is not None and j_reopen < j_close):
        # missing close: the next tag (if any) starts something else, so the block cannot extend past it
        has_next = i + 1 < len(tag_list)
        end = tag_list[i + 1].start if has_next else len(text)
        where = f"the next tag at {end}" if has_next else "the end of the text"
        message = f"{tag} opened at {opening.start} is never closed; its content is read up to {where}"
        errors.append(ParseError("missing_close_tag", message, opening.start))
        return _stripped_block(text, opening.role, opening.start, opening.end, end, end), i + 1
    closing = tag_list[j_close]
    if j_close > i + 1:
        inner = tag_list[i + 1]
        errors.append(
            ParseError(
                "nested_tags",
                f"{text[inner.start : inner.end]} at {inner.start} is inside the {tag} block opened at "
                f"{opening.start}; blocks may not contain tags",
                inner.start,
            )
        )
    return _stripped_block(text, opening.role, opening.start, opening.end, closing.start, closing.end), j_close + 1


def _check_outside(text: str, start: int, end: int, errors: list[ParseError]) -> None:
    """Whitespace between blocks is tolerated; anything else is text outside tags."""
    segment = text[start:end]
    if segment.strip():
        pos = start + len(segment) - len(segment.lstrip())
        snippet = segment.strip()[:40]
        errors.append(ParseError("text_outside_tags", f"text outside any block at {pos}: {snippet!r}", pos))


def _scan(text: str, tags: TagSet) -> tuple[list[_Block], list[ParseError]]:
    """Split ``text`` into blocks; report tag-level errors (missing tags, nesting, text outside tags)."""
    tag_list = _find_tags(text, tags)
    index: dict[tuple[BlockRole, bool], list[int]] = {(r, c): [] for r in BLOCK_ROLES for c in (False, True)}
    for k, tag in enumerate(tag_list):
        index[(tag.role, tag.closing)].append(k)
    blocks: list[_Block] = []
    errors: list[ParseError] = []
    cursor, i = 0, 0
    while i < len(tag_list):
        tag = tag_list[i]
        _check_outside(text, cursor, tag.start, errors)
        if tag.closing:
            errors.append(
                ParseError(
                    "missing_open_tag", f"{text[tag.start : tag.end]} at {tag.start} closes no open block", tag.start
                )
            )
            cursor, i = tag.end, i + 1
            continue
        block, i = _read_block(text, tag_list, i, index, errors)
        blocks.append(block)
        cursor = block.end
    _check_outside(text, cursor, len(text), errors)
    return blocks, errors


def _parse_tool_json(content: str, position: int) -> ToolCall | ParseError:
    """Parse ``{"name": str, "arguments": object}``.

    Tolerated, because real models do it: ``"arguments"`` given as a JSON *string* holding an object (parsed),
    ``"arguments"`` absent (a call without arguments, ``{}``), extra keys (ignored), raw newlines inside strings.
    """
    try:
        # strict=False: models write literal newlines inside JSON strings
        obj = json.loads(content, strict=False)
    except json.JSONDecodeError as exc:
        return ParseError(
            "invalid_tool_json", f"tool call at {position} is not valid JSON: {exc.msg}", position + exc.pos
        )
    if not isinstance(obj, dict):
        return ParseError(
            "invalid_tool_json", f"tool call at {position} must be a JSON object, got {type(obj).__name__}", position
        )
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ParseError(
            "invalid_tool_json", f'tool call at {position} needs a non-empty string "name", got {name!r}', position
        )
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, strict=False)
        except json.JSONDecodeError as exc:
            return ParseError(
                "invalid_tool_json", f'tool call at {position}: "arguments" string is not JSON: {exc.msg}', position
            )
    if not isinstance(arguments, dict):
        return ParseError(
            "invalid_tool_json",
            f'tool call at {position}: "arguments" must be an object, got {type(arguments).__name__}',
            position,
        )
    return ToolCall(name=name, arguments=arguments)


def _first_blocks(blocks: list[_Block], tags: TagSet, errors: list[ParseError]) -> dict[BlockRole, _Block]:
    """The first block of each role; every later one is a duplicate."""
    first: dict[BlockRole, _Block] = {}
    for block in blocks:
        if block.role in first:
            errors.append(
                ParseError(
                    "duplicate_block",
                    f"second {tags.open(block.role)} block at {block.start} (the first is at "
                    f"{first[block.role].start}); a turn has one block per kind",
                    block.start,
                )
            )
        else:
            first[block.role] = block
    return first


def _check_structure(first: dict[BlockRole, _Block], tags: TagSet, errors: list[ParseError]) -> None:
    """Which blocks a turn needs, and their order: <mem>, optional <think>, exactly one action."""
    if "information" in first:
        # the environment writes <information>; a model that does so invents its own observation
        pos = first["information"].start
        errors.append(
            ParseError("forbidden_block", f"{tags.open('information')} at {pos} is written by the environment", pos)
        )
    if "mem" not in first:
        errors.append(ParseError("missing_mem", f"no {tags.open('mem')} block in the turn", None))
    if "tool_call" in first and "answer" in first:
        pos = max(first["tool_call"].start, first["answer"].start)
        message = f"both {tags.open('tool_call')} and {tags.open('answer')} (the second at {pos}); give one action"
        errors.append(ParseError("both_actions", message, pos))
    elif "tool_call" not in first and "answer" not in first:
        message = f"neither {tags.open('tool_call')} nor {tags.open('answer')} in the turn"
        errors.append(ParseError("no_action", message, None))
    _check_order(first, tags, errors)


def _check_order(first: dict[BlockRole, _Block], tags: TagSet, errors: list[ParseError]) -> None:
    ordered = sorted((b for r, b in first.items() if r in _ORDER_RANK), key=lambda b: b.start)
    latest: _Block | None = None
    for block in ordered:
        if latest is not None and _ORDER_RANK[block.role] < _ORDER_RANK[latest.role]:
            errors.append(
                ParseError(
                    "out_of_order",
                    f"{tags.open(block.role)} at {block.start} comes after {tags.open(latest.role)} at "
                    f"{latest.start}; expected {tags.open('mem')}, {tags.open('think')}, then the action",
                    block.start,
                )
            )
        elif latest is None or _ORDER_RANK[block.role] > _ORDER_RANK[latest.role]:
            latest = block


def _content(text: str, first: dict[BlockRole, _Block], role: BlockRole) -> str | None:
    block = first.get(role)
    return None if block is None else text[block.inner_start : block.inner_end]


def _tool_call_field(text: str, first: dict[BlockRole, _Block], errors: list[ParseError]) -> ToolCall | None:
    block = first.get("tool_call")
    if block is None:
        return None
    parsed = _parse_tool_json(text[block.inner_start : block.inner_end], block.inner_start)
    if isinstance(parsed, ParseError):
        errors.append(parsed)
        return None
    return parsed


def parse_turn(text: str, tags: TagSet = DEFAULT_TAGS, *, eos_strings: tuple[str, ...] = DEFAULT_EOS_STRINGS) -> Turn:
    """Parse one model turn. Never raises on model output; problems are returned in ``Turn.errors``.

    Tolerated, because real models do it: whitespace around and between blocks; whitespace inside blocks
    (stripped from the content); known end-of-text strings at the end (``eos_strings``); tool-call
    ``"arguments"`` given as a JSON string holding an object (parsed), or absent (``{}``); extra keys in the
    tool-call object (ignored); raw newlines inside JSON strings. A non-string ``text`` (None, NaN) parses as "".

    Recovery rules: a role that appears twice keeps its first block; a block whose closing tag is missing (or
    whose tag is opened again before it closes) ends at the next tag; tags inside a properly closed block are
    ``nested_tags`` and the block keeps them as content. Offsets in spans and errors index ``text``.

    Args:
        text: the decoded model turn.
        tags: tag names of the grammar.
        eos_strings: end-of-text strings removed from the end before validating.

    Returns:
        The turn: content fields, spans (whole block and stripped content) and every format error.
    """
    if not isinstance(text, str):
        # None or NaN (a missing value in a dataframe) is no turn at all: parse it as empty text, which reports
        # missing <mem> and no action instead of crashing the caller
        text = ""
    # 1. strip end-of-text strings; the text keeps its offsets because only its end is cut
    body = strip_eos(text, eos_strings)
    # 2. split into blocks (tag-level errors)
    blocks, errors = _scan(body, tags)
    # 3. one block per role, the required blocks, their order
    first = _first_blocks(blocks, tags, errors)
    _check_structure(first, tags, errors)
    # 4. fields, best effort
    tool_call = _tool_call_field(body, first, errors)
    answer = _content(body, first, "answer")
    if answer == "":
        pos = first["answer"].start
        errors.append(ParseError("empty_answer", f"{tags.open('answer')} at {pos} is empty", pos))
    return Turn(
        mem=_content(body, first, "mem"),
        think=_content(body, first, "think"),
        tool_call=tool_call,
        answer=answer,
        spans={role: (b.start, b.end) for role, b in first.items()},
        inner_spans={role: (b.inner_start, b.inner_end) for role, b in first.items()},
        errors=tuple(errors),
    )


def _check_renderable(role: BlockRole, content: str, tags: TagSet) -> None:
    """Refuse content that would not parse back: it may not contain a tag of the set."""
    if not isinstance(content, str):
        raise TypeError(f"{role} content must be a string, got {type(content).__name__}")
    pattern, _ = _tag_regex(tags)
    match = pattern.search(content)
    if match is not None:
        raise ValueError(
            f"{role} content contains the tag {match.group(0)!r} at {match.start()}; it would not parse back as one "
            "block"
        )


def render_block(role: BlockRole, content: str, tags: TagSet = DEFAULT_TAGS) -> str:
    """``<tag>content</tag>`` for a model block; raises ValueError if ``content`` contains a tag of the set."""
    if role not in _MODEL_ROLES:
        raise ValueError(f"render_block renders model blocks {_MODEL_ROLES}, got {role!r}")
    _check_renderable(role, content, tags)
    return f"{tags.open(role)}{content}{tags.close(role)}"


def render_tool_call(tool_call: ToolCall, tags: TagSet = DEFAULT_TAGS) -> str:
    """``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (JSON, non-ASCII kept as is).

    If the JSON would contain a tag of the set (a query mentioning ``</tool_call>``), every ``<`` is written as the
    JSON escape ``\\u003c``, which parses back to the same string; otherwise the JSON is left readable.
    """
    payload = json.dumps({"name": tool_call.name, "arguments": tool_call.arguments}, ensure_ascii=False)
    pattern, _ = _tag_regex(tags)
    if pattern.search(payload):
        # `<` only occurs inside JSON strings, where \u003c is the same character
        payload = payload.replace("<", "\\u003c")
    return f"{tags.open('tool_call')}{payload}{tags.close('tool_call')}"


def render_answer(answer: str, tags: TagSet = DEFAULT_TAGS) -> str:
    """``<answer>answer</answer>``, as the model writes its final answer (also used to score gold answers)."""
    return render_block("answer", answer, tags)


def render_information(text: str, tags: TagSet = DEFAULT_TAGS) -> str:
    """``<information>text</information>``: the environment's reply, shown to the model in the next context.

    The text is inserted verbatim, without checks: it comes from the environment (retrieved documents), which we do
    not control, and it is never parsed back.
    """
    return f"{tags.open('information')}{text}{tags.close('information')}"


def render_turn(
    mem: str,
    think: str | None,
    tool_call: ToolCall | None = None,
    answer: str | None = None,
    tags: TagSet = DEFAULT_TAGS,
) -> str:
    """The canonical text of a turn: ``<mem>…</mem>\\n<think>…</think>\\n`` then the tool call or the answer.

    ``parse_turn`` reads it back with the same fields (content compared after ``str.strip``, since whitespace at
    the edges of a block is not content). ``think=None`` omits the think block. Exactly one of ``tool_call`` and
    ``answer`` must be given; content containing a tag of the set raises ValueError.
    """
    if (tool_call is None) == (answer is None):
        raise ValueError("render_turn needs exactly one of tool_call and answer")
    parts = [render_block("mem", mem, tags)]
    if think is not None:
        parts.append(render_block("think", think, tags))
    parts.append(render_tool_call(tool_call, tags) if tool_call is not None else render_answer(answer, tags))
    return "\n".join(parts)
