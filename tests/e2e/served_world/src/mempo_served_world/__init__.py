"""`synthetic_served`: the `synthetic` lookup task with every world's documents behind a retriever over HTTP.

A test plugin for tests/e2e/test_faults_on_cpu.py. The tiny world's model calls `lookup`; the only model here that
calls a tool in a training run. This environment answers each lookup from a real `mempo-retriever serve` (Search-R1's
`POST /retrieve`) over a BM25 index of the worlds' documents (`world_corpus`), through mempo-verl's own
`RetrievalClient`, so killing that server during training shows what a dead retriever does to sessions, metrics and
the trainer. A document's id is its world and entity (`document_id`); the query is the world's tag and the key, and
the hit with the exact id is the answer (BM25 ranks it first in practice; a miss is `not_found`, as a wrong name is).

Failures are reported as `search_qa` reports them: the call is checked first (`synthetic`'s own errors), and a
retriever that cannot be reached after the client's retries gives `retriever_unavailable`, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mempo_verl.envs.base import Observation, sample_extra_info
from mempo_verl.envs.synthetic import LOOKUP_TOOL, SyntheticEnv, normalize_key
from mempo_verl.retrieval import make_retriever
from mempo_verl.retrieval.client import RetrievalError

logger = logging.getLogger(__name__)

TOPK = 10


def world_tag(sample: Mapping[str, Any]) -> str:
    """One token naming the row's world: its split, objective count and index (`wtrain2i17`; the tiny world's
    splits number the rows of each k from 0)."""
    info = sample_extra_info(sample)
    return f"w{info['split']}{info['num_objectives']}i{info['index']}"


def document_id(tag: str, key: str) -> str:
    return f"{tag}/{normalize_key(key)}"


def world_corpus(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """`{id, title, text}` corpus lines (`mempo-retriever build-index`): every document of every row's world."""
    for row in rows:
        tag = world_tag(row)
        for document in sample_extra_info(row)["documents"]:
            key = str(document["key"])
            yield {"id": document_id(tag, key), "title": f"{tag} {key}", "text": str(document["text"])}


class ServedSyntheticEnv(SyntheticEnv):
    """`synthetic` whose lookups are answered by the retriever at `url` (kwargs as `synthetic`'s, plus the client's
    `url`, `timeout_s`, `max_retries`, `backoff_s`)."""

    def __init__(self, url: str, timeout_s: float = 2.0, max_retries: int = 1, backoff_s: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.retriever = make_retriever(
            "http", url=url, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s
        )

    async def step(self, tool_call: Any, sample: Mapping[str, Any]) -> Observation:
        # 1. the call is checked as `synthetic` checks it: an unknown tool or a bad key is the model's mistake
        local = await super().step(tool_call, sample)
        if tool_call.name != LOOKUP_TOOL or local.error == "bad_arguments":
            return local
        # 2. retrieve the world's document of that name
        tag, key = world_tag(sample), str(tool_call.arguments["key"])
        try:
            (hits,) = await self.retriever.asearch([f"{tag} {key}"], TOPK)
        except RetrievalError as exc:
            logger.warning("synthetic_served: retriever unavailable: %s", exc)
            text = f"The document service is unavailable ({exc.attempts} attempt(s) failed). Try again or answer."
            return Observation(text=text, ok=False, error="retriever_unavailable", metrics={"retrieval_failed": 1.0})
        wanted = document_id(tag, key)
        served = next((hit.document for hit in hits if hit.document["id"] == wanted), None)
        if served is None:  # the name is not in this world: `synthetic`'s own not_found reply, or one like it
            not_found = Observation(text=f'No document for "{key.strip()}".', ok=False, error="not_found")
            return local if not local.ok else not_found
        return Observation(
            text=f"{served['title'].split(' ', 1)[1]}: {served['text']}", metrics={"retrieval_failed": 0.0}
        )
