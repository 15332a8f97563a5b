"""Answer scoring: normalisation, exact match, token F1, multi-objective scores, format validity, verl reward.

The trajectory reward R^T of MemPO (arXiv 2603.00680) is 1 iff the final answer matches the gold answer of every
objective (normalised exact match against any alias) and the trajectory's format is valid (DESIGN §3 "R^T");
``em_mean``, ``f1_mean`` and MEM1's summed ``em_sum`` are options. Answers are compared after the official SQuAD
v1.1 normalisation (``AnswerNormalization``; Unicode folding is the ``unicode`` option).

Notation: ``k`` objectives per question (MEM1-style composition of k questions, DESIGN §4); golds are
``list[list[str]]``, one alias list per objective; a k-objective answer is written ``"a1; a2; …; ak"``.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mempo_verl.protocol import DEFAULT_TAGS, TagSet, Turn, parse_turn
from mempo_verl.values import as_python

RewardMode = Literal["all_em", "em_mean", "f1_mean", "em_sum"]
"""How per-objective scores become one reward: ``all_em`` (paper, default), ``em_mean``, ``f1_mean``, ``em_sum``."""

REWARD_MODES: tuple[RewardMode, ...] = get_args(RewardMode)

AnswerNormalization = Literal["squad", "unicode"]
"""How answers are normalised before EM and F1 (DESIGN §3 "answer matching"):

squad    the official SQuAD v1.1 ``normalize_answer`` byte for byte: lower-case, ``string.punctuation`` removed, the
         articles a/an/the removed, whitespace collapsed; figures compare with the MEM1 / Search-R1 / MemPO tables
         (default)
unicode  Unicode folding first (NFKC, casefold, accents dropped) and every Unicode punctuation character removed,
         so "Beyonce" matches "Beyoncé" and curly quotes count as punctuation
"""

ANSWER_NORMALIZATIONS: tuple[AnswerNormalization, ...] = get_args(AnswerNormalization)

OBJECTIVE_SEPARATOR = ";"
"""Separator of the per-objective answers in a k-objective answer (MEM1)."""

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ----------------------------------------------------------------------------------------------- normalisation


def _is_missing(value: Any) -> bool:
    """None or a float NaN (how a dataframe spells a missing value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_punctuation(ch: str) -> bool:
    # ASCII punctuation as in the SQuAD script (it includes symbols such as $ + < = > ^ ` | ~), plus every Unicode
    # punctuation character (curly quotes, dashes, guillemets, CJK full stops)
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def _fold_unicode(s: str) -> str:
    """NFKC, casefold, then drop combining marks (accents): ``"Ångström"`` -> ``"angstrom"``."""
    # NFKC first: full-width letters, ligatures and compatibility forms become their plain equivalents
    s = unicodedata.normalize("NFKC", s).casefold()
    # NFD splits accented letters into base + combining mark; the marks (category Mn) are dropped so that a model
    # writing "Beyonce" matches the gold "Beyoncé"
    s = "".join(ch for ch in unicodedata.normalize("NFD", s) if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", s)


def _squad_normalize(s: str) -> str:
    """The official SQuAD v1.1 evaluation script's ``normalize_answer``: lower, remove_punc, remove_articles,
    white_space_fix, in that order (``"The  Eiffel-Tower!"`` -> ``"eiffeltower"``; accents are kept)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _ASCII_PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _unicode_normalize(s: str) -> str:
    """SQuAD's steps with Unicode folding (NFKC, casefold, accents removed) for ``lower`` and every Unicode ``P*``
    character removed with the ASCII punctuation (deleted without a space, as in SQuAD).

    On ASCII input this equals SQuAD. The folding applies to prediction and gold alike, so it only makes matching
    coarser: accents and compatibility forms never decide a match. For scripts whose vowel signs are combining
    marks (e.g. Devanagari) the comparison is coarser still, symmetrically.
    """
    s = _fold_unicode(s)
    s = "".join(ch for ch in s if not _is_punctuation(ch))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


_NORMALIZERS: dict[AnswerNormalization, Callable[[str], str]] = {
    "squad": _squad_normalize,
    "unicode": _unicode_normalize,
}


def validate_normalization(normalization: str) -> AnswerNormalization:
    """Return ``normalization`` if it is known; otherwise raise ValueError listing the allowed ones."""
    if not isinstance(normalization, str) or normalization not in _NORMALIZERS:
        raise ValueError(f"unknown answer normalization {normalization!r}; allowed: {', '.join(ANSWER_NORMALIZATIONS)}")
    return normalization  # type: ignore[return-value]


def normalize_answer(s: str, normalization: AnswerNormalization = "squad") -> str:
    """Normalise an answer for EM / F1, see ``AnswerNormalization`` (default: the official SQuAD v1.1 rules)."""
    if not isinstance(s, str):
        raise TypeError(f"normalize_answer takes a string, got {type(s).__name__}: {s!r}")
    return _NORMALIZERS[validate_normalization(normalization)](s)


# ----------------------------------------------------------------------------------------------- one objective


def _check_aliases(golds: Sequence[str]) -> None:
    if isinstance(golds, str) or not isinstance(golds, Sequence):
        raise TypeError(f"golds must be a list of alias strings, got {type(golds).__name__}: {golds!r}")
    if len(golds) == 0:
        raise ValueError("golds is empty: each objective needs at least one gold alias")
    bad = [g for g in golds if not isinstance(g, str)]
    if bad:
        raise TypeError(f"gold aliases must be strings, got {bad!r}")


def _prediction_text(prediction: Any) -> str:
    """The prediction as text: None or NaN (no answer) is "", any other non-string is a caller bug."""
    if _is_missing(prediction):
        return ""
    if not isinstance(prediction, str):
        raise TypeError(f"a prediction must be a string or None, got {type(prediction).__name__}: {prediction!r}")
    return prediction


def exact_match(prediction: str | None, golds: Sequence[str], normalization: AnswerNormalization = "squad") -> float:
    """1.0 iff the normalised prediction equals the normalised form of any gold alias, else 0.0.

    An empty prediction (``None``, or empty after normalisation) scores 0.0 even against a gold that normalises to
    empty (e.g. ``"the"``): saying nothing is never a correct answer, so a policy cannot learn to answer blank.
    Raises ValueError if ``golds`` is empty.
    """
    _check_aliases(golds)
    pred = normalize_answer(_prediction_text(prediction), normalization)
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(g, normalization) for g in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    """F1 of the token multisets: 2PR / (P + R), 0 when nothing is shared."""
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: Sequence[str], normalization: AnswerNormalization = "squad") -> float:
    """SQuAD token-level F1 of the normalised answers, the maximum over gold aliases.

    An empty prediction scores 0.0, including against an empty gold (SQuAD would give 1.0 there; see
    ``exact_match`` for why). Raises ValueError if ``golds`` is empty.
    """
    _check_aliases(golds)
    pred_tokens = normalize_answer(_prediction_text(prediction), normalization).split()
    if not pred_tokens:
        return 0.0
    return max(_token_f1(pred_tokens, normalize_answer(g, normalization).split()) for g in golds)


# ----------------------------------------------------------------------------------------------- k objectives


@dataclass(frozen=True)
class AnswerScore:
    """The score of one (possibly multi-objective) answer."""

    em: tuple[float, ...]
    """Exact match per objective, length k; an objective with no answer part scores 0."""
    f1: tuple[float, ...]
    """Token F1 per objective, length k."""
    score: float
    """The reward under ``mode`` (format validity is not applied here; see ``compute_score``)."""
    mode: RewardMode
    """The reward mode used."""
    parts: tuple[str, ...]
    """The prediction split into per-objective answers (empty for no prediction)."""
    num_objectives: int
    """k, the number of gold objectives."""

    @property
    def count_mismatch(self) -> bool:
        """True iff the prediction has a different number of parts than there are objectives."""
        return len(self.parts) != self.num_objectives


def split_objectives(prediction: str | None, num_objectives: int) -> tuple[str, ...]:
    """Split a k-objective answer on ``;`` and strip each part.

    With one objective the answer is not split: a single-objective question never asked for a ``;`` list, so a
    ``;`` inside is part of the answer (and a gold alias containing one stays reachable). Trailing empty parts are
    dropped (``"a; b;"`` is two parts), because a trailing separator is punctuation, not an objective.
    """
    if _is_missing(prediction):
        return ()
    text = _prediction_text(prediction)
    if num_objectives == 1:
        return (text.strip(),)
    parts = [p.strip() for p in text.split(OBJECTIVE_SEPARATOR)]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return tuple(parts)


def _all_em(em: tuple[float, ...], f1: tuple[float, ...], count_ok: bool) -> float:
    """R^T (paper): 1{k parts and EM_i = 1 for every objective i}."""
    # no extra answers either: a shotgun list of guesses must not pass
    return float(count_ok and all(e == 1.0 for e in em))


def _em_mean(em: tuple[float, ...], f1: tuple[float, ...], count_ok: bool) -> float:
    """(1/k) * sum_i EM_i."""
    return sum(em) / len(em)


def _f1_mean(em: tuple[float, ...], f1: tuple[float, ...], count_ok: bool) -> float:
    """(1/k) * sum_i F1_i."""
    return sum(f1) / len(f1)


def _em_sum(em: tuple[float, ...], f1: tuple[float, ...], count_ok: bool) -> float:
    """sum_i EM_i: MEM1's multi-objective reward, the number of objectives answered right (range 0..k)."""
    return float(sum(em))


_MODE_FNS: dict[RewardMode, Callable[[tuple[float, ...], tuple[float, ...], bool], float]] = {
    "all_em": _all_em,
    "em_mean": _em_mean,
    "f1_mean": _f1_mean,
    "em_sum": _em_sum,
}


def validate_reward_mode(mode: str) -> RewardMode:
    """Return ``mode`` if it is a known reward mode; otherwise raise ValueError listing the allowed modes."""
    if not isinstance(mode, str) or mode not in _MODE_FNS:
        raise ValueError(f"unknown reward mode {mode!r}; allowed: {', '.join(REWARD_MODES)}")
    return mode  # type: ignore[return-value]


def _check_golds(golds: Sequence[Sequence[str]]) -> None:
    hint = "use golds_from_ground_truth to normalise a dataset's ground truth"
    if isinstance(golds, str) or not isinstance(golds, Sequence) or len(golds) == 0:
        raise ValueError(f"golds must be a non-empty list of alias lists (one per objective), got {golds!r}; {hint}")
    if any(isinstance(aliases, str) for aliases in golds):
        # a flat list of strings would silently be read as k one-character alias lists
        raise TypeError(f"golds must be a list of alias lists, got a list of strings {golds!r}; {hint}")
    for aliases in golds:
        _check_aliases(aliases)


def score_answer(
    prediction: str | None,
    golds: Sequence[Sequence[str]],
    mode: RewardMode = "all_em",
    normalization: AnswerNormalization = "squad",
) -> AnswerScore:
    """Score a k-objective answer ``"a1; …; ak"`` against ``golds`` (k alias lists).

    Objective i is scored on part i. A wrong number of parts is recorded (``count_mismatch``): objectives without
    a part score 0, parts beyond k are ignored by the per-objective scores, and ``all_em`` is 0 (the answer did
    not answer exactly the k questions). The other modes only see the per-objective scores.

    Args:
        prediction: the final answer text, or None when there is none (every objective scores 0).
        golds: ``golds[i]`` is the alias list of objective i.
        mode: one of ``REWARD_MODES``.
        normalization: one of ``ANSWER_NORMALIZATIONS`` (default ``squad``).
    """
    fn = _MODE_FNS[validate_reward_mode(mode)]
    validate_normalization(normalization)
    _check_golds(golds)
    parts = split_objectives(prediction, len(golds))
    padded = list(parts[: len(golds)]) + [None] * (len(golds) - len(parts))
    em = tuple(exact_match(p, g, normalization) for p, g in zip(padded, golds, strict=True))
    f1 = tuple(f1_score(p, g, normalization) for p, g in zip(padded, golds, strict=True))
    return AnswerScore(
        em=em,
        f1=f1,
        score=fn(em, f1, len(parts) == len(golds)),
        mode=mode,
        parts=parts,
        num_objectives=len(golds),
    )


# ----------------------------------------------------------------------------------------------- ground truth


def _alias(value: Any) -> str:
    value = as_python(value)
    if _is_missing(value):
        raise ValueError(f"ground truth contains a missing value ({value!r}) where an answer string was expected")
    if isinstance(value, int) and not isinstance(value, bool):
        # numeric answers ("1990") are sometimes stored as integers
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"a gold answer must be a string or an integer, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError("ground truth contains an empty gold answer, which no prediction can match")
    return value


def golds_from_ground_truth(ground_truth: Any) -> list[list[str]]:
    """Normalise a dataset's ground truth to ``golds[objective][alias]``.

    Accepted shapes (numpy arrays from parquet count as lists):
      - ``"Paris"``: one objective, one alias -> ``[["Paris"]]``;
      - ``["Paris", "City of Paris"]``: one objective, aliases -> ``[["Paris", "City of Paris"]]``;
      - ``[["Paris"], ["1889", "in 1889"]]``: k objectives, each with its aliases;
      - ``{"target": <any of the above>}``: Search-R1 / FlashRAG rows.

    Raises ValueError or TypeError naming the problem for None/NaN, empty lists, empty answers, a list mixing
    strings and lists (ambiguous: aliases or objectives?), or a dict without ``"target"``.
    """
    ground_truth = as_python(ground_truth)
    if _is_missing(ground_truth):
        raise ValueError(f"ground_truth is missing ({ground_truth!r}); every row needs a gold answer")
    if isinstance(ground_truth, Mapping):
        if "target" not in ground_truth:
            raise ValueError(f"a dict ground_truth needs a 'target' key, got keys {sorted(ground_truth)}")
        return golds_from_ground_truth(ground_truth["target"])
    if isinstance(ground_truth, (str, int)) and not isinstance(ground_truth, bool):
        return [[_alias(ground_truth)]]
    if not isinstance(ground_truth, (list, tuple)):
        raise TypeError(f"unsupported ground_truth type {type(ground_truth).__name__}: {ground_truth!r}")
    items = [as_python(item) for item in ground_truth]
    if not items:
        raise ValueError("ground_truth is an empty list; every row needs a gold answer")
    nested = [isinstance(item, (list, tuple)) for item in items]
    if all(nested):
        return [_objective_aliases(item) for item in items]
    if any(nested):
        raise ValueError(
            f"ground_truth {ground_truth!r} mixes strings and lists; use a list of aliases (one objective) or a "
            "list of alias lists (one per objective)"
        )
    return [[_alias(item) for item in items]]


def _objective_aliases(aliases: list | tuple) -> list[str]:
    if not aliases:
        raise ValueError("an objective in ground_truth has no aliases")
    return [_alias(a) for a in aliases]


# ----------------------------------------------------------------------------------------------- trajectories


def trajectory_format_valid(turns: Sequence[Turn]) -> bool:
    """True iff every turn parsed without error and the last turn gives an answer.

    An empty trajectory, or one cut at max turns (its last turn a tool call), is invalid: R^T = 0 (DESIGN §3).
    """
    return bool(turns) and all(t.is_valid for t in turns) and turns[-1].action == "answer"


# ----------------------------------------------------------------------------------------------- verl reward


@dataclass(frozen=True)
class _RewardInput:
    """What the reward is computed from: the final answer and whether the trajectory's format is valid."""

    final_answer: str | None
    format_valid: bool


def _input_from_extra_info(extra_info: Mapping[str, Any]) -> _RewardInput:
    """The agent loop's verdict (``final_answer``, ``format_valid``) from the last segment's ``extra_fields``."""
    answer = as_python(extra_info["final_answer"])
    if _is_missing(answer):
        answer = None
    elif not isinstance(answer, str):
        raise TypeError(f"extra_info['final_answer'] must be a string or None, got {type(answer).__name__}")
    valid = as_python(extra_info.get("format_valid"))
    # format_valid absent or missing: an answer was reached iff there is one (third-party loops may omit the key)
    format_valid = answer is not None if _is_missing(valid) else bool(valid)
    return _RewardInput(final_answer=answer, format_valid=format_valid)


def _input_from_solution(solution_str: Any, tags: TagSet) -> _RewardInput:
    """Parse the decoded last turn; valid iff it parses and ends with an answer."""
    turn = parse_turn(solution_str if isinstance(solution_str, str) else "", tags)
    return _RewardInput(final_answer=turn.answer, format_valid=turn.action == "answer")


def _reward_mode(extra_info: Mapping[str, Any], kwargs: Mapping[str, Any]) -> RewardMode:
    # the row's own mode (dataset or agent loop) wins over the run-wide reward_kwargs
    for source in (extra_info, kwargs):
        mode = as_python(source.get("reward_mode"))
        if not _is_missing(mode):
            return validate_reward_mode(mode)
    return "all_em"


def _normalization(extra_info: Mapping[str, Any], kwargs: Mapping[str, Any]) -> AnswerNormalization:
    # the agent loop's (mempo.reward.normalization) wins over the run-wide reward_kwargs
    for source in (extra_info, kwargs):
        normalization = as_python(source.get("answer_normalization"))
        if not _is_missing(normalization):
            return validate_normalization(normalization)
    return "squad"


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl custom reward function (``reward.custom_reward_function.name=compute_score``).

    Reads the final answer and format verdict from ``extra_info`` when the agent loop put them there (keys
    ``final_answer``, ``format_valid``, optional ``reward_mode`` and ``answer_normalization``): with one segment
    per turn, verl 0.9.1 decodes ``solution_str`` from a batch padded across the session's segments and may cut
    it (VERL_NOTES.md). Without
    ``final_answer`` in ``extra_info``, ``solution_str`` is parsed as the last turn with ``parse_turn``.

    Args:
        data_source: unused; every source is scored the same way.
        solution_str: the decoded last turn (fallback only).
        ground_truth: see ``golds_from_ground_truth``; a bad ground truth raises (a data bug should be loud).
        extra_info: the row's extra info merged with the last segment's ``extra_fields``.
        **kwargs: ``reward_mode`` (run-wide default, overridden by ``extra_info["reward_mode"]``),
            ``answer_normalization`` (likewise; default ``squad``), ``tags`` (a ``TagSet`` or a mapping of its
            fields, for the fallback parse); others (verl's) are ignored.

    Returns:
        ``score`` (the reward: 0 when the format is invalid, else the mode's score), ``em`` and ``f1`` (mean over
        objectives, measured on the answer whatever the format), ``all_em``, ``format_valid`` (1.0/0.0, numeric so
        that verl averages it as a metric), ``count_mismatch`` (1.0/0.0), ``num_objectives`` and ``pred`` (the
        final answer text, "" if none; verl uses ``pred`` for majority-vote metrics).
    """
    extra_info = extra_info if isinstance(extra_info, Mapping) else {}
    golds = golds_from_ground_truth(ground_truth)
    mode = _reward_mode(extra_info, kwargs)
    normalization = _normalization(extra_info, kwargs)
    if "final_answer" in extra_info:
        reward_input = _input_from_extra_info(extra_info)
    else:
        reward_input = _input_from_solution(solution_str, _tags_from_kwargs(kwargs))
    result = score_answer(reward_input.final_answer, golds, mode, normalization)
    all_em = _all_em(result.em, result.f1, not result.count_mismatch)
    return {
        # a malformed trajectory earns nothing, whatever its answer (DESIGN §3)
        "score": result.score if reward_input.format_valid else 0.0,
        "em": sum(result.em) / len(result.em),
        "f1": sum(result.f1) / len(result.f1),
        "all_em": all_em,
        "format_valid": float(reward_input.format_valid),
        "count_mismatch": float(result.count_mismatch),
        "num_objectives": result.num_objectives,
        "pred": reward_input.final_answer or "",
    }


def _tags_from_kwargs(kwargs: Mapping[str, Any]) -> TagSet:
    tags = kwargs.get("tags")
    if tags is None:
        return DEFAULT_TAGS
    return tags if isinstance(tags, TagSet) else TagSet(**tags)
