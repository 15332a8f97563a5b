"""The `synthetic` lookup-chain environment (mempo_verl/envs/synthetic.py): generator determinism, a by-hand solver
that follows the documents to every gold answer in exactly min_turns, the lower bound's premises, scoring."""

import asyncio
import re

import pandas as pd
import pytest

from mempo_verl.data.cli import main
from mempo_verl.envs import make_env, make_synthetic_rows, min_turns
from mempo_verl.envs.synthetic import RELATIONS, generate_episode, normalize_key
from mempo_verl.protocol import ToolCall, parse_turn
from mempo_verl.rewards import golds_from_ground_truth


@pytest.fixture(scope="module")
def env():
    return make_env("synthetic")


def lookup(env, key, row):
    return asyncio.run(env.step(ToolCall("lookup", {"key": key}), row))


def mention(name: str) -> str:
    return f"the {name}" if name.endswith(" Guild") else name


def follow(env, row, objective: int) -> tuple[str, int]:
    """Answer one objective by hand: start from the entity the question names, read each relation's object out of
    the current entity's document. Returns (answer, lookups made)."""
    extra = row["extra_info"]
    start, relations = extra["chains"][objective][0], extra["relations"][objective]
    assert mention(start) in extra["questions"][objective]  # the question names the chain's start
    current, lookups = start, 0
    for relation in relations:
        obs = lookup(env, current, row)
        lookups += 1
        assert obs.ok and obs.text.startswith(f"{current}: ")
        prefix, suffix = RELATIONS[relation].sentence.split("{o}")
        pattern = re.escape(prefix.format(s=mention(current))) + r"(.+?)" + re.escape(suffix)
        (found,) = re.findall(pattern, obs.text, flags=re.IGNORECASE)  # the fact is stated exactly once
        current = found.removeprefix("the ")
    return current, lookups


# ----------------------------------------------------------------------------------------------- the generator


def test_rows_are_deterministic_and_stable_in_num_rows():
    rows = make_synthetic_rows(4, objectives=2, hops=3, seed=7)
    assert rows == make_synthetic_rows(4, objectives=2, hops=3, seed=7)  # same arguments, same rows
    assert rows[:2] == make_synthetic_rows(2, objectives=2, hops=3, seed=7)  # row i has its own seed
    assert rows != make_synthetic_rows(4, objectives=2, hops=3, seed=8)
    test_rows = make_synthetic_rows(4, objectives=2, hops=3, seed=7, split="test")
    first_questions = {r["extra_info"]["questions"][0] for r in rows}
    assert first_questions.isdisjoint(r["extra_info"]["questions"][0] for r in test_rows)  # splits draw apart


def test_row_shape_matches_the_data_builder():
    (row,) = make_synthetic_rows(1, objectives=3, hops=2, seed=0, split="test")
    assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name"}
    assert row["agent_name"] == "mempo_agent" and row["data_source"] == "mempo_synthetic"
    system, user = row["prompt"]
    assert system["role"] == "system" and "<mem>" in system["content"] and "lookup" in system["content"]
    questions = row["extra_info"]["questions"]
    assert user == {"role": "user", "content": "\n".join(f"Question {i}: {q}" for i, q in enumerate(questions, 1))}
    target = row["reward_model"]["ground_truth"]["target"]
    assert target == [[chain[-1]] for chain in row["extra_info"]["chains"]]  # the answer ends each chain
    assert row["extra_info"]["min_turns"] == 7 and row["extra_info"]["split"] == "test"


@pytest.mark.parametrize("objectives, hops", [(1, 1), (1, 4), (3, 2), (5, 3)])
def test_following_the_documents_reaches_every_gold_in_min_turns(env, objectives, hops):
    for row in make_synthetic_rows(3, objectives=objectives, hops=hops, seed=11):
        golds = golds_from_ground_truth(row["reward_model"]["ground_truth"])
        results = [follow(env, row, j) for j in range(objectives)]
        assert [answer for answer, _ in results] == [g[0] for g in golds]
        turns = sum(n for _, n in results) + 1  # every lookup is a turn, then the answer turn
        assert turns == min_turns(objectives, hops) == objectives * hops + 1
        answer = "; ".join(answer for answer, _ in results)
        assert env.score(answer, row["reward_model"]["ground_truth"]).score == 1.0


def test_lower_bound_premises(env):
    """min_turns is exact because each link is stated only in its subject's document and chains share nothing."""
    for row in make_synthetic_rows(3, objectives=4, hops=3, seed=3):
        extra = row["extra_info"]
        texts = {d["key"]: d["text"] for d in extra["documents"]}
        seen = set()
        for chain, relations in zip(extra["chains"], extra["relations"], strict=True):
            assert seen.isdisjoint(chain)  # no entity in two chains: no lookup serves two objectives
            seen.update(chain)
            for subject, obj, relation in zip(chain[:-1], chain[1:], relations, strict=True):
                fact = RELATIONS[relation].sentence.format(s=mention(subject), o=mention(obj))
                holders = [key for key, text in texts.items() if fact.lower() in text.lower()]
                assert holders == [subject]


def test_generate_episode_validates():
    import random

    with pytest.raises(ValueError, match="objectives and hops must be >= 1"):
        generate_episode(random.Random(0), objectives=1, hops=0)


# ----------------------------------------------------------------------------------------------- the tool


def test_lookup_matches_names_loosely_and_reports_misses(env):
    (row,) = make_synthetic_rows(1, objectives=1, hops=2, seed=5)
    name = row["extra_info"]["chains"][0][0]
    exact = lookup(env, name, row)
    assert exact.ok and exact.metrics == {"lookup_found": 1.0}
    assert lookup(env, f'  "the {name.upper()}." ', row).text == exact.text  # case, quotes, article, punctuation
    miss = lookup(env, "Nobody Atall", row)
    assert not miss.ok and miss.error == "not_found"
    assert miss.text == 'No document for "Nobody Atall". Use the full name as written in the question or in a document.'
    assert normalize_key(' "the Tavren  Guild". ') == "tavren guild"


@pytest.mark.parametrize(
    "tool_call, kind",
    [
        (ToolCall("search", {"query": "x"}), "unknown_tool"),
        (ToolCall("lookup", {}), "bad_arguments"),
        (ToolCall("lookup", {"key": ["a"]}), "bad_arguments"),
        (ToolCall("lookup", {"key": " . "}), "bad_arguments"),
    ],
)
def test_bad_calls(env, tool_call, kind):
    (row,) = make_synthetic_rows(1, seed=0)
    obs = asyncio.run(env.step(tool_call, row))
    assert not obs.ok and obs.error == kind and "lookup" in obs.text


def test_parquet_round_trip(env, tmp_path):
    rows = make_synthetic_rows(2, objectives=2, hops=2, seed=1)
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet", index=False)
    row = pd.read_parquet(tmp_path / "train.parquet").iloc[1].to_dict()  # numpy arrays inside, as verl reads it
    assert env.questions(row) == rows[1]["extra_info"]["questions"]
    assert follow(env, row, 1)[0] == rows[1]["reward_model"]["ground_truth"]["target"][1][0]
    assert env.gold_answer_text(row["reward_model"]["ground_truth"]) == env.gold_answer_text(
        rows[1]["reward_model"]["ground_truth"]
    )


def test_cli_writes_both_splits(tmp_path, capsys):
    args = ["--train-rows", "3", "--test-rows", "2", "--objectives", "2", "--hops", "2"]
    assert main(["synthetic", "--out", str(tmp_path), *args]) == 0
    assert len(pd.read_parquet(tmp_path / "train.parquet")) == 3
    assert len(pd.read_parquet(tmp_path / "test.parquet")) == 2
    assert "min turns 5" in capsys.readouterr().out


def test_cli_names_from_the_pool_and_tiny_prompt(tmp_path):
    from mempo_verl.envs.synthetic import NAME_POOL, tiny_task_prompt

    args = ["--train-rows", "2", "--test-rows", "1", "--objectives", "3", "--hops", "1", "--names", "pool"]
    assert main(["synthetic", "--out", str(tmp_path), *args, "--prompt", "tiny"]) == 0
    row = pd.read_parquet(tmp_path / "train.parquet").iloc[0]
    assert row["prompt"][0]["content"] == tiny_task_prompt(3)  # the system message of prompt style "tiny"
    entities = {chain[0] for chain in row["extra_info"]["chains"]}  # each question's starting entity
    assert entities <= set(NAME_POOL), entities


# ----------------------------------------------------------------------------------------------- scoring and prompt


def test_scoring(env):
    gt = {"target": [["Dorka Venthi"], ["Tavren Guild"]]}
    assert env.score("Dorka Venthi; the Tavren Guild", gt).score == 1.0  # article and case do not matter
    assert env.score("Tavren Guild; Dorka Venthi", gt).score == 0.0  # order matters
    assert env.score("Dorka Venthi", gt).score == 0.0  # one answer for two objectives
    assert make_env("synthetic", reward_mode="em_mean").score("Dorka Venthi; Hamar", gt).score == 0.5
    # the official SQuAD normalisation by default: the curly apostrophe is not ASCII punctuation; unicode drops it
    assert env.score("Dorka Venthi; Tavren Guild’", gt).score == 0.0
    assert make_env("synthetic", normalization="unicode").score("Dorka Venthi; Tavren Guild’", gt).score == 1.0
    assert env.gold_answer_text(gt) == "Dorka Venthi; Tavren Guild"


def test_task_prompt_example_parses(env):
    (row,) = make_synthetic_rows(1, objectives=3, seed=0)
    prompt = env.task_prompt(row)
    assert prompt == row["prompt"][0]["content"]  # the row's system prompt is the env's task prompt
    assert "<answer>answer 1; answer 2; answer 3</answer>" in prompt
    turn = parse_turn(prompt.split("Example turn:\n")[1])
    assert turn.is_valid and turn.tool_call == ToolCall("lookup", {"key": "Alar Venn"})


# ------------------------------------------------------------------------------------------------ the oracle


@pytest.mark.parametrize("objectives,hops", [(1, 1), (2, 1), (3, 2)])
def test_oracle_plays_every_episode_to_the_gold_in_min_turns(env, objectives, hops):
    from mempo_verl.envs.synthetic import oracle_turns

    for row in make_synthetic_rows(6, objectives, hops, seed=11, split="oracle"):
        info = row["extra_info"]
        turns = [parse_turn(text) for text in oracle_turns(row)]
        assert len(turns) == min_turns(objectives, hops) and all(t.is_valid for t in turns)
        calls, final = turns[:-1], turns[-1]
        # the lookups walk the chains in order: objective by objective, hop by hop (checked against the row)
        assert [t.tool_call.arguments["key"] for t in calls] == [c[i] for c in info["chains"] for i in range(hops)]
        for turn, next_turn in zip(calls, turns[1:], strict=True):
            observation = lookup(env, turn.tool_call.arguments["key"], row)
            assert observation.ok
            # the memory names the fact being looked up with "?" for the unknown; the document holds that
            # sentence with a name in its place, and the next memory carries that name
            clauses = re.split(r"(?<=\.) (?=Q\d+: )", turn.mem)  # "Q1: a1." ... "Qj: <sentence with ?>."
            pending = clauses[-1].split(": ", 1)[1].split(" Then:")[0]
            before, after = pending.split("?")
            found = re.search(re.escape(before) + r"(.+?)" + re.escape(after), observation.text).group(1)
            assert found in next_turn.mem
        golds = golds_from_ground_truth(row["reward_model"]["ground_truth"])
        assert env.score(final.answer, row["reward_model"]["ground_truth"]).score == 1.0
        # by hand: the answer is "a1; ...; ak", each the chain's last name as documents write it
        assert final.answer == "; ".join(mention(g[0]) for g in golds)
        assert final.mem == " ".join(f"Q{q}: {mention(g[0])}." for q, g in enumerate(golds, start=1))


def test_oracle_memory_for_a_two_hop_chain_by_hand():
    from mempo_verl.envs.synthetic import oracle_turns

    row = {
        "extra_info": {
            "chains": [["Alar Venn", "Keshmar", "Dorin Tal"]],
            "relations": [["born_in", "founder"]],
        }
    }
    first, second, answer = (parse_turn(t) for t in oracle_turns(row))
    assert first.mem == "Q1: Alar Venn was born in ?. Then: founder."
    assert first.tool_call == ToolCall("lookup", {"key": "Alar Venn"})
    assert second.mem == "Q1: Keshmar was founded by ?."
    assert (answer.mem, answer.answer) == ("Q1: Dorin Tal.", "Dorin Tal")
    with pytest.raises(ValueError, match="synthetic row"):
        oracle_turns({"extra_info": {"questions": ["q"]}})


def test_brief_prompt_option():
    from mempo_verl.envs.synthetic import brief_task_prompt

    brief = make_env("synthetic", prompt="brief")
    row = make_synthetic_rows(1, 2, 1, seed=0, split="x", prompt="brief")[0]
    assert brief.task_prompt(row) == brief_task_prompt(2) == row["prompt"][0]["content"]
    assert "<answer>answer 1; answer 2</answer>" in brief_task_prompt(2) and "<answer>NAME</answer>" in (
        brief_task_prompt(1)
    )
    assert len(brief_task_prompt(2).split()) < len(make_env("synthetic").task_prompt(row).split()) / 2
    with pytest.raises(ValueError, match="prompt='short'"):
        make_env("synthetic", prompt="short")


def test_pool_names_are_single_words_of_the_pool(env):
    from mempo_verl.envs.synthetic import NAME_POOL, oracle_turns

    assert len(NAME_POOL) == len({n.casefold() for n in NAME_POOL}) == 128 and all(" " not in n for n in NAME_POOL)
    for row in make_synthetic_rows(4, 3, 1, seed=5, split="pool", names="pool"):
        keys = [d["key"] for d in row["extra_info"]["documents"]]
        assert len({normalize_key(k) for k in keys}) == len(keys)  # unique within the world
        assert all(k.removesuffix(" Guild") in NAME_POOL for k in keys)
        final = parse_turn(oracle_turns(row)[-1])
        assert env.score(final.answer, row["reward_model"]["ground_truth"]).score == 1.0
    with pytest.raises(ValueError, match="names='short'"):
        make_synthetic_rows(1, names="short")
