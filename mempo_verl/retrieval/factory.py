"""Build, load or connect to a retriever by backend name, through one dict per operation.

Usage:

    make_retriever("bm25", corpus_path="corpus.jsonl")       # BM25 built in memory (e.g. data.sample_corpus_path())
    make_retriever("bm25", index_dir="idx/")                 # a saved index
    make_retriever("dense", corpus_path="corpus.jsonl")      # embeds the corpus (slow on CPU)
    make_retriever("http", url="http://127.0.0.1:8000/retrieve", timeout_s=30)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mempo_verl.retrieval.base import Retriever, read_manifest
from mempo_verl.retrieval.bm25 import BM25Config, BM25Index
from mempo_verl.retrieval.client import RetrievalClient
from mempo_verl.retrieval.dense import DenseIndex, EmbedderConfig

logger = logging.getLogger(__name__)

RetrieverBackend = Literal["bm25", "dense", "http"]


def _corpus(backend: str, corpus_path: str | Path | None) -> str | Path:
    """The corpus to index; the caller names it (the shipped sample is `mempo_verl.data`'s, not retrieval's)."""
    if corpus_path is None:
        raise ValueError(f"make_retriever({backend!r}) needs index_dir (a saved index) or corpus_path (a JSONL corpus)")
    return corpus_path


def _make_bm25(index_dir: str | None = None, corpus_path: str | Path | None = None, **config: Any) -> BM25Index:
    """A saved BM25 index, or one built in memory over `corpus_path`."""
    if index_dir is not None:
        return BM25Index.load(index_dir)
    return BM25Index.from_jsonl(_corpus("bm25", corpus_path), BM25Config(**config))


def _make_dense(index_dir: str | None = None, corpus_path: str | Path | None = None, **config: Any) -> DenseIndex:
    """A saved dense index, or one built in memory over `corpus_path`."""
    if index_dir is not None:
        return DenseIndex.load(index_dir)
    return DenseIndex.from_jsonl(_corpus("dense", corpus_path), EmbedderConfig(**config))


RETRIEVER_FACTORIES: dict[str, Callable[..., Retriever]] = {
    "bm25": _make_bm25,
    "dense": _make_dense,
    "http": RetrievalClient,
}

INDEX_LOADERS: dict[str, Callable[[str | Path], Any]] = {
    "bm25": BM25Index.load,
    "dense": DenseIndex.load,
}

INDEX_BUILDERS: dict[str, Callable[..., Any]] = {
    "bm25": BM25Index.from_jsonl,
    "dense": DenseIndex.from_jsonl,
}


def _lookup(table: dict[str, Any], backend: str, what: str) -> Any:
    if backend not in table:
        raise ValueError(f"unknown {what} backend {backend!r}; available: {sorted(table)}")
    return table[backend]


def make_retriever(backend: RetrieverBackend, **kwargs: Any) -> Retriever:
    """Create a retriever.

    bm25 / dense: `index_dir` (a saved index) or `corpus_path` (JSONL; one of them is required) plus the
    backend's config fields (BM25Config / EmbedderConfig). http: RetrievalClient's `url`, `timeout_s`,
    `max_retries`, `backoff_s`, `max_backoff_s`.
    """
    return _lookup(RETRIEVER_FACTORIES, backend, "retriever")(**kwargs)


def load_index(folder: str | Path) -> BM25Index | DenseIndex:
    """Load a saved index of whichever backend its `index.json` names."""
    backend = read_manifest(folder)["backend"]
    return _lookup(INDEX_LOADERS, backend, "index")(folder)


def build_index(
    backend: Literal["bm25", "dense"], corpus_path: str | Path, show_progress: bool = False
) -> BM25Index | DenseIndex:
    """Index a JSONL corpus with the backend's default config."""
    return _lookup(INDEX_BUILDERS, backend, "index")(corpus_path, show_progress=show_progress)
