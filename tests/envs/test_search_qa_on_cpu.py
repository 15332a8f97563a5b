"""The `search_qa` environment (mempo_verl/envs/search_qa.py) over the shipped BM25 index, a real retrieval server,
and real local HTTP servers that fail on cue."""

import asyncio
import time

import numpy as np
import pytest

from mempo_verl.data import sample_corpus_path
from mempo_verl.envs import SearchQAEnv, make_env
from mempo_verl.protocol import ToolCall, parse_turn
from mempo_verl.retrieval import BackgroundServer, create_app, make_retriever
from mempo_verl.retrieval.documents import read_corpus
from mempo_verl.testing.scripted_http import ScriptedHTTPServer, closed_port_url

QUESTION = "What is the capital of Aldmark?"  # qa.jsonl sample-0000; supporting passage id "0" (Aldmark)
ROW = {
    "extra_info": {"questions": [QUESTION]},
    "reward_model": {"ground_truth": {"target": [["Brackenford"]]}},
}
TWO_ROW = {
    "extra_info": {"questions": [QUESTION, "What is the official language of Corvania?"]},
    "reward_model": {"ground_truth": {"target": [["Brackenford"], ["Corvan", "Corvanian"]]}},
}


def run(env, tool_call, sample=ROW):
    return asyncio.run(env.step(tool_call, sample))


def search(query):
    return ToolCall("search", {"query": query})


@pytest.fixture(scope="module")
def env():
    return make_env("search_qa")


# ----------------------------------------------------------------------------------------------- search


def test_known_question_returns_its_passage_in_search_r1_format(env):
    obs = run(env, search(QUESTION))
    assert obs.ok and obs.error is None
    lines = obs.text.split("\n")
    assert len(lines) == 3  # topk = 3 passages, one line each
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"Doc {i}(Title: ")  # Search-R1's `Doc i(Title: …) text`, numbered from 1
    passage = {d["id"]: d for d in read_corpus(sample_corpus_path())}["0"]
    assert lines[0] == f"Doc 1(Title: {passage['title']}) {passage['text']}"  # the supporting passage ranks first
    assert "Brackenford" in lines[0]
    assert obs.metrics["retrieval_failed"] == 0.0 and obs.metrics["retrieval_num_hits"] == 3.0


def test_topk_and_a_list_of_queries():
    env = make_env("search_qa", topk=1)
    obs = run(env, search([QUESTION, "official language of Corvania"]))
    assert obs.ok
    first, second = obs.text.split('\nResults for "official language of Corvania":\n')
    assert first.startswith(f'Results for "{QUESTION}":\nDoc 1(Title: Aldmark) ')
    assert second.startswith("Doc 1(Title: Corvania) ") and "\n" not in second  # topk = 1
    assert obs.metrics["retrieval_num_queries"] == 2.0


def test_no_hits_is_a_readable_ok_observation(env):
    obs = run(env, search("the of and"))  # stopwords only: BM25 matches nothing
    assert obs.ok and obs.text == 'No passages found for "the of and".'


@pytest.mark.parametrize(
    "tool_call, kind, hint",
    [
        (ToolCall("google", {"query": "x"}), "unknown_tool", "Unknown tool 'google'. The only tool is search"),
        (ToolCall("search", {}), "bad_arguments", 'the "query" argument is missing'),
        (ToolCall("search", {"q": "x"}), "bad_arguments", 'the "query" argument is missing'),
        (ToolCall("search", {"query": "   "}), "bad_arguments", '"query" is empty'),
        (ToolCall("search", {"query": []}), "bad_arguments", '"query" is empty'),
        (ToolCall("search", {"query": 42}), "bad_arguments", "must be a string (or a list of strings), got int"),
        (ToolCall("search", {"query": ["a", 1]}), "bad_arguments", "got list"),
        (ToolCall("search", {"query": ["a", "b", "c", "d"]}), "bad_arguments", "at most 3 queries per call, got 4"),
    ],
)
def test_bad_tool_calls_are_reported_not_raised(env, tool_call, kind, hint):
    obs = run(env, tool_call)
    assert not obs.ok and obs.error == kind
    assert hint in obs.text
    assert '{"name": "search", "arguments": {"query": ' in obs.text  # shows the model the right call


def test_extra_arguments_are_ignored(env):
    assert run(env, ToolCall("search", {"query": QUESTION, "topk": 10})).text.count("\n") == 2


# ----------------------------------------------------------------------------------------------- scoring


def test_multi_objective_score_and_gold_text(env):
    gt = TWO_ROW["reward_model"]["ground_truth"]
    right = env.score("Brackenford; corvanian", gt)  # any alias, normalised
    assert right.score == 1.0 and right.em == (1.0, 1.0)
    assert env.score("Brackenford", gt).score == 0.0  # one part for two objectives: all_em fails
    assert env.score("Corvan; Brackenford", gt).score == 0.0  # order matters
    assert env.score(None, gt).score == 0.0
    assert make_env("search_qa", reward_mode="em_mean").score("Brackenford; Aldish", gt).score == 0.5
    # the official SQuAD normalisation by default: accents matter; the unicode option folds them
    accented = {"target": [["Brackenförd"], ["Corvan"]]}
    assert env.score("Brackenford; Corvan", accented).score == 0.0
    assert make_env("search_qa", normalization="unicode").score("Brackenford; Corvan", accented).score == 1.0
    assert env.gold_answer_text(gt) == "Brackenford; Corvan"  # first alias per objective
    assert env.gold_answer_text(["Paris", "City of Paris"]) == "Paris"


# ----------------------------------------------------------------------------------------------- prompt and schema


def test_task_prompt_explains_the_format_and_its_example_parses(env):
    prompt = env.task_prompt(ROW)
    for tag in ("<mem>", "<think>", "<tool_call>", "<answer>", "<information>"):
        assert tag in prompt
    assert '{"name": "search", "arguments": {"query": "..."}}' in prompt and "top 3 passages" in prompt
    example = prompt.split("Example turn:\n")[1]
    turn = parse_turn(example)
    assert turn.is_valid and turn.action == "tool_call" and turn.tool_call.name == "search"
    multi = env.task_prompt(TWO_ROW)
    assert "Answer all 2 questions in order, separated by semicolons: <answer>answer 1; answer 2</answer>" in multi


def test_questions_from_a_parquet_style_row(env):
    row = {"extra_info": {"questions": np.array(["q1", "q2"], dtype=object)}}  # numpy, as parquet rows read back
    assert env.questions(row) == ["q1", "q2"]
    with pytest.raises(ValueError, match="extra_info\\['questions'\\]"):
        env.questions({"extra_info": {"index": 0}})


def test_tool_schema_is_a_verl_openai_schema(env):
    from verl.tools.schemas import OpenAIFunctionToolSchema

    (schema,) = env.tool_schemas()
    parsed = OpenAIFunctionToolSchema.model_validate(schema)
    assert parsed.function.name == "search" and parsed.function.parameters.required == ["query"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"backend": "elastic"}, ValueError, "backend='elastic'; allowed: bm25, dense, http"),
        ({"backend": "http"}, ValueError, "url is required"),
        ({"url": "http://x"}, ValueError, "only used with backend='http'"),
        ({"topk": 0}, ValueError, "topk must be an integer >= 1"),
        ({"reward_mode": "best"}, ValueError, "unknown reward mode"),
        ({"normalization": "nfkc"}, ValueError, "unknown answer normalization 'nfkc'; allowed: squad, unicode"),
        ({"top_k": 3}, TypeError, r"unknown option\(s\) \['top_k'\] for environment 'search_qa'; allowed: backend"),
    ],
)
def test_config_errors_name_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_env("search_qa", **kwargs)


def test_bm25_index_is_built_once_per_process(env):
    assert make_env("search_qa").retriever is env.retriever  # cached per (backend, source, options)
    assert make_env("search_qa", retriever_options={"k1": 1.2}).retriever is not env.retriever


# ----------------------------------------------------------------------------------------------- HTTP backends


def test_http_backend_against_our_retrieval_server(env):
    with BackgroundServer(create_app(make_retriever("bm25", corpus_path=sample_corpus_path()))) as server:
        remote = make_env("search_qa", backend="http", url=server.url, timeout_s=10)
        obs = run(remote, search(QUESTION))
    assert obs.ok and obs.text == run(env, search(QUESTION)).text  # same passages, same format, over HTTP


INDEX_EXPLODED = {"detail": "index exploded"}


def _assert_unavailable(url: str, attempts: int = 2, limit_s: float = 3.0):
    env = make_env("search_qa", backend="http", url=url, timeout_s=0.2, max_retries=attempts - 1, backoff_s=0.01)
    start = time.perf_counter()
    obs = run(env, search(QUESTION))
    elapsed = time.perf_counter() - start
    assert not obs.ok and obs.error == "retriever_unavailable"
    assert obs.text.startswith("The search service is unavailable (2 attempt(s) failed).")  # readable by the model
    assert obs.metrics["retrieval_attempts"] == attempts and obs.metrics["retrieval_failed"] == 1.0
    assert 0.0 < obs.metrics["retrieval_latency_s"] <= elapsed < limit_s  # bounded by timeouts and retries
    return obs


def test_server_returning_500_is_retried_then_reported():
    with ScriptedHTTPServer([(500, 0.0, INDEX_EXPLODED)]) as server:
        _assert_unavailable(server.url)
        assert server.requests == 2  # first attempt + 1 retry


def test_server_down_is_reported():
    _assert_unavailable(closed_port_url())


def test_slow_server_times_out_and_is_reported():
    with ScriptedHTTPServer([(200, 1.0, INDEX_EXPLODED)]) as server:
        obs = _assert_unavailable(server.url, limit_s=1.5)  # 2 x 0.2 s timeouts, not 2 x 1 s
        assert obs.metrics["retrieval_latency_s"] >= 0.4


def test_unexpected_retriever_exception_is_reported_not_raised(env, monkeypatch):
    broken = SearchQAEnv()

    class Exploding:
        async def asearch(self, queries, topk):
            raise KeyError("bug in a backend")

    monkeypatch.setattr(broken, "retriever", Exploding())
    obs = run(broken, search(QUESTION))
    assert not obs.ok and obs.error == "retriever_error" and obs.metrics["retrieval_failed"] == 1.0
