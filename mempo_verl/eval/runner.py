"""Run an evaluation: every (method, example) through the training agent loop, resumable, then the reports.

    result = run_eval(EvalConfig(backend=BackendConfig(model=path), out_dir="outputs/tiny"))
    result.rows        # SummaryRow per (method, dataset, k); result.records: EvalRecord per (method, example)

Steps: 1. check the output folder's settings (``run.json``) and load the examples; 2. skip the (method, example)
pairs whose last record is ``ok``; 3. run the others, at most ``backend.concurrency`` at once, each record appended
to ``traces.jsonl`` as soon as its episode ends; 4. summarize the records of this invocation's plan and write
``summary.md``, ``summary.csv`` and the plots.

Failures never stop the run: a backend error, a row the environment cannot read or an exception inside the episode
becomes an ``error`` record for that example (re-running retries it). Configuration errors (an unknown method, a
bad ``mempo`` override, an output folder written with other settings) raise before any example runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mempo_verl.config import ContextPolicyName, MemPOConfig
from mempo_verl.data.sft import turn_messages
from mempo_verl.eval.backends import Backend, BackendError, EpisodeServer, make_backend
from mempo_verl.eval.config import EvalConfig
from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params, trainer_config
from mempo_verl.eval.metrics import SummaryRow, example_metrics
from mempo_verl.eval.records import ErrorKind, EvalRecord, ExampleError, RecordStore, turn_traces
from mempo_verl.eval.testsets import EvalExample, load_examples
from mempo_verl.segments import Segment

logger = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class MethodSetup:
    """What every episode of one method shares."""

    config: Any
    """verl's composed config for the method (``loop.trainer_config``)."""
    sampling_params: dict[str, Any]
    mempo: MemPOConfig
    """The method's ``mempo:`` section, parsed once (turn grammar, context policy)."""

    @property
    def tags(self) -> Any:
        """The turn grammar's ``TagSet`` (for parsing the traces)."""
        return self.mempo.tags


@dataclass(frozen=True)
class RunResult:
    """What ``run_eval`` did."""

    records: list[EvalRecord]
    """The last record of every (method, example) of this invocation, in plan order."""
    rows: list[SummaryRow]
    """The summary per (method, dataset, k)."""
    ran: int
    """Episodes run now (the others were finished by an earlier invocation)."""
    errors: int
    """Examples whose last record is an error."""
    seconds: float
    files: dict[str, Path]
    """Report files written: ``summary.md``, ``summary.csv``, the plots."""


def example_seed(seed: int, example_id: str) -> int:
    """The episode seed of an example: a stable hash of (run seed, example id), < 2^30 (turn t uses seed + t, which
    stays a valid int32 for vLLM).

    The same for every method, so the methods are compared on the same random stream.
    """
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**30


def record_key(method: str, example_id: str) -> str:
    return f"{method}|{example_id}"


def method_setup(config: EvalConfig, method: ContextPolicyName) -> MethodSetup:
    """The method's composed config; its environment is built now (the loop's per-process cache), so that a bad
    environment option raises before any episode."""
    from mempo_verl.agent_loop import get_environment

    trainer = trainer_config(config, method)
    mempo = MemPOConfig.from_config(trainer.mempo)
    get_environment(mempo.env)
    return MethodSetup(trainer, sampling_params(trainer), mempo)


async def run_example(method: str, example: EvalExample, setup: MethodSetup, backend: Backend, seed: int) -> EvalRecord:
    """One episode of ``example`` under ``method``; never raises on a bad row, model or server."""
    base = dict(
        key=record_key(method, example.example_id),
        method=method,
        dataset=example.dataset,
        objectives=example.objectives,
        example_id=example.example_id,
        seed=example_seed(seed, example.example_id),
    )
    server = EpisodeServer(backend, base["seed"])
    start = time.perf_counter()

    def failed(kind: ErrorKind, message: str, turn: int | None = None) -> EvalRecord:
        error = ExampleError(kind, message, turn)
        seconds = time.perf_counter() - start
        return EvalRecord(**base, status="error", error=error, backend=dict(server.stats), seconds=seconds)

    # 1. the loop, built as verl builds it, and the row as its environment reads it
    loop = make_agent_loop(setup.config, server, backend.tokenizer, backend.hf_model_type)
    kwargs = agent_kwargs(example.row, uid=example.example_id)
    try:
        questions = tuple(loop.env.questions(kwargs))
        ground_truth = (kwargs.get("reward_model") or {}).get("ground_truth")
        loop.env.score(None, ground_truth)  # why: a missing or malformed ground truth fails here, not after the run
    except Exception as exc:
        return failed("bad_example", f"{type(exc).__name__}: {exc}")
    # 2. the episode, 3. its score (the environment's scorer) and trace
    try:
        outputs = await loop.run(setup.sampling_params, **kwargs)
        segments = [Segment.from_extra_fields(o.extra_fields) for o in outputs]
        # each turn's chat messages (a segment a turn), so correct traces can become SFT rows (data/sft.py)
        contexts = turn_messages(segments, setup.mempo) if segments[-1].layout == "per_turn" else None
        return EvalRecord(
            **base,
            status="ok",
            metrics=example_metrics(segments, loop.env.score(segments[-1].final_answer, ground_truth)),
            questions=questions,
            ground_truth=ground_truth,
            gold_answer=segments[-1].gold_answer,
            turns=tuple(turn_traces(outputs, segments, backend.tokenizer, setup.tags, contexts)),
            tools=tuple(loop.tool_schemas),
            backend=dict(server.stats),
            seconds=time.perf_counter() - start,
        )
    except BackendError as exc:
        return failed(exc.kind, str(exc), turn=server.turns - 1)
    except Exception as exc:
        # why: e.g. a first prompt longer than prompt_length; the example is reported, the run goes on
        logger.warning("%s: episode failed: %r", base["key"], exc, exc_info=logger.isEnabledFor(logging.DEBUG))
        return failed("episode_error", f"{type(exc).__name__}: {exc}", turn=server.turns - 1 if server.turns else None)


async def _run_pending(
    pending: Sequence[tuple[str, EvalExample]],
    setups: dict[str, MethodSetup],
    backend: Backend,
    store: RecordStore,
    config: EvalConfig,
    done: int,
) -> None:
    """Run ``pending`` with at most ``concurrency`` episodes in flight; append each record as it ends."""
    from tqdm import tqdm

    semaphore = asyncio.Semaphore(config.backend.concurrency)
    bar = tqdm(total=done + len(pending), initial=done, desc="mempo-eval", unit="ep", disable=not config.progress)

    async def one(method: str, example: EvalExample) -> None:
        async with semaphore:
            record = await run_example(method, example, setups[method], backend, config.seed)
        store.append(record)
        bar.update(1)
        if record.error is not None:
            bar.write(f"{record.key}: {record.error.kind}: {record.error.message[:160]}")

    try:
        await asyncio.gather(*(one(method, example) for method, example in pending))
    finally:
        bar.close()
        await backend.aclose()


def check_run_file(out_dir: Path, config: EvalConfig) -> None:
    """Refuse to resume into a folder written with other settings; record the settings of a new one."""
    path = out_dir / RUN_FILE
    fingerprint = config.fingerprint()
    if path.exists():
        previous = json.loads(path.read_text()).get("fingerprint")
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
            raise ValueError(
                f"{out_dir} holds a run with other settings ({', '.join(changed)} differ); resume with the same "
                "settings or choose another --out"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    invocation = {k: v for k, v in asdict(config).items() if k not in ("backend", "env", "sampling", "budget")}
    payload = {"fingerprint": fingerprint, "fingerprint_hash": config.fingerprint_hash(), "invocation": invocation}
    path.write_text(json.dumps(payload, indent=1, default=str))


def run_eval(config: EvalConfig, backend: Backend | None = None) -> RunResult:
    """Evaluate, resume-aware, and write the reports (see the module docstring).

    Args:
        config: the run's settings.
        backend: an already built backend (tests inject one); default ``make_backend(config.backend)``.
    """
    from mempo_verl.eval.report import summarize, write_reports

    start = time.perf_counter()
    out_dir = Path(config.out_dir)
    # 1. settings, examples, one composed config per method (a bad override raises here)
    check_run_file(out_dir, config)
    examples = load_examples(config.data, config.objectives, config.max_examples, config.seed)
    setups = {method: method_setup(config, method) for method in config.methods}
    plan = [(method, example) for method in config.methods for example in examples]
    # 2. what earlier invocations finished
    store = RecordStore(out_dir / TRACES_FILE)
    previous = store.load()
    pending = [(m, e) for m, e in plan if getattr(previous.get(record_key(m, e.example_id)), "status", None) != "ok"]
    logger.info(
        "%d episodes planned, %d finished earlier, %d to run", len(plan), len(plan) - len(pending), len(pending)
    )
    # 3. run
    if pending:
        backend = backend or make_backend(config.backend)
        asyncio.run(_run_pending(pending, setups, backend, store, config, len(plan) - len(pending)))
    # 4. summarize this invocation's plan
    latest = store.load()
    records = [latest[record_key(m, e.example_id)] for m, e in plan if record_key(m, e.example_id) in latest]
    rows = summarize(records, config.objective_score)
    files = write_reports(records, config.objective_score, out_dir)
    return RunResult(
        records=records,
        rows=rows,
        ran=len(pending),
        errors=sum(r.status == "error" for r in records),
        seconds=time.perf_counter() - start,
        files=files,
    )
