"""`search_qa`: single- and multi-objective question answering with a `search` tool (Search-R1, MEM1; DESIGN §4).

    env = make_env("search_qa")                                        # BM25 over the shipped sample corpus
    env = make_env("search_qa", backend="http", url="http://127.0.0.1:8000/retrieve", timeout_s=5)
    obs = await env.step(ToolCall("search", {"query": "capital of Aldmark"}), row)
    obs.text == "Doc 1(Title: Aldmark) Aldmark is …\\nDoc 2(Title: …) …"

A row holds k questions (`extra_info["questions"]`, MEM1-style composition by `mempo_verl.data`) and their golds
(`reward_model.ground_truth = {"target": [[aliases of answer 1], …]}`); the model answers `<answer>a1; a2</answer>`.

The `search` tool takes `{"query": str}`; a list of strings (at most `max_queries` of them) is accepted too, and
returns each query's passages under a `Results for "…":` header. A failing call never raises: bad calls and a
retriever that stays down after the client's retries come back as `Observation(ok=False)` with an error kind
(`SearchErrorKind`) and a message the model can read, so the episode goes on and the failure is counted.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mempo_verl.data import sample_corpus_path
from mempo_verl.envs.base import Environment, Observation, sample_questions, turn_format_prompt
from mempo_verl.envs.registry import config_from_kwargs, register_env
from mempo_verl.protocol import ToolCall
from mempo_verl.retrieval import RetrievalError, Retriever, format_passages, make_retriever
from mempo_verl.rewards import (
    AnswerNormalization,
    AnswerScore,
    RewardMode,
    golds_from_ground_truth,
    score_answer,
    validate_normalization,
    validate_reward_mode,
)

logger = logging.getLogger(__name__)

SEARCH_TOOL = "search"

SearchBackend = Literal["bm25", "dense", "http"]
"""Where passages come from: in-process BM25 (default), in-process dense (faiss), or any Search-R1 server."""

SEARCH_BACKENDS: tuple[SearchBackend, ...] = get_args(SearchBackend)

SearchErrorKind = Literal["unknown_tool", "bad_arguments", "retriever_unavailable", "retriever_error"]
"""`Observation.error` values: a tool other than `search`; a missing, empty or mistyped query; the retriever
failed after the client's retries (HTTP down, timeout, 5xx, malformed answer); an unexpected retriever exception."""


@dataclass(frozen=True)
class SearchQAConfig:
    """Options of `search_qa` (the keyword arguments of `make_env("search_qa", ...)`)."""

    backend: SearchBackend = "bm25"
    """Retriever backend: "bm25" (default, in process, DESIGN §4), "dense" (faiss, in process) or "http"."""
    topk: int = 3
    """Passages returned per query. Default 3 (Search-R1, MEM1)."""
    reward_mode: RewardMode = "all_em"
    """How `score` combines the objectives: "all_em" (paper, default), "em_mean", "f1_mean", "em_sum" (MEM1)."""
    normalization: AnswerNormalization = "squad"
    """Answer normalisation of `score` (`rewards.AnswerNormalization`): "squad" (the official SQuAD v1.1 rules,
    default) or "unicode" (accents and Unicode punctuation folded too)."""
    index_dir: str | None = None
    """bm25/dense: a saved index (`mempo-retriever build-index`). Default None: index `corpus_path` in memory."""
    corpus_path: str | None = None
    """bm25/dense: a JSONL corpus to index in memory. Default None: the shipped sample corpus."""
    retriever_options: Mapping[str, Any] = field(default_factory=dict)
    """bm25/dense: extra fields of `BM25Config` / `EmbedderConfig` (e.g. {"k1": 1.2}). Default {}."""
    url: str | None = None
    """http: the `/retrieve` endpoint (required for "http"), e.g. "http://127.0.0.1:8000/retrieve"."""
    timeout_s: float = 10.0
    """http: per-request timeout in seconds. Default 10, so that the worst case (4 attempts + 3.5 s of backoff,
    43.5 s) ends before the agent loop's own `mempo.env.tool_timeout_s` (60 s) and is reported as
    `retriever_unavailable` with its metrics."""
    max_retries: int = 3
    """http: retries after the first attempt (connection errors, timeouts, 5xx). Default 3."""
    backoff_s: float = 0.5
    """http: first backoff between attempts in seconds, doubled each retry. Default 0.5."""
    max_queries: int = 3
    """Most queries in one call when the model passes a list. Default 3."""

    def __post_init__(self) -> None:
        if self.backend not in SEARCH_BACKENDS:
            raise ValueError(f"SearchQAConfig.backend={self.backend!r}; allowed: {', '.join(SEARCH_BACKENDS)}")
        validate_reward_mode(self.reward_mode)
        validate_normalization(self.normalization)
        for name in ("topk", "max_queries"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SearchQAConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.backend == "http" and not self.url:
            raise ValueError("SearchQAConfig.url is required when backend='http'")
        if self.backend != "http" and self.url is not None:
            raise ValueError(f"SearchQAConfig.url is only used with backend='http', got backend={self.backend!r}")
        if self.backend == "http" and (self.index_dir or self.corpus_path or self.retriever_options):
            raise ValueError("SearchQAConfig.index_dir/corpus_path/retriever_options are for bm25/dense, not http")
        # why: Hydra hands over a DictConfig; a plain dict keeps the config picklable and hashable for the cache
        object.__setattr__(self, "retriever_options", dict(self.retriever_options))


# ----------------------------------------------------------------------------------------------- retrievers

_INDEX_LOCK = threading.Lock()


@functools.cache
def _cached_local_index(
    backend: str, index_dir: str | None, corpus_path: str | None, options: tuple[tuple[str, Any], ...]
) -> Retriever:
    """One in-process index per (backend, source, options) and process: every env instance and session shares it."""
    logger.info("building the %s retriever (index_dir=%s, corpus_path=%s)", backend, index_dir, corpus_path)
    return make_retriever(backend, index_dir=index_dir, corpus_path=corpus_path, **dict(options))


def _local_retriever(config: SearchQAConfig) -> Retriever:
    options = tuple(sorted(config.retriever_options.items()))
    corpus_path = config.corpus_path
    if config.index_dir is None and corpus_path is None:
        corpus_path = str(sample_corpus_path())  # `corpus_path`'s documented default
    # why the lock: lru_cache does not stop two threads from building the same index at once
    with _INDEX_LOCK:
        return _cached_local_index(config.backend, config.index_dir, corpus_path, options)


def _http_retriever(config: SearchQAConfig) -> Retriever:
    return make_retriever(
        "http", url=config.url, timeout_s=config.timeout_s, max_retries=config.max_retries, backoff_s=config.backoff_s
    )


_RETRIEVER_BUILDERS: dict[SearchBackend, Callable[[SearchQAConfig], Retriever]] = {
    "bm25": _local_retriever,
    "dense": _local_retriever,
    "http": _http_retriever,
}


# ----------------------------------------------------------------------------------------------- the environment


def _failure(kind: SearchErrorKind, text: str, metrics: Mapping[str, float] | None = None) -> Observation:
    return Observation(text=text, ok=False, error=kind, metrics=dict(metrics or {}))


def parse_queries(tool_call: ToolCall, max_queries: int) -> list[str] | Observation:
    """The call's queries (stripped), or the `ok=False` observation that explains what is wrong with the call.

    Accepted: `{"query": "…"}` or `{"query": ["…", "…"]}` (1 to `max_queries` non-empty strings). Other argument
    keys are ignored: models add options such as "topk", and refusing them would end searches for nothing.
    """
    example = '{"name": "search", "arguments": {"query": "your search terms"}}'
    if tool_call.name != SEARCH_TOOL:
        return _failure("unknown_tool", f"Unknown tool {tool_call.name!r}. The only tool is search: {example}")
    query = tool_call.arguments.get("query")
    queries = [query] if isinstance(query, str) else query
    if query is None:
        problem = 'the "query" argument is missing'
    elif not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        problem = f'"query" must be a string (or a list of strings), got {type(query).__name__}'
    elif not queries or not all(q.strip() for q in queries):
        problem = '"query" is empty'
    elif len(queries) > max_queries:
        problem = f"at most {max_queries} queries per call, got {len(queries)}"
    else:
        return [q.strip() for q in queries]
    return _failure("bad_arguments", f"Bad search call: {problem}. Write {example}")


def format_results(queries: list[str], hits: list[list[Any]]) -> str:
    """One query: its passages exactly as `format_passages` writes them; several: each under a header."""
    blocks = []
    for query, query_hits in zip(queries, hits, strict=True):
        passages = format_passages(query_hits) if query_hits else f'No passages found for "{query}".'
        blocks.append(passages if len(queries) == 1 else f'Results for "{query}":\n{passages}')
    return "\n".join(blocks)


@register_env("search_qa")
class SearchQAEnv(Environment):
    """Question answering over a retriever; see the module docstring. Keyword arguments: `SearchQAConfig` fields.

    The retriever is built in the constructor (a bm25/dense index once per process and source, cached), so a bad
    corpus path or a missing extra fails at start-up rather than in the middle of a rollout.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.config = config_from_kwargs(SearchQAConfig, kwargs, "search_qa")
        self.retriever = _RETRIEVER_BUILDERS[self.config.backend](self.config)

    def task_prompt(self, sample: Mapping[str, Any]) -> str:
        """Search instructions and the turn format, worded for the row's number of questions."""
        k = len(sample_questions(sample))
        task = (
            "Answer the question by searching a knowledge base as many times as you need."
            if k == 1
            else f"Answer the {k} questions by searching a knowledge base as many times as you need."
        )
        return turn_format_prompt(
            task=task,
            call_template=ToolCall(SEARCH_TOOL, {"query": "..."}),
            call_result=f"the top {self.config.topk} passages",
            example_mem="Goal: birthplace of the tide clock's inventor. Found nothing yet.",
            example_think="First I need to know who invented the tide clock.",
            example_call=ToolCall(SEARCH_TOOL, {"query": "tide clock inventor"}),
            num_objectives=k,
        )

    def questions(self, sample: Mapping[str, Any]) -> list[str]:
        return sample_questions(sample)

    def tool_schemas(self) -> list[dict[str, Any]]:
        description = f"Search the knowledge base; returns the top {self.config.topk} passages."
        query = {"type": "string", "description": "What to search for (a few keywords or a question)."}
        parameters = {"type": "object", "properties": {"query": query}, "required": ["query"]}
        function = {"name": SEARCH_TOOL, "description": description, "parameters": parameters}
        return [{"type": "function", "function": function}]

    async def step(self, tool_call: ToolCall, sample: Mapping[str, Any]) -> Observation:
        """Run one search. Never raises: see `SearchErrorKind` for the failures it reports."""
        # 1. check the call: a bad call is the model's mistake, reported back so that it can fix it next turn
        queries = parse_queries(tool_call, self.config.max_queries)
        if isinstance(queries, Observation):
            return queries
        # 2. retrieve
        start = time.perf_counter()
        try:
            hits = await self.retriever.asearch(queries, self.config.topk)
        except RetrievalError as exc:
            # the client already retried with backoff: tell the model, count it, and let the episode go on
            logger.warning("search_qa: retriever unavailable: %s", exc)
            metrics = {
                "retrieval_latency_s": time.perf_counter() - start,
                "retrieval_attempts": float(exc.attempts),
                "retrieval_failed": 1.0,
            }
            text = f"The search service is unavailable ({exc.attempts} attempt(s) failed). Try again or answer."
            return _failure("retriever_unavailable", text, metrics)
        except Exception:
            # why catch everything: an exception here would kill the worker and every rollout on it
            logger.exception("search_qa: retriever raised on queries %r", queries)
            metrics = {"retrieval_latency_s": time.perf_counter() - start, "retrieval_failed": 1.0}
            text = "The search failed with an internal error. Try again or answer."
            return _failure("retriever_error", text, metrics)
        # 3. format the passages as Search-R1 shows them
        metrics = {
            "retrieval_latency_s": time.perf_counter() - start,
            "retrieval_failed": 0.0,
            "retrieval_num_queries": float(len(queries)),
            "retrieval_num_hits": float(sum(len(h) for h in hits)),
        }
        return Observation(text=format_results(queries, hits), metrics=metrics)

    def score(self, answer: str | None, ground_truth: Any) -> AnswerScore:
        """`rewards.score_answer` of `"a1; a2; …"` against one alias list per objective, in `reward_mode` and
        `normalization`."""
        golds = golds_from_ground_truth(ground_truth)
        return score_answer(answer, golds, self.config.reward_mode, self.config.normalization)

    def gold_answer_text(self, ground_truth: Any) -> str:
        """The first alias of each objective, joined with "; " (what memory credit teacher-forces)."""
        return "; ".join(aliases[0] for aliases in golds_from_ground_truth(ground_truth))
