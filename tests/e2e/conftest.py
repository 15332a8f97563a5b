"""The shared trainer runs of the end-to-end tests: verl's real V1 trainer, once per test session.

`grpo_smoke` is the baseline run every e2e test reads: verl's own GRPO (`python -m verl.trainer.main_ppo`, its
`single_turn_agent`, recipes/grpo_tiny.yaml + the `platform=cpu` preset where there is no accelerator) on the tiny
model and the shipped sample QA set: 2 steps with a checkpoint each, then a second process with
`trainer.resume_mode=auto` for step 3. Both processes run under `run_with_watchdog`: a failure names the first
real worker error, a hang ends at the limit.

`tiny_world` is the embedded default's two stages, short: verl's SFT trainer on the oracle's rows
(`python -m mempo_verl.sft --config-name sft_tiny`), then MemPO RL from the shipped SFT checkpoint through the user
CLI (`python -m mempo_verl.main`, recipe `tiny_cpu`): 2 steps with held-out validation before and after and a
checkpoint each, killed in the middle of step 3, then rerun (`trainer.resume_mode=auto`) to finish step 3, all with
the per-row credit dump the MemPO tests recompute."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mempo_verl.platform.watchdog import RunResult, run_with_watchdog
from mempo_verl.run_summary import read_metrics
from mempo_verl.testing.faults import KillOnLine

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
SMOKE_REWARD = Path(__file__).with_name("smoke_reward.py")
RUN_TIMEOUT_S = 420  # one trainer process (≈ 150 s); the whole 2 + 1 step smoke takes ≈ 5 min on 2 cores
MEMPO_TIMEOUT_S = 600  # one MemPO process (≈ 2-3 min for 2 steps): multi-turn rollouts and memory credit


@dataclass
class TrainerRun:
    """One trainer process: its watchdog result and the metrics verl's file logger wrote, by step."""

    result: RunResult
    metrics: dict[int, dict[str, float]]
    checkpoint_dir: Path

    def metric(self, step: int, name: str) -> float:
        if step not in self.metrics or name not in self.metrics[step]:
            raise KeyError(f"no {name!r} at step {step}; steps logged: {sorted(self.metrics)}")
        return self.metrics[step][name]


def write_sample_parquet(out_dir: Path, train_rows: int = 16, test_rows: int = 4) -> tuple[Path, Path]:
    """train/test parquet from the shipped sample QA set (`mempo-data build`), rolled out by `single_turn_agent`."""
    from mempo_verl.data.cli import main as mempo_data

    args = ["build", "--source", "sample", "--objectives", "1", "--out", str(out_dir), "--agent-name"]
    args += ["single_turn_agent", "--max-train-rows", str(train_rows), "--max-test-rows", str(test_rows)]
    assert mempo_data(args) == 0
    return out_dir / "train.parquet", out_dir / "test.parquet"


def trainer_env(metrics_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_DEDUP_LOGS": "0",  # every worker line reaches the log with its (Actor pid=…) prefix
        "VERL_FILE_LOGGER_PATH": str(metrics_path),
        "HYDRA_FULL_ERROR": "1",
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",  # should a recipe add the wandb logger: never reach the network from a test
    }


def run_trainer(
    work_dir: Path,
    name: str,
    entry: list[str],
    overrides: list[str],
    timeout_s: float,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> TrainerRun:
    """`python -m <entry>` with a checkpoint and Hydra folder in `work_dir`, under the watchdog; metrics read back."""
    metrics_path = work_dir / f"{name}.metrics.jsonl"
    checkpoint_dir = work_dir / "checkpoints"
    cmd = [
        sys.executable,
        "-m",
        *entry,
        f"trainer.default_local_dir={checkpoint_dir}",
        f"hydra.run.dir={work_dir / ('hydra-' + name)}",
        *overrides,
    ]
    env = {**trainer_env(metrics_path), **(env or {})}
    result = run_with_watchdog(cmd, timeout_s, work_dir / f"{name}.log", env=env, cwd=work_dir, on_line=on_line)
    return TrainerRun(result=result, metrics=read_metrics(metrics_path), checkpoint_dir=checkpoint_dir)


def launch_sft(work_dir: Path, name: str, overrides: list[str], timeout_s: float = RUN_TIMEOUT_S) -> TrainerRun:
    """`python -m mempo_verl.sft --config-name sft_tiny` (verl's SFT trainer), under the watchdog."""
    return run_trainer(
        work_dir,
        name,
        ["mempo_verl.sft", "--config-name=sft_tiny", "trainer.logger=[console,file]"],
        overrides,
        timeout_s,
    )


def launch_trainer(
    work_dir: Path, name: str, recipe: str, overrides: list[str], timeout_s: float = RUN_TIMEOUT_S
) -> TrainerRun:
    """`python -m verl.trainer.main_ppo` with a recipe of recipes/ and the platform preset, under the watchdog."""
    from mempo_verl.platform import cpu_platform_selected

    entry = ["verl.trainer.main_ppo", f"--config-path={RECIPES}", f"--config-name={recipe}"]
    entry += ["platform=cpu"] if cpu_platform_selected() else []
    return run_trainer(work_dir, name, entry, overrides, timeout_s)


@dataclass
class SmokeRuns:
    first: TrainerRun  # steps 1-2, a checkpoint after each
    resumed: TrainerRun  # trainer.resume_mode=auto: step 3 from global_step_2


@pytest.fixture(scope="session")
def grpo_smoke(tmp_path_factory, tiny_model_path) -> SmokeRuns:
    """verl GRPO on the tiny model: 2 steps + checkpoints, then a resumed 3rd step (one shared run per session)."""
    work = tmp_path_factory.mktemp("grpo_smoke")
    train, val = write_sample_parquet(work / "data")
    common = [
        f"actor_rollout_ref.model.path={tiny_model_path}",
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"reward.custom_reward_function.path={SMOKE_REWARD}",
    ]
    first = launch_trainer(work, "steps1-2", "grpo_tiny", [*common, "trainer.total_training_steps=2"])
    first.result.raise_for_failure()
    resumed = launch_trainer(
        work, "step3", "grpo_tiny", [*common, "trainer.total_training_steps=3", "trainer.resume_mode=auto"]
    )
    resumed.result.raise_for_failure()
    return SmokeRuns(first=first, resumed=resumed)


def launch_tiny_cpu(
    work_dir: Path,
    name: str,
    overrides: list[str],
    model_cache: Path,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> TrainerRun:
    """The user CLI on the embedded default, `python -m mempo_verl.main --config-name tiny_cpu`, under the watchdog
    (`MEMPO_CACHE_DIR=model_cache`: the recipe's `${mempo_tiny_world:…}` fixtures are built there; `env` added)."""
    entry = ["mempo_verl.main", "--config-name=tiny_cpu"]
    # WANDB_DIR: where a run with the wandb logger (offline: `trainer_env`) writes; test_mempo_train_on_cpu reads it
    env = {"MEMPO_CACHE_DIR": str(model_cache), "WANDB_DIR": str(work_dir / f"wandb-{name}"), **(env or {})}
    return run_trainer(work_dir, name, entry, overrides, MEMPO_TIMEOUT_S, env, on_line)


@pytest.fixture
def tiny_cpu_run(tmp_path, model_cache) -> Callable[..., TrainerRun]:
    """`launch_tiny_cpu` in the test's own folder: `tiny_cpu_run(name, overrides, on_line=None, env=None)`."""
    return lambda name, overrides, on_line=None, env=None: launch_tiny_cpu(
        tmp_path, name, overrides, model_cache, on_line, env
    )


@dataclass
class TinyWorldRuns:
    sft: TrainerRun  # verl's SFT trainer on the oracle's rows, from random weights
    sft_model: Path  # its final Hugging Face folder
    rl: TrainerRun  # MemPO from the shipped SFT checkpoint: validation, steps 1-2 (a checkpoint each), validation,
    # then killed (SIGKILL, the whole tree) in the middle of step 3
    resumed: TrainerRun  # the command again (trainer.resume_mode=auto, scorer actor): step 3 from global_step_2
    train_file: Path  # the RL prompts in training order (no shuffling)
    sft_steps: int
    rl_steps: int

    def run_of(self, step: int) -> TrainerRun:
        """The process that trained `step`: the first up to `rl_steps`, then the rerun after the crash."""
        return self.rl if step <= self.rl_steps else self.resumed


TINY_SFT_STEPS = 40
TINY_RL_STEPS = 2


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, model_cache) -> TinyWorldRuns:
    """The tiny world's two stages, short: TINY_SFT_STEPS SFT steps of 32 oracle rows from random weights; then
    TINY_RL_STEPS MemPO steps of the embedded default from the shipped SFT checkpoint (the recipe's full SFT run, so
    its sessions are right often enough for the advantages to be non-zero), a crash in the middle of the next step
    (`KillOnLine` of the driver, 4 s after step 2's console line) and the rerun that resumes it.

    Steps 1-2 score memory credit with the recipe's default `scorer: rollout` (vLLM generates each gold answer at
    session end), the resumed step 3 with `scorer: actor` (the FSDP actor inside the step): the credit dump of each
    step is checked against the same formulas, so both scoring paths are tested end to end."""
    from mempo_verl.data.sft import synthetic_oracle_rows, write_sft
    from mempo_verl.tiny import data, tiny_world_model_dir

    work = tmp_path_factory.mktemp("tiny_world")
    (work / "sft").mkdir()
    (work / "rl").mkdir()
    model = tiny_world_model_dir(model_cache)
    rows = synthetic_oracle_rows(
        str(model),
        data.TRAIN_OBJECTIVES,
        data.HOPS,
        260,
        prompt=data.PROMPT,
        max_turns=data.MAX_TURNS,
        names="pool",
        config_overrides=data.CONTEXT_OVERRIDES,
    )
    sft_file = write_sft(rows, work / "sft.parquet")
    sft = launch_sft(
        work / "sft",
        "sft",
        [f"model.path={model}", f"data.train_files={sft_file}", f"trainer.total_training_steps={TINY_SFT_STEPS}"],
    )
    sft.result.raise_for_failure()
    sft_model = sft.checkpoint_dir / f"global_step_{TINY_SFT_STEPS}" / "huggingface"
    provenance = data.shipped_sft_provenance()
    assert provenance and provenance["key"] == data.sft_run_key(), "the shipped SFT checkpoint is stale (ship-sft)"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEMPO_CACHE_DIR", str(model_cache))
        train_file = Path(data.tiny_world_data("train"))
    common = [
        f"actor_rollout_ref.model.path={data.SHIPPED_SFT_DIR}",
        f"trainer.total_training_steps={TINY_RL_STEPS + 1}",
        "trainer.resume_mode=auto",
        f"data.train_files={train_file}",
        "data.shuffle=false",
        f"trainer.test_freq={TINY_RL_STEPS}",
        "trainer.save_freq=1",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "data.val_max_samples=8",
        f"mempo.run.credit_dump_dir={work / 'rl' / 'credit'}",
        "mempo.run.timeout_s=0",  # the test's own watchdog bounds the run
        "trainer.logger=[console,file,wandb]",  # wandb offline (trainer_env): its history is read back too
    ]

    crash = KillOnLine(f"step:{TINY_RL_STEPS} - ", target=f"hydra.run.dir={work / 'rl' / 'hydra-rl'}")
    rl = launch_tiny_cpu(work / "rl", "rl", common, model_cache, on_line=crash)
    if rl.result.returncode != -signal.SIGKILL:  # anything but the crash is a failure of the run itself
        rl.result.raise_for_failure()
        raise RuntimeError(f"the run was not killed in step {TINY_RL_STEPS + 1}: {rl.result.describe()}")
    rerun = [*common, "trainer.val_before_train=false", "mempo.credit.scorer=actor"]
    resumed = launch_tiny_cpu(work / "rl", "resumed", rerun, model_cache)
    resumed.result.raise_for_failure()
    return TinyWorldRuns(
        sft=sft,
        sft_model=sft_model,
        rl=rl,
        resumed=resumed,
        train_file=train_file,
        sft_steps=TINY_SFT_STEPS,
        rl_steps=TINY_RL_STEPS,
    )
