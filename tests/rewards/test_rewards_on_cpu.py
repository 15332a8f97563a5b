"""Tests for mempo_verl.rewards: normalisation, EM/F1, multi-objective modes, ground truth shapes, verl reward."""

import math
import re
import string

import pytest

from mempo_verl.protocol import ParseError, TagSet, ToolCall, Turn, parse_turn, render_turn
from mempo_verl.rewards import (
    REWARD_MODES,
    compute_score,
    exact_match,
    f1_score,
    golds_from_ground_truth,
    normalize_answer,
    score_answer,
    split_objectives,
    trajectory_format_valid,
    validate_reward_mode,
)

# ----------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The  Eiffel-Tower!", "eiffeltower"),  # lowercase, "-" and "!" deleted (no space, as SQuAD), "the" dropped
        ("an apple a day", "apple day"),  # all three English articles go
        ("theater", "theater"),  # articles only as whole words
        ("  New \t York \n", "new york"),  # whitespace collapsed
        ("$1,000.", "1000"),  # ASCII symbols in string.punctuation go too, as in SQuAD
    ],
)
def test_normalize_answer_squad_rules(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ångström", "angstrom"),  # accents folded: NFD then combining marks dropped
        ("\u212bngstr\u00f6m", "angstrom"),  # the Angstrom *sign* U+212B folds the same way (NFKC)
        ("naïve", "naive"),
        ("Beyoncé", "beyonce"),
        ("ＰＡＲＩＳ", "paris"),  # full-width letters -> ASCII (NFKC)
        ("“Paris”", "paris"),  # curly quotes are Unicode punctuation
        ("O’Neil", "oneil"),  # curly apostrophe deleted like the ASCII one
        ("Straße", "strasse"),  # casefold, not lower
        ("\ufb01ne", "fine"),  # the "fi" ligature (NFKC)
        ("New\u00a0York", "new york"),  # non-breaking space is whitespace
        ("东京。", "东京"),  # CJK full stop is punctuation; the letters stay
    ],
)
def test_normalize_answer_unicode(raw, expected):
    assert normalize_answer(raw, normalization="unicode") == expected


def _official_squad_normalize_answer(s):
    """The SQuAD v1.1 evaluation script's normalize_answer, copied verbatim (evaluate-v1.1.py)."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


SQUAD_CASES = [
    ("Beyoncé", "beyoncé"),  # accents kept: SQuAD only lower-cases
    ("“Paris”", "“paris”"),  # curly quotes are not in string.punctuation
    ("O’Neil", "o’neil"),  # nor is the curly apostrophe, while the ASCII one goes: "O'Neil" -> "oneil"
    ("O'Neil", "oneil"),
    ("Straße", "straße"),  # lower, not casefold
    ("ＰＡＲＩＳ", "ｐａｒｉｓ"),  # no NFKC: full-width letters stay full-width
    ("东京。", "东京。"),  # the CJK full stop stays
    ("New\u00a0York", "new york"),  # str.split() splits on the non-breaking space too
    ("The  Eiffel-Tower!", "eiffeltower"),
]


@pytest.mark.parametrize(("raw", "expected"), SQUAD_CASES)
def test_default_normalization_is_the_official_squad_script(raw, expected):
    assert normalize_answer(raw) == expected  # by hand
    assert normalize_answer(raw) == _official_squad_normalize_answer(raw)  # and byte for byte the official script


def test_beyonce_differs_under_squad_and_matches_under_unicode():
    assert exact_match("Beyonce", ["Beyoncé"]) == 0.0  # squad (default): "beyonce" != "beyoncé"
    assert exact_match("Beyonce", ["Beyoncé"], normalization="unicode") == 1.0  # accents folded on both sides
    assert f1_score("Beyonce Knowles", ["Beyoncé Knowles"]) == pytest.approx(0.5)  # 1 of 2 tokens shared each way
    assert f1_score("Beyonce Knowles", ["Beyoncé Knowles"], normalization="unicode") == 1.0
    assert score_answer("Beyonce", [["Beyoncé"]]).score == 0.0
    assert score_answer("Beyonce", [["Beyoncé"]], normalization="unicode").score == 1.0
    with pytest.raises(ValueError, match="unknown answer normalization 'nfkc'; allowed: squad, unicode"):
        normalize_answer("x", "nfkc")


def test_compute_score_normalization_default_and_precedence():
    truth = {"target": [["Beyoncé"]]}
    extra = {"final_answer": "Beyonce", "format_valid": True}
    assert compute_score("nq", "", truth, extra)["score"] == 0.0  # squad by default, and so are em / f1
    assert compute_score("nq", "", truth, extra)["em"] == 0.0
    # the agent loop's key (mempo.reward.normalization) wins over the run-wide reward_kwargs
    assert compute_score("nq", "", truth, {**extra, "answer_normalization": "unicode"})["score"] == 1.0
    assert compute_score("nq", "", truth, extra, answer_normalization="unicode")["score"] == 1.0
    assert (
        compute_score("nq", "", truth, {**extra, "answer_normalization": "squad"}, answer_normalization="unicode")["em"]
        == 0.0
    )


def test_unicode_normalization_matches_ascii_and_curly_apostrophes():
    assert normalize_answer("O'Neil", "unicode") == normalize_answer("O’Neil", "unicode")


def test_normalize_answer_rejects_non_strings():
    with pytest.raises(TypeError, match="string"):
        normalize_answer(None)


# ----------------------------------------------------------------------------------------------- EM and F1


def test_exact_match():
    assert exact_match("the Eiffel Tower", ["Eiffel Tower"]) == 1.0  # article and case ignored
    assert exact_match("Paris", ["London", "paris"]) == 1.0  # any alias
    assert exact_match("Paris, France", ["Paris"]) == 0.0  # extra words break EM


def test_empty_prediction_scores_zero():
    assert exact_match("", ["Paris"]) == 0.0
    assert exact_match(None, ["Paris"]) == 0.0  # no answer
    assert exact_match(float("nan"), ["Paris"]) == 0.0  # a dataframe's missing value
    # a gold that normalises to empty still cannot be matched by saying nothing
    assert exact_match("the", ["a"]) == 0.0
    assert f1_score("", ["the"]) == 0.0
    assert f1_score(None, ["Paris"]) == 0.0


def test_f1_score_hand_computed():
    # pred tokens [eiffel, tower, in, paris], gold [eiffel, tower]: 2 shared, P = 2/4, R = 2/2, F1 = 2PR/(P+R) = 2/3
    assert f1_score("Eiffel Tower in Paris", ["the Eiffel Tower"]) == pytest.approx(2 / 3)
    # multiset overlap: pred [x, x, y] vs gold [x, y] shares 2, P = 2/3, R = 1, F1 = 0.8
    assert f1_score("x x y", ["x y"]) == pytest.approx(0.8)
    assert f1_score("London", ["Paris"]) == 0.0  # nothing shared


def test_f1_score_max_over_aliases():
    # alias 1: P = 1, R = 1/2 -> 2/3; alias 2: exact -> 1.0; the max is taken
    assert f1_score("Paris", ["Paris France", "Paris"]) == 1.0
    assert f1_score("Paris", ["Paris France", "Lyon"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("fn", [exact_match, f1_score])
def test_empty_golds_raise(fn):
    with pytest.raises(ValueError, match="at least one gold alias"):
        fn("Paris", [])


@pytest.mark.parametrize("fn", [exact_match, f1_score])
def test_golds_must_be_a_list_of_strings(fn):
    with pytest.raises(TypeError, match="list of alias strings"):
        fn("Paris", "Paris")  # a bare string would be read character by character
    with pytest.raises(TypeError, match="must be strings"):
        fn("Paris", ["Paris", None])
    with pytest.raises(TypeError, match="prediction"):
        fn(3, ["3"])


# ----------------------------------------------------------------------------------------------- k objectives

GOLDS_2 = [["Paris"], ["1889", "in 1889"]]


def test_split_objectives():
    assert split_objectives(" Paris ;1889 ", 2) == ("Paris", "1889")
    assert split_objectives("Paris; 1889;", 2) == ("Paris", "1889")  # trailing separator is not an objective
    assert split_objectives("Paris; ; 1889", 2) == ("Paris", "", "1889")  # an empty middle part is kept
    assert split_objectives("Tom; Jerry", 1) == ("Tom; Jerry",)  # one objective: never split
    assert split_objectives(None, 2) == ()


def test_score_answer_all_correct_every_mode():
    # both objectives exact: EM (1, 1)
    expected = {"all_em": 1.0, "em_mean": 1.0, "f1_mean": 1.0, "em_sum": 2.0}
    for mode in REWARD_MODES:
        result = score_answer("paris; In 1889", GOLDS_2, mode)
        assert result.em == (1.0, 1.0) and result.f1 == (1.0, 1.0)
        assert result.score == expected[mode]
        assert not result.count_mismatch


def test_score_answer_one_wrong_every_mode():
    # EM (1, 0), F1 (1, 0): all_em needs both -> 0; mean 1/2; sum 1
    expected = {"all_em": 0.0, "em_mean": 0.5, "f1_mean": 0.5, "em_sum": 1.0}
    for mode in REWARD_MODES:
        assert score_answer("Paris; 1890", GOLDS_2, mode).score == expected[mode]


def test_score_answer_f1_mean_hand_computed():
    golds = [["Eiffel Tower"], ["Gustave Eiffel"]]
    result = score_answer("Eiffel Tower in Paris; Eiffel", golds, "f1_mean")
    # objective 1: P = 2/4, R = 1 -> 2/3; objective 2: pred [eiffel] vs [gustave, eiffel]: P = 1, R = 1/2 -> 2/3
    assert result.f1 == pytest.approx((2 / 3, 2 / 3))
    assert result.em == (0.0, 0.0)
    assert result.score == pytest.approx(2 / 3)


def test_score_answer_too_few_parts():
    result = score_answer("Paris", GOLDS_2, "em_mean")
    # the missing second answer scores 0: EM (1, 0), mean 0.5
    assert result.em == (1.0, 0.0) and result.score == 0.5
    assert result.count_mismatch and result.parts == ("Paris",) and result.num_objectives == 2
    assert score_answer("Paris", GOLDS_2).score == 0.0  # all_em


def test_score_answer_too_many_parts():
    # the extra "London" is ignored per objective (EM (1, 1)) but all_em is 0: it did not answer exactly k questions
    assert score_answer("Paris; 1889; London", GOLDS_2, "em_sum").score == 2.0
    result = score_answer("Paris; 1889; London", GOLDS_2, "all_em")
    assert result.em == (1.0, 1.0) and result.count_mismatch and result.score == 0.0


def test_score_answer_single_objective_keeps_semicolons():
    assert score_answer("Tom; Jerry", [["Tom; Jerry"]]).score == 1.0
    assert score_answer("Tom; Jerry", [["Tom"]]).score == 0.0  # not split: the whole answer is compared


def test_score_answer_no_prediction():
    result = score_answer(None, GOLDS_2, "em_sum")
    assert result.em == (0.0, 0.0) and result.score == 0.0 and result.parts == ()


def test_score_answer_rejects_bad_inputs():
    with pytest.raises(ValueError, match="all_em, em_mean, f1_mean, em_sum"):
        score_answer("Paris", [["Paris"]], "accuracy")
    with pytest.raises(TypeError, match="golds_from_ground_truth"):
        score_answer("Paris", ["Paris"])  # a flat alias list, not one list per objective
    with pytest.raises(ValueError, match="non-empty"):
        score_answer("Paris", [])
    with pytest.raises(ValueError, match="at least one gold alias"):
        score_answer("Paris", [["Paris"], []])


def test_validate_reward_mode():
    assert validate_reward_mode("em_sum") == "em_sum"
    with pytest.raises(ValueError, match="allowed"):
        validate_reward_mode(None)


# ----------------------------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize(
    "ground_truth, expected",
    [
        ("Paris", [["Paris"]]),  # one objective, one alias
        (["Paris", "City of Paris"], [["Paris", "City of Paris"]]),  # one objective, aliases
        (("Paris",), [["Paris"]]),  # tuples are lists
        ([["Paris"], ["1889", "in 1889"]], [["Paris"], ["1889", "in 1889"]]),  # k objectives
        ({"target": ["Paris", "Paris, France"]}, [["Paris", "Paris, France"]]),  # Search-R1 / FlashRAG
        ({"target": [["a"], ["b"]], "other": 1}, [["a"], ["b"]]),  # other keys are ignored
        (1889, [["1889"]]),  # an integer answer
    ],
)
def test_golds_from_ground_truth(ground_truth, expected):
    assert golds_from_ground_truth(ground_truth) == expected


def test_golds_from_numpy_ground_truth():
    np = pytest.importorskip("numpy")
    # what pandas hands back from a parquet row: arrays, object arrays of arrays, numpy scalars
    assert golds_from_ground_truth({"target": np.array(["Paris", "Lutetia"])}) == [["Paris", "Lutetia"]]
    nested = np.empty(2, dtype=object)
    nested[0], nested[1] = np.array(["Paris"]), np.array(["1889", "in 1889"])
    assert golds_from_ground_truth(nested) == [["Paris"], ["1889", "in 1889"]]
    assert golds_from_ground_truth(np.int64(7)) == [["7"]]


@pytest.mark.parametrize(
    "ground_truth, error, fragment",
    [
        (None, ValueError, "missing"),
        (float("nan"), ValueError, "missing"),
        ([], ValueError, "empty list"),
        ([[]], ValueError, "no aliases"),
        (["Paris", ["1889"]], ValueError, "mixes strings and lists"),
        ({"answer": "Paris"}, ValueError, "'target'"),
        (["Paris", ""], ValueError, "empty gold answer"),
        (["Paris", None], ValueError, "missing value"),
        (3.5, TypeError, "float"),
        (True, TypeError, "bool"),
        ([[3.5]], TypeError, "string or an integer"),
    ],
)
def test_golds_from_ground_truth_errors(ground_truth, error, fragment):
    with pytest.raises(error, match=fragment):
        golds_from_ground_truth(ground_truth)


# ----------------------------------------------------------------------------------------------- trajectories

CALL_TURN = parse_turn(render_turn("m1", "t", tool_call=ToolCall("search", {"query": "q"})))
ANSWER_TURN = parse_turn(render_turn("m2", "t", answer="Paris"))
BAD_TURN = Turn(mem="m", errors=(ParseError("no_action", "neither", None),))


def test_trajectory_format_valid():
    assert trajectory_format_valid([CALL_TURN, ANSWER_TURN])  # calls, then an answer
    assert trajectory_format_valid([ANSWER_TURN])
    assert not trajectory_format_valid([])  # nothing happened
    assert not trajectory_format_valid([CALL_TURN, CALL_TURN])  # cut at max turns: no answer
    assert not trajectory_format_valid([BAD_TURN, ANSWER_TURN])  # one malformed turn spoils it


# ----------------------------------------------------------------------------------------------- verl reward

GOLD_2 = {"target": [["Paris"], ["1889"]]}


def test_compute_score_uses_extra_info_not_the_cut_solution_str():
    # verl may cut solution_str; the agent loop's final answer decides
    extra = {"final_answer": "Paris; 1889", "format_valid": True, "index": 3}
    result = compute_score("multi_qa", "<mem>cut in the mid", GOLD_2, extra)
    assert result["score"] == 1.0 and result["em"] == 1.0 and result["f1"] == 1.0
    assert result["format_valid"] == 1.0 and result["pred"] == "Paris; 1889"
    assert result["num_objectives"] == 2 and result["count_mismatch"] == 0.0


def test_compute_score_invalid_format_scores_zero():
    extra = {"final_answer": "Paris; 1889", "format_valid": False}
    result = compute_score("multi_qa", "", GOLD_2, extra)
    # the reward is gated; the answer's quality is still reported
    assert result["score"] == 0.0 and result["format_valid"] == 0.0
    assert result["em"] == 1.0 and result["all_em"] == 1.0


def test_compute_score_reward_mode_precedence():
    extra = {"final_answer": "Paris; 1890", "format_valid": True}
    assert compute_score("q", "", GOLD_2, extra)["score"] == 0.0  # default all_em
    assert compute_score("q", "", GOLD_2, extra, reward_mode="em_sum")["score"] == 1.0  # run-wide kwarg
    # the row's own mode wins over the run-wide one: EM (1, 0) -> mean 0.5
    assert compute_score("q", "", GOLD_2, {**extra, "reward_mode": "em_mean"}, reward_mode="em_sum")["score"] == 0.5
    with pytest.raises(ValueError, match="allowed"):
        compute_score("q", "", GOLD_2, {**extra, "reward_mode": "acc"})


def test_compute_score_missing_answer_in_extra_info():
    for missing in (None, float("nan")):
        result = compute_score("q", "", "Paris", {"final_answer": missing, "format_valid": False})
        assert result["score"] == 0.0 and result["pred"] == "" and result["em"] == 0.0
    # format_valid absent: derived from whether there is an answer
    assert compute_score("q", "", "Paris", {"final_answer": "Paris"})["score"] == 1.0
    assert compute_score("q", "", "Paris", {"final_answer": None})["format_valid"] == 0.0


def test_compute_score_from_solution_str_only():
    text = render_turn("Paris is the capital", "done", answer="Paris") + "<|im_end|>"
    result = compute_score("nq", text, ["Paris", "City of Paris"], extra_info={"index": 0})
    assert result["score"] == 1.0 and result["format_valid"] == 1.0
    assert compute_score("nq", text, ["Paris"], extra_info=None)["score"] == 1.0


def test_compute_score_from_solution_str_invalid_format():
    # answer present but <mem> missing: invalid, score 0, em still measured
    result = compute_score("nq", "<answer>Paris</answer>", "Paris")
    assert result["score"] == 0.0 and result["format_valid"] == 0.0 and result["em"] == 1.0
    # the last turn is a tool call (cut at max turns): no answer at all
    call = render_turn("m", "t", tool_call=ToolCall("search", {"query": "q"}))
    assert compute_score("nq", call, "Paris")["score"] == 0.0
    # nothing decoded
    for empty in ("", None, float("nan")):
        assert compute_score("nq", empty, "Paris")["score"] == 0.0


def test_compute_score_custom_tags_for_the_fallback_parse():
    tags = {"mem": "memory", "think": "reasoning", "tool_call": "call", "answer": "final", "information": "obs"}
    text = "<memory>m</memory><final>Paris</final>"
    assert compute_score("nq", text, "Paris", tags=tags)["score"] == 1.0
    assert compute_score("nq", text, "Paris", tags=TagSet(**tags))["score"] == 1.0
    assert compute_score("nq", text, "Paris")["score"] == 0.0  # default tags: not a valid turn


def test_compute_score_bad_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="ground_truth is missing"):
        compute_score("nq", "<mem>m</mem><answer>a</answer>", None)


def test_compute_score_values_are_numeric_metrics():
    result = compute_score("q", "", GOLD_2, {"final_answer": "Paris", "format_valid": True}, reward_mode="f1_mean")
    assert {"score", "em", "f1", "format_valid"} <= set(result)
    for key, value in result.items():
        if key != "pred":
            assert isinstance(value, (int, float)) and math.isfinite(value), key
    # one of two objectives answered: F1 (1, 0) -> 0.5, and the count mismatch is recorded
    assert result["score"] == 0.5 and result["count_mismatch"] == 1.0
