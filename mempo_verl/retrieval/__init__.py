"""Retrieval for the search tool: in-process BM25 and dense indexes, a Search-R1-compatible server and client.

    retriever = make_retriever("bm25", corpus_path=mempo_verl.data.sample_corpus_path())  # or index_dir=..., "http"
    hits = retriever.search(["who invented the tide clock"], topk=3)[0]
    observation = format_passages(hits)              # 'Doc 1(Title: …) …' as Search-R1 shows passages

Command line: `mempo-retriever build-index …` and `mempo-retriever serve …` (see `cli.py`).
"""

from mempo_verl.retrieval.base import LocalIndex, Retriever
from mempo_verl.retrieval.bm25 import BM25Config, BM25Index
from mempo_verl.retrieval.client import RetrievalClient, RetrievalError
from mempo_verl.retrieval.dense import DenseIndex, Embedder, EmbedderConfig
from mempo_verl.retrieval.documents import Hit, normalize_document, read_corpus, split_contents
from mempo_verl.retrieval.factory import RetrieverBackend, build_index, load_index, make_retriever
from mempo_verl.retrieval.format import format_passages
from mempo_verl.retrieval.server import BackgroundServer, ServerLimits, create_app

__all__ = [
    "BM25Config",
    "BM25Index",
    "BackgroundServer",
    "DenseIndex",
    "Embedder",
    "EmbedderConfig",
    "Hit",
    "LocalIndex",
    "RetrievalClient",
    "RetrievalError",
    "Retriever",
    "RetrieverBackend",
    "ServerLimits",
    "build_index",
    "create_app",
    "format_passages",
    "load_index",
    "make_retriever",
    "normalize_document",
    "read_corpus",
    "split_contents",
]
