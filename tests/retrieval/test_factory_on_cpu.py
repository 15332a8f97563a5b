"""make_retriever / load_index dispatch (mempo_verl/retrieval/factory.py)."""

import pytest

pytest.importorskip("bm25s", reason="the `retrieval` extra (bm25s, PyStemmer) is not installed")

from mempo_verl.data import sample_corpus_path  # noqa: E402
from mempo_verl.retrieval import (  # noqa: E402
    BM25Index,
    LocalIndex,
    RetrievalClient,
    Retriever,
    load_index,
    make_retriever,
)


def test_bm25_over_a_corpus():
    retriever = make_retriever("bm25", corpus_path=sample_corpus_path())
    assert isinstance(retriever, BM25Index) and isinstance(retriever, LocalIndex)
    assert len(retriever) == 215  # the sample corpus
    assert retriever.config.k1 == 0.9  # Pyserini default


@pytest.mark.parametrize("backend", ["bm25", "dense"])
def test_local_backend_needs_a_source(backend):
    # the library has no default corpus: the shipped sample is `mempo_verl.data`'s, named by the caller
    with pytest.raises(ValueError, match=rf"make_retriever\('{backend}'\) needs index_dir .* or corpus_path"):
        make_retriever(backend)


def test_bm25_config_kwargs_and_saved_index(tmp_path):
    retriever = make_retriever("bm25", corpus_path=sample_corpus_path(), k1=1.5, b=0.75)
    assert (retriever.config.k1, retriever.config.b) == (1.5, 0.75)
    retriever.save(tmp_path / "idx")
    assert isinstance(make_retriever("bm25", index_dir=str(tmp_path / "idx")), BM25Index)
    assert isinstance(load_index(tmp_path / "idx"), BM25Index)  # backend read from index.json


def test_http_backend_is_the_client():
    client = make_retriever("http", url="http://127.0.0.1:8000", timeout_s=3)
    assert isinstance(client, RetrievalClient) and isinstance(client, Retriever)
    assert client.url == "http://127.0.0.1:8000/retrieve" and client.timeout_s == 3


def test_unknown_backend_lists_available():
    with pytest.raises(
        ValueError, match=r"unknown retriever backend 'pyserini'; available: \['bm25', 'dense', 'http'\]"
    ):
        make_retriever("pyserini")


def test_load_index_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        load_index(tmp_path)
