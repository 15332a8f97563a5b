"""Evaluation harness: the training agent loop and context policies against a served or local model, over
k-objective test sets; per-example traces, summary tables and plots (``mempo-eval``, ``cli.py``).

    from mempo_verl.eval import BackendConfig, EvalConfig, run_eval
    result = run_eval(EvalConfig(backend=BackendConfig(model="path/to/model"), out_dir="outputs/x"))

Modules, in data-path order: ``config`` (settings) -> ``testsets`` (rows) -> ``backends`` (generation) -> ``loop``
(``MemPOAgentLoop`` as verl builds it) -> ``metrics`` (pure math) -> ``records`` (traces, resumable JSONL) ->
``runner`` -> ``report`` / ``plots`` -> ``cli``.
"""

from mempo_verl.eval.backends import (
    BackendError,
    EpisodeServer,
    LocalModelBackend,
    OpenAICompletionsBackend,
    make_backend,
    parse_completion,
)
from mempo_verl.eval.config import BackendConfig, BudgetConfig, EvalConfig, SamplingConfig
from mempo_verl.eval.metrics import ExampleMetrics, SummaryRow, example_metrics, token_totals
from mempo_verl.eval.records import EvalRecord, ExampleError, RecordStore
from mempo_verl.eval.report import compare, summarize, write_reports
from mempo_verl.eval.runner import RunResult, run_eval
from mempo_verl.eval.testsets import EvalExample, load_examples

__all__ = [
    "BackendConfig",
    "BackendError",
    "BudgetConfig",
    "EpisodeServer",
    "EvalConfig",
    "EvalExample",
    "EvalRecord",
    "ExampleError",
    "ExampleMetrics",
    "LocalModelBackend",
    "OpenAICompletionsBackend",
    "RecordStore",
    "RunResult",
    "SamplingConfig",
    "SummaryRow",
    "compare",
    "example_metrics",
    "load_examples",
    "make_backend",
    "parse_completion",
    "run_eval",
    "summarize",
    "token_totals",
    "write_reports",
]
