"""The typed settings of one evaluation run (``mempo-eval``), validated once in ``__post_init__``.

An evaluation runs the training agent loop (``MemPOAgentLoop``) under each context policy in ``methods`` over the
k-objective test sets in ``objectives``, against one model served by a backend. Everything that changes the
per-example results enters ``EvalConfig.fingerprint``: a resumed run refuses an output folder written with
different settings, so a summary never mixes two setups.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from mempo_verl.config import CONTEXT_POLICIES, ContextPolicyName, EnvConfig

BackendKind = Literal["local", "openai"]
"""Who generates: ``local`` (a transformers model in this process, CPU or GPU) or ``openai`` (any server with an
OpenAI-compatible ``/v1/completions`` endpoint taking token-id prompts: ``vllm serve``, SGLang)."""

BACKEND_KINDS: tuple[BackendKind, ...] = get_args(BackendKind)

ObjectiveScore = Literal["mean", "sum"]
"""How per-objective EM / F1 become an example's score: ``mean`` x 100 (the MemPO paper's tables; default) or
``sum`` (MEM1's summed score, range 0..k)."""

OBJECTIVE_SCORES: tuple[ObjectiveScore, ...] = get_args(ObjectiveScore)


POLICY_KEY = "mempo.context.policy"
"""Set by each method, never by an override."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is invalid; allowed: {allowed}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        _fail(name, value, "a finite number of seconds > 0")


@dataclass(frozen=True)
class BackendConfig:
    """The model and where it runs (``--backend``, ``--model``, ``--url``, ...)."""

    kind: BackendKind = "local"
    """``local`` (default) or ``openai``."""
    model: str = ""
    """``local``: a Hugging Face folder or hub name. ``openai``: the model name sent in each request (a folder
    also serves as the tokenizer)."""
    url: str | None = None
    """``openai`` only: the server's base URL, e.g. ``http://127.0.0.1:8000`` (``/v1/completions`` is added)."""
    tokenizer: str | None = None
    """The model's tokenizer (token counts and prompt ids); default ``model``. Required for ``openai`` when
    ``model`` is a served name and not a folder."""
    device: str = "cpu"
    """``local`` only: the torch device of the model. Default ``cpu``."""
    dtype: str = "float32"
    """``local`` only: the dtype the weights are loaded in: ``float32`` (default), ``bfloat16``, ``float16`` or
    ``auto`` (the checkpoint's ``config.json``). Why not ``auto`` by default: verl's Hugging Face checkpoints say
    ``bfloat16`` there whatever the run trained in, and bf16 matmuls on a CPU without AMX are slow."""
    threads: int | None = None
    """``local`` only: torch CPU threads while generating (restored after each request). Default None: torch's
    own choice. 1 is fastest for a tiny model on a busy machine (measured: 5x over 2 threads on 2 shared cores)."""
    concurrency: int = 8
    """Most episodes (hence requests: an episode has at most one in flight) running at once. Default 8. The
    ``local`` backend generates one request at a time whatever this is (one in-process model)."""
    timeout_s: float = 300.0
    """``openai``: the time limit of one request, connect to last byte. Default 300 s (a long turn on a busy
    server)."""
    max_retries: int = 3
    """``openai``: retries after the first attempt of a request that could not connect, timed out or got HTTP
    429 / 5xx. Default 3. A malformed answer is not retried (a server bug does not heal by asking again)."""
    backoff_s: float = 1.0
    """``openai``: the first wait between attempts, doubled after each retry. Default 1 s."""

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            _fail("backend.kind", self.kind, ", ".join(BACKEND_KINDS))
        if not isinstance(self.model, str) or not self.model:
            _fail("backend.model", self.model, "a model folder or name")
        if self.kind == "openai" and not self.url:
            _fail("backend.url", self.url, "the server's base URL (required with backend openai)")
        if self.kind == "local" and self.url is not None:
            _fail("backend.url", self.url, "None with backend local (the model runs in this process)")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            _fail("backend.dtype", self.dtype, "float32, bfloat16, float16, auto")
        _check_int("backend.concurrency", self.concurrency, 1)
        if self.threads is not None:
            _check_int("backend.threads", self.threads, 1)
        _check_int("backend.max_retries", self.max_retries, 0)
        _check_seconds("backend.timeout_s", self.timeout_s)
        _check_seconds("backend.backoff_s", self.backoff_s)

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer is loaded from."""
        return self.tokenizer or self.model


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings of every turn (verl's ``rollout.val_kwargs`` by default: greedy)."""

    temperature: float = 0.0
    """0 = greedy (default, as verl's validation). > 0 samples with a per-turn seed derived from ``seed``."""
    top_p: float = 1.0
    """Nucleus sampling mass. Default 1.0 (off)."""
    top_k: int = -1
    """Top-k sampling; -1 = off (vLLM's convention). Default -1."""

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < math.inf:
            _fail("sampling.temperature", t, "a finite number >= 0")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            _fail("sampling.top_p", self.top_p, "a number in (0, 1]")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or (self.top_k < 1 and self.top_k != -1):
            _fail("sampling.top_k", self.top_k, "-1 (off) or an integer >= 1")


@dataclass(frozen=True)
class BudgetConfig:
    """Token and turn budgets, the same for every method except ``full``'s trajectory budget."""

    max_turns: int = 16
    """``mempo.agent.max_turns``. Default 16 (paper, DESIGN §3)."""
    prompt_length: int = 4096
    """``rollout.prompt_length``: the most tokens of one turn's context under ``memory``/``mem1`` and of the first
    turn's under ``full``. Default 4096 (paper recipe)."""
    turn_tokens: int = 1024
    """The most tokens one turn may generate, every method (``mempo.agent.max_turn_tokens``). Default 1024 (paper
    recipe's ``max_response_length``)."""
    full_response_length: int = 12288
    """``full`` only: ``rollout.response_length``, the budget of the whole appended trajectory (generations and
    observations). Default 12288 (``grpo_full_history`` recipe)."""

    def __post_init__(self) -> None:
        for name in ("max_turns", "prompt_length", "turn_tokens", "full_response_length"):
            _check_int(f"budget.{name}", getattr(self, name), 1)


@dataclass(frozen=True)
class EvalConfig:
    """One ``mempo-eval`` run."""

    backend: BackendConfig
    """The model and its backend."""
    out_dir: str
    """Output folder: ``traces.jsonl``, ``run.json``, ``summary.md``, ``summary.csv``, ``*.png``. Re-running into
    the same folder resumes (finished examples are skipped)."""
    methods: tuple[ContextPolicyName, ...] = ("memory", "full", "mem1")
    """Context policies evaluated side by side (``mempo.context.policy``). Default all three."""
    objectives: tuple[int, ...] = (1, 2, 4, 8)
    """Objective counts k to evaluate (rows with another k are skipped). Default 1, 2, 4, 8."""
    data: str = "sample"
    """``sample`` (the shipped QA set's test split, composed for each k), a folder of ``*.parquet`` / ``*.jsonl``
    verl rows (``mempo-data eval-sets``), or comma-separated files."""
    max_examples: int | None = None
    """Evaluate at most this many rows per (dataset, k), the first ones. Default None: all."""
    seed: int = 0
    """Seeds the data composition of ``sample`` and every sampled turn (per example and turn, so a resumed or
    reordered run samples the same tokens). Default 0."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    """``mempo.env``: the environment and its options (default ``search_qa``, BM25 over the shipped corpus)."""
    overrides: tuple[str, ...] = ()
    """Dotlist overrides merged last into the composed verl config, e.g. ``mempo.context.retain_turns=3``."""
    objective_score: ObjectiveScore = "mean"
    """How EM / F1 are reported in the summary (``OBJECTIVE_SCORES``); the traces keep per-objective values."""
    progress: bool = True
    """Show a progress bar. Default true."""

    def __post_init__(self) -> None:
        if not self.methods or any(m not in CONTEXT_POLICIES for m in self.methods):
            _fail("methods", self.methods, f"a non-empty subset of {', '.join(CONTEXT_POLICIES)}")
        if len(set(self.methods)) != len(self.methods):
            _fail("methods", self.methods, "each method once")
        if not self.objectives:
            _fail("objectives", self.objectives, "one or more integers >= 1")
        for k in self.objectives:
            _check_int("objectives", k, 1)
        if self.max_examples is not None:
            _check_int("max_examples", self.max_examples, 1)
        _check_int("seed", self.seed, 0)
        if self.objective_score not in OBJECTIVE_SCORES:
            _fail("objective_score", self.objective_score, ", ".join(OBJECTIVE_SCORES))
        if any(not isinstance(o, str) or "=" not in o for o in self.overrides):
            _fail("overrides", self.overrides, "key=value strings")
        if any(o.split("=", 1)[0].strip().lstrip("+") == POLICY_KEY for o in self.overrides):
            # why: the methods set the policy; an override would run another policy under a method's name
            _fail("overrides", self.overrides, f"no {POLICY_KEY} (choose the policies with methods)")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change per-example results (a resumed run must match them exactly).

        Left out: the output folder, which methods / objective counts / how many examples (a later run may extend
        the set), the server URL and the transport settings (concurrency, timeouts, retries), the summary's
        objective score and the progress bar.
        """
        backend = self.backend
        # the JSON round trip: what run.json holds and a resumed run compares with
        return json.loads(
            json.dumps(
                {
                    "backend": {"kind": backend.kind, "model": backend.model, "tokenizer": backend.tokenizer_path},
                    "data": self.data,
                    "seed": self.seed,
                    "sampling": asdict(self.sampling),
                    "budget": asdict(self.budget),
                    "env": {"name": self.env.name, "kwargs": dict(self.env.kwargs), "timeout": self.env.tool_timeout_s},
                    "overrides": list(self.overrides),
                },
                default=lambda v: dict(v) if isinstance(v, Mapping) else str(v),
            )
        )

    def fingerprint_hash(self) -> str:
        """Short hash of ``fingerprint`` (logs and ``run.json``)."""
        return hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True).encode()).hexdigest()[:12]
