"""Correctness of the benchmark scripts' helpers (never their timings: performance is not asserted in tests)."""

import numpy as np
import pytest

from benchmarks.bench_credit_cost import prefix_trie_tokens
from benchmarks.bench_retrieval import NaiveBM25, make_corpus, make_queries
from benchmarks.common import markdown_table, percentile


def test_prefix_trie_tokens_counts_each_distinct_prefix_once():
    # trie of (1 2 3), (1 2 4), (1 5), (1 2 3) again: nodes 1, 2, 3, 4, 5 -> 5 tokens computed
    assert prefix_trie_tokens([(1, 2, 3), (1, 2, 4), (1, 5), (1, 2, 3)]) == 5
    # a sequence that is a prefix of another adds nothing: (1 2) inside (1 2 3)
    assert prefix_trie_tokens([(1, 2, 3), (1, 2)]) == 3
    # nothing shared: every token computed
    assert prefix_trie_tokens([(1,), (2, 3)]) == 3
    assert prefix_trie_tokens([]) == 0


def test_prefix_trie_tokens_matches_a_set_of_prefixes():
    rng = np.random.default_rng(0)
    sequences = [tuple(rng.integers(0, 3, size=rng.integers(1, 8)).tolist()) for _ in range(40)]
    # loop reference: the trie's nodes are the distinct non-empty prefixes
    prefixes = {s[:i] for s in sequences for i in range(1, len(s) + 1)}
    assert prefix_trie_tokens(sequences) == len(prefixes)


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_markdown_table_formats_cells():
    table = markdown_table(["a", "b"], [[1234, 0.5], [2.0, None]])
    assert table.splitlines() == ["| a | b |", "|---:|---:|", "| 1,234 | 0.500 |", "| 2.00 | - |"]


def test_naive_bm25_ranks_like_bm25s():
    pytest.importorskip("bm25s")
    from mempo_verl.retrieval.bm25 import BM25Index

    documents = make_corpus(300)
    index = BM25Index.build(documents)
    naive = NaiveBM25(documents)
    for query in make_queries(documents, 10):
        # the same tokens and the Lucene formula: the same top 3 (ties aside, none in this corpus)
        expected = [int(hit.document["id"]) for hit in index.search([query], 3)[0]]
        assert naive.search(query, 3) == expected


def test_warm_means_average_steps_two_to_n(tmp_path):
    import json

    from benchmarks.bench_step_split import warm_means

    lines = [
        {"step": s, "data": {"timing_s/step": 10.0 * s, "timing_s/gen": 1.0, "perf/total_num_tokens": 1000 * s * s}}
        for s in (1, 2, 3, 4)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    every = warm_means(tmp_path)
    assert every["step"] == pytest.approx(30.0) and every["warm steps"] == 3  # (20 + 30 + 40) / 3, step 1 left out
    assert every["memory credit"] == 0.0  # not logged: 0 s
    assert every["tokens"] == pytest.approx(29000 / 3)  # (4,000 + 9,000 + 16,000) / 3
    assert every["step / 1k tokens"] == pytest.approx(90 / 29)  # 90 s over 29 k tokens, not a mean of ratios
    assert warm_means(tmp_path, last_step=3)["step"] == pytest.approx(25.0)  # (20 + 30) / 2
