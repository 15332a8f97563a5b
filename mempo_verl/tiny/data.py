"""The tiny world's task and data: ``synthetic`` with 1-2 objectives of one hop, one-line prompt, built on first use.

    tiny_world_data("train")     # verl parquet of RL prompts (RL_TRAIN_ROWS rows, fresh worlds)
    tiny_world_data("test")      # held-out worlds (another split seed): validation and evaluation
    tiny_world_sft_data()        # the oracle's SFT parquet (``mempo-data sft --source oracle``)
    tiny_world_sft_model()       # the SFT checkpoint as a Hugging Face folder: the shipped one while current, else
                                 # trained once (``python -m mempo_verl.sft``); MEMPO_TINY_SFT=train always trains
    python -m mempo_verl.tiny.data ship-sft    # retrain and write the shipped checkpoint (maintainers)

Why one hop: with one hop a turn either copies a name from the question into a lookup, or copies the answer out of
the document into memory, and memory must carry answer 1 while question 2 is looked up (k = 2): the skill MemPO
credits. Held-out evaluation also asks k = 3, 4 (more objectives than trained, as MEM1 and MemPO do).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from mempo_verl.platform.watchdog import run_with_watchdog
from mempo_verl.run_summary import progress_line
from mempo_verl.tiny.cache import build_once, default_cache_dir
from mempo_verl.tiny.world import TinyWorldConfig, tiny_world_model_dir

logger = logging.getLogger(__name__)

PROMPT = "tiny"
"""``synthetic``'s task prompt here (``tiny_task_prompt``, one line): the context is mostly question, memory and
document, which is what lets the 4-layer model learn to copy names (measured there)."""
CONTEXT_OVERRIDES: dict[str, object] = {"mempo.context.turns_left_hint": False}
"""The tiny-world recipes' context keys that differ from the defaults (``recipes/tiny_cpu.yaml`` sets the same): no
turns-left hint, for the same reason."""
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
SAMPLED_EVAL_ROWS = 128
"""Held-out worlds per trained k for the sampled evaluation (temperature 1, the policy RL trains): one world is 0.8
points, against 3.1 in the greedy table's 32."""
SFT_EPISODES = int(os.environ.get("MEMPO_TINY_SFT_EPISODES", 16000))
"""Oracle episodes of the SFT set (k = 1 and k = 2 alike: 40 k rows, 1,250 steps of 32 in one epoch). Why 16 k: at
8 k (625 steps) the loss was still falling (0.14 at 375, 0.11 at 625) and held-out turns were right 65 % (lookups) /
14 % (answers)."""
DATA_FORMAT = 4
"""Bump when the data changes in a way the names above do not show."""


def _rows(split: str, num_rows: int, seed: int) -> list[dict]:
    from mempo_verl.envs.synthetic import make_synthetic_rows

    share = num_rows // len(TRAIN_OBJECTIVES)
    rows = []
    for k in TRAIN_OBJECTIVES:
        # a seed per k: rows of one seed and split share their first world's draws whatever k
        rows += make_synthetic_rows(share, k, HOPS, seed=100 * seed + k, split=split, prompt=PROMPT, names="pool")
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


def tiny_world_eval_sets(rows: int = EVAL_ROWS, objectives: tuple[int, ...] = EVAL_OBJECTIVES) -> str:
    """A folder of ``k{k}.parquet`` held-out worlds (split ``eval``), ``rows`` per k in ``objectives``, for
    ``mempo-eval --data``. A set of more rows starts with the worlds of a smaller one."""
    import pandas as pd

    from mempo_verl.envs.synthetic import make_synthetic_rows

    def build(folder: Path) -> None:
        for k in objectives:
            world_rows = make_synthetic_rows(rows, k, HOPS, seed=k, split="eval", prompt=PROMPT, names="pool")
            pd.DataFrame(world_rows).to_parquet(folder / f"k{k}.parquet", index=False)

    ks = "" if objectives == EVAL_OBJECTIVES else "-k" + "".join(map(str, objectives))
    root = default_cache_dir() / f"tiny-world-eval-{DATA_FORMAT}-{rows}{ks}"
    return str(build_once(root, build, marker=f"k{objectives[-1]}.parquet"))


def _sft_data_name() -> str:
    return f"tiny-world-sft-{DATA_FORMAT}-{SFT_EPISODES}-tiny-world-{TinyWorldConfig().fingerprint()}"


def tiny_world_sft_data() -> str:
    """The oracle's SFT parquet on fresh ``sft`` worlds (``SFT_EPISODES`` per k), contexts as the recipes build."""
    from mempo_verl.data.sft import synthetic_oracle_rows, write_sft

    model = tiny_world_model_dir()
    root = default_cache_dir() / _sft_data_name()

    def build(folder: Path) -> None:
        per_k = SFT_EPISODES // len(TRAIN_OBJECTIVES)
        rows = synthetic_oracle_rows(
            str(model),
            TRAIN_OBJECTIVES,
            HOPS,
            per_k,
            prompt=PROMPT,
            max_turns=MAX_TURNS,
            names="pool",
            config_overrides=CONTEXT_OVERRIDES,
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


SHIPPED_SFT_DIR = Path(__file__).with_name("sft_checkpoint")
"""The SFT checkpoint shipped in the package (a Hugging Face folder plus ``provenance.json``): the ``sft_tiny``
recipe's run at the defaults, so that RL on the tiny world starts in seconds instead of after ~30 min of SFT. It is
used only while its provenance key is that of the current code (tokenizer and model shape, SFT data, recipe)."""
SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def sft_run_key(overrides: tuple[str, ...] = ()) -> str:
    """What an SFT run of the tiny world depends on: the random model's fingerprint, the SFT data, the recipe's
    settings (its lines without comments) and the overrides, as a 12-hex digest."""
    from mempo_verl.main import RECIPES_DIR

    recipe = [line.split("#", 1)[0].rstrip() for line in (RECIPES_DIR / "sft_tiny.yaml").read_text().splitlines()]
    parts = [f"tiny-world-{TinyWorldConfig().fingerprint()}", _sft_data_name(), *filter(None, recipe), *overrides]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def shipped_sft_provenance() -> dict | None:
    """The shipped checkpoint's ``provenance.json`` (key, steps, final loss, how it was made), or None."""
    path = SHIPPED_SFT_DIR / "provenance.json"
    return json.loads(path.read_text()) if path.exists() else None


def tiny_world_sft_model(overrides: tuple[str, ...] = (), shipped: bool = True) -> str:
    """The SFT checkpoint's Hugging Face folder: the shipped one when ``shipped`` and current (and
    ``MEMPO_TINY_SFT`` is not ``train``), else trained once by verl's SFT trainer (``recipes/sft_tiny.yaml``)."""
    key = sft_run_key(overrides)
    provenance = shipped_sft_provenance()
    if shipped and os.environ.get("MEMPO_TINY_SFT") != "train" and provenance and provenance["key"] == key:
        return str(SHIPPED_SFT_DIR)
    if provenance and shipped:
        logger.warning("the shipped SFT checkpoint has key %s, these settings %s: training", provenance["key"], key)
    run_dir = default_cache_dir() / f"tiny-world-sft-run-{key}"

    def build(folder: Path) -> None:
        # the data first, here: its builder composes a config with Hydra, which the SFT process's resolvers cannot
        tiny_world_sft_data()
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


def ship_sft_checkpoint() -> Path:
    """Train the default SFT run (or reuse its cache) and copy its Hugging Face folder into ``SHIPPED_SFT_DIR``."""
    from mempo_verl.run_summary import read_metrics

    source = Path(tiny_world_sft_model(shipped=False))
    metrics = read_metrics(source.parents[1] / "metrics.jsonl")
    last = max(metrics)
    SHIPPED_SFT_DIR.mkdir(exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(source / name, SHIPPED_SFT_DIR / name)
    # verl writes dtype bfloat16 over the fp32 weights, which transformers would then load as bf16
    config = json.loads((source / "config.json").read_text())
    (SHIPPED_SFT_DIR / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2) + "\n")
    provenance = {
        "key": sft_run_key(),
        "steps": last,
        "final_loss": round(metrics[last]["train/loss"], 4),
        "made_by": "python -m mempo_verl.tiny.data ship-sft (verl's SFT trainer, recipes/sft_tiny.yaml)",
    }
    (SHIPPED_SFT_DIR / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return SHIPPED_SFT_DIR


if __name__ == "__main__":
    if sys.argv[1:] != ["ship-sft"]:
        sys.exit("usage: python -m mempo_verl.tiny.data ship-sft")
    print(f"wrote {ship_sft_checkpoint()}")
