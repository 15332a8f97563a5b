"""The tiny world's task and data: ``synthetic`` with 1-2 objectives of one hop, brief prompt, built on first use.

    tiny_world_data("train")     # verl parquet of RL prompts (RL_TRAIN_ROWS rows, fresh worlds)
    tiny_world_data("test")      # held-out worlds (another split seed): validation and evaluation
    tiny_world_sft_data()        # the oracle's SFT parquet (``mempo-data sft --source oracle``)
    tiny_world_sft_model()       # the SFT checkpoint as a Hugging Face folder (runs ``python -m mempo_verl.sft``)

Why one hop: with one hop a turn either copies a name from the question into a lookup, or copies the answer out of
the document into memory, and memory must carry answer 1 while question 2 is looked up (k = 2): the skill MemPO
credits. Held-out evaluation also asks k = 3, 4 (more objectives than trained, as MEM1 and MemPO do).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mempo_verl.platform.watchdog import run_with_watchdog
from mempo_verl.run_summary import progress_line
from mempo_verl.tiny.cache import build_once, default_cache_dir
from mempo_verl.tiny.world import tiny_world_model_dir

logger = logging.getLogger(__name__)

TRAIN_OBJECTIVES: tuple[int, ...] = (1, 2)
"""k of the training worlds (each k an equal share)."""
HOPS = 1
MAX_TURNS = 6
"""``mempo.agent.max_turns`` of the tiny-world recipes and SFT contexts: k = 2 needs 3 turns, k = 4 needs 5."""
RL_TRAIN_ROWS = 512
TEST_ROWS = 64
EVAL_OBJECTIVES: tuple[int, ...] = (1, 2, 3, 4)
"""k of the held-out evaluation sets: the trained 1-2 and more than trained (3, 4)."""
EVAL_ROWS = 32
SFT_EPISODES = int(os.environ.get("MEMPO_TINY_SFT_EPISODES", 5000))
"""Oracle episodes of the SFT set (k = 1 and k = 2 alike: ~12.5 k rows, ~390 steps of 32 in one epoch)."""
DATA_FORMAT = 3
"""Bump when the data changes in a way the names above do not show."""


def _rows(split: str, num_rows: int, seed: int) -> list[dict]:
    from mempo_verl.envs.synthetic import make_synthetic_rows

    share = num_rows // len(TRAIN_OBJECTIVES)
    rows = []
    for k in TRAIN_OBJECTIVES:
        # a seed per k: rows of one seed and split share their first world's draws whatever k
        rows += make_synthetic_rows(share, k, HOPS, seed=100 * seed + k, split=split, prompt="brief", names="pool")
    # interleave k = 1 and k = 2 so that every batch mixes them
    return [rows[i + j * share] for i in range(share) for j in range(len(TRAIN_OBJECTIVES))]


def tiny_world_data(split: str) -> str:
    """verl parquet of the tiny world's RL prompts: ``train`` or ``test`` (held-out worlds)."""
    from mempo_verl.data.builder import write_splits

    if split not in ("train", "test"):
        raise ValueError(f"${{mempo_tiny_world:{split}}}: the tiny world has splits 'train' and 'test'")
    root = default_cache_dir() / f"tiny-world-data-{DATA_FORMAT}"
    counts = {"train": RL_TRAIN_ROWS, "test": TEST_ROWS}

    def build(folder: Path) -> None:
        write_splits({s: _rows(s, n, seed=0) for s, n in counts.items()}, folder)

    return str(build_once(root, build, marker="test.parquet") / f"{split}.parquet")


def tiny_world_eval_sets() -> str:
    """A folder of ``k{k}.parquet`` held-out worlds (split ``eval``), one per k in ``EVAL_OBJECTIVES``, for
    ``mempo-eval --data``."""
    import pandas as pd

    from mempo_verl.envs.synthetic import make_synthetic_rows

    def build(folder: Path) -> None:
        for k in EVAL_OBJECTIVES:
            rows = make_synthetic_rows(EVAL_ROWS, k, HOPS, seed=k, split="eval", prompt="brief", names="pool")
            pd.DataFrame(rows).to_parquet(folder / f"k{k}.parquet", index=False)

    root = default_cache_dir() / f"tiny-world-eval-{DATA_FORMAT}-{EVAL_ROWS}"
    return str(build_once(root, build, marker=f"k{EVAL_OBJECTIVES[-1]}.parquet"))


def tiny_world_sft_data() -> str:
    """The oracle's SFT parquet on fresh ``sft`` worlds (``SFT_EPISODES`` per k), contexts as the recipes build."""
    from mempo_verl.data.sft import synthetic_oracle_rows, write_sft

    model = tiny_world_model_dir()
    root = default_cache_dir() / f"tiny-world-sft-{DATA_FORMAT}-{SFT_EPISODES}-{model.name}"

    def build(folder: Path) -> None:
        per_k = SFT_EPISODES // len(TRAIN_OBJECTIVES)
        rows = synthetic_oracle_rows(
            str(model), TRAIN_OBJECTIVES, HOPS, per_k, prompt="brief", max_turns=MAX_TURNS, names="pool"
        )
        write_sft(rows, folder / "train.parquet")
        logger.info("tiny world: %d SFT rows from %d oracle episodes", len(rows), SFT_EPISODES)

    return str(build_once(root, build, marker="train.parquet") / "train.parquet")


SFT_TIMEOUT_S = 3600.0
PROGRESS_EVERY = 25
"""Show one SFT step line in this many (the full log is in the run folder)."""


def _sft_progress(line: str) -> None:
    text = progress_line(line, prefix="[mempo] SFT ")
    if text is not None and int(text.split("step ", 1)[1].split(":", 1)[0]) % PROGRESS_EVERY in (0, 1):
        print(text, flush=True)


def tiny_world_sft_model(overrides: tuple[str, ...] = ()) -> str:
    """The SFT checkpoint's Hugging Face folder, trained once by verl's SFT trainer (``recipes/sft_tiny.yaml``)."""
    import hashlib

    key = hashlib.sha256("\n".join([tiny_world_model_dir().name, tiny_world_sft_data(), *overrides]).encode())
    run_dir = default_cache_dir() / f"tiny-world-sft-run-{key.hexdigest()[:12]}"

    def build(folder: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "mempo_verl.sft",
            "--config-name",
            "sft_tiny",
            f"trainer.default_local_dir={folder}",
            "trainer.logger=[console,file]",
            *overrides,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "VERL_FILE_LOGGER_PATH": str(folder / "metrics.jsonl")}
        print(f"[mempo] tiny world: SFT cold start with verl's SFT trainer (once; log: {folder / 'sft.log'})")
        result = run_with_watchdog(command, SFT_TIMEOUT_S, folder / "sft.log", env=env, on_line=_sft_progress)
        result.raise_for_failure()
        steps = sorted(folder.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
        if not steps or not (steps[-1] / "huggingface" / "config.json").exists():
            raise RuntimeError(f"the SFT run left no Hugging Face checkpoint under {folder}")
        (folder / "latest").symlink_to(steps[-1].name)

    return str(build_once(run_dir, build, marker="latest") / "latest" / "huggingface")
