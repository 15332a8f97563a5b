"""Entry point: `python -m mempo_verl.main --config-name <recipe> [hydra overrides]`.

A recipe (recipes/*.yaml) is verl's `ppo_trainer` config (Hydra searchpath `pkg://verl.trainer.config`) plus a
`mempo:` section. This module:

1. checks the environment (`mempo-doctor`'s checks), validates the `mempo:` section and its agreement with verl's
   keys (`config.check_verl_config`) before anything starts, failing with the keys, the value and the allowed set;
2. runs verl's own V1 path (`verl.trainer.main_ppo.run_ppo` with `TaskRunnerV1`), which picks `MemPOTrainer`
   through `trainer.v1.trainer_mode=mempo` and the `mempo_agent` loop through the rows' `agent_name`;
3. with `mempo.run.timeout_s > 0` (or `MEMPO_TIMEOUT_S`), runs step 2 in a child process under the watchdog: a hang
   ends at the limit and a worker failure is reported as its first real error, not the downstream symptom.

Resolvers usable in recipes, each built on first use:
- `${mempo_tiny_world:train|test|model|sft_model|sft_train}`: the tiny world's RL data, its random-weight model, its
  SFT checkpoint, the oracle's SFT rows;
- `${mempo_tiny_model:random|sft}`: the random-weight tiny Qwen2 with Qwen2.5's vocabulary; the tiny world's SFT
  checkpoint;
- `${mempo_sample_data:train,1}`: verl parquet of the shipped QA set (split, objective count).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
_CHILD_ENV = "MEMPO_WATCHDOG_CHILD"


def sample_data_path(split: str = "train", objectives: int = 1) -> str:
    """verl parquet of the shipped QA set (`mempo-data build --source sample`), cached per objective count."""
    from mempo_verl.data.builder import BuildConfig, build_rows, load_pools, write_splits
    from mempo_verl.tiny.cache import default_cache_dir

    out_dir = default_cache_dir() / f"sample_data_k{int(objectives)}"
    path = out_dir / f"{split}.parquet"
    if not path.exists():
        written = write_splits(build_rows(load_pools("sample"), BuildConfig(objectives=int(objectives))), out_dir)
        logger.info("built the shipped QA set as parquet: %s", written)
    if not path.exists():
        raise FileNotFoundError(f"the shipped QA set has no {split!r} split (built: {sorted(os.listdir(out_dir))})")
    return str(path)


def tiny_world_path(kind: str) -> str:
    """The tiny world's fixtures (``mempo_verl.tiny``), built on first use: ``model`` (random weights), ``sft_model``
    (after the SFT cold start), ``train`` / ``test`` (RL prompts), ``sft_train`` (the oracle's SFT rows)."""
    from mempo_verl.tiny import data, world

    builders = {
        "model": lambda: str(world.tiny_world_model_dir()),
        "sft_model": data.tiny_world_sft_model,
        "train": lambda: data.tiny_world_data("train"),
        "test": lambda: data.tiny_world_data("test"),
        "sft_train": data.tiny_world_sft_data,
    }
    if kind not in builders:
        raise ValueError(f"${{mempo_tiny_world:{kind}}}: unknown kind; choose one of {sorted(builders)}")
    return builders[kind]()


def register_resolvers() -> None:
    """OmegaConf resolvers for the embedded defaults (idempotent)."""
    from mempo_verl.tiny.models import tiny_model_path

    if not OmegaConf.has_resolver("mempo_tiny_world"):
        OmegaConf.register_new_resolver("mempo_tiny_world", tiny_world_path)
    if not OmegaConf.has_resolver("mempo_tiny_model"):
        OmegaConf.register_new_resolver("mempo_tiny_model", tiny_model_path)
    if not OmegaConf.has_resolver("mempo_sample_data"):
        OmegaConf.register_new_resolver("mempo_sample_data", sample_data_path)


def validate(config: DictConfig) -> None:
    """Fail fast, before Ray starts: a broken install, an unregistered name or a bad `mempo:` value."""
    from mempo_verl.config import check_verl_config, mempo_section
    from mempo_verl.doctor import require_ready

    require_ready()
    check_verl_config(mempo_section(config), config)


# ray.init arguments that describe the node it would start: Ray refuses each of them when it attaches to a running
# cluster ("When connecting to an existing cluster, num_cpus and num_gpus must not be provided", worker.py)
_NODE_RESOURCE_KEYS = ("num_cpus", "num_gpus", "resources", "object_store_memory", "labels")


def cluster_address(config: DictConfig) -> str | None:
    """The running Ray cluster this run attaches to: ``ray_kwargs.ray_init.address``, else ``$RAY_ADDRESS`` (set by
    ``ray job submit`` in the job's driver and by examples/slurm); None means verl starts a local Ray."""
    ray_init = config.get("ray_kwargs", {}).get("ray_init", {}) or {}
    return ray_init.get("address") or os.environ.get("RAY_ADDRESS") or None


# Environment that this process sets for verl's workers: a local Ray inherits it (the driver starts the raylet), the
# workers of a running cluster do not (their raylet began with `ray start`), so it goes into the runtime env
_WORKER_ENV = ("VERL_FILE_LOGGER_PATH",)  # verl's file logger runs in the TaskRunner actor (utils/tracking.py:534)


def attach_to_cluster(config: DictConfig, address: str) -> None:
    """Prepare ``ray_kwargs.ray_init`` for a running cluster: the node keys a recipe sets for a local Ray (the CPU
    preset's ``num_cpus: 32``, ``num_gpus: 1``) become the resources the cluster must have (``ray start`` gave
    them), checked here, and are removed from what ``ray.init`` gets. Too few logical CPUs would otherwise hang
    TransferQueue silently, and too few GPUs would leave verl's resource pools waiting forever. The workers get
    the environment this process set for them (``_WORKER_ENV``) through the runtime env."""
    import ray
    from omegaconf import open_dict

    ray_init = config.ray_kwargs.ray_init
    with open_dict(ray_init):
        for name in _WORKER_ENV:
            if name in os.environ:
                OmegaConf.update(ray_init, f"runtime_env.env_vars.{name}", os.environ[name], force_add=True)
    wanted = {key: ray_init.get(key) for key in ("num_cpus", "num_gpus") if ray_init.get(key) is not None}
    for key in _NODE_RESOURCE_KEYS:
        if ray_init.get(key) is not None:
            ray_init[key] = None
    if not wanted:
        return
    ray.init(address=address, logging_level=logging.WARNING)
    try:
        have = ray.cluster_resources()
    finally:
        ray.shutdown()
    resource = {"num_cpus": "CPU", "num_gpus": "GPU"}
    got = {key: have.get(resource[key], 0) for key in wanted}
    short = {key: (need, got[key]) for key, need in wanted.items() if got[key] < need}
    if short:
        flags = " ".join(f"--{key.replace('_', '-')}={need}" for key, (need, _) in short.items())
        found = ", ".join(f"{resource[key]} {got:g} < {need}" for key, (need, got) in short.items())
        raise RuntimeError(
            f"the Ray cluster at {address} has too few logical resources for this recipe ({found}): start its head "
            f"with `ray start --head {flags} ...` (the recipe's ray_kwargs.ray_init asks for them)"
        )
    logger.info("attached to the Ray cluster at %s (%s)", address, ", ".join(f"{k}={v}" for k, v in wanted.items()))


def train(config: DictConfig) -> None:
    """verl's `main_ppo.main` body: the V1 trainer through verl's own task runner."""
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    address = cluster_address(config)
    if address is not None:
        attach_to_cluster(config, address)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=TaskRunnerV1)


def _timeout_s(config: DictConfig) -> float:
    from mempo_verl.config import mempo_section

    return float(os.environ.get("MEMPO_TIMEOUT_S") or mempo_section(config).run.timeout_s)


def console_printer(verbose: bool):
    """What the console shows of a child's output lines: all of them (``verbose``), or one short line per step."""
    from mempo_verl.run_summary import progress_line

    def show(line: str) -> None:
        text = line if verbose else progress_line(line, prefix="[mempo] ")
        if text is not None:
            print(text.rstrip("\n"), flush=True)

    return show


def _run_under_watchdog(timeout_s: float, log_dir: str) -> None:
    from mempo_verl.platform.watchdog import run_with_watchdog

    log_path = Path(log_dir) / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, _CHILD_ENV: "1", "RAY_DEDUP_LOGS": "0"}
    command = [sys.executable, "-m", "mempo_verl.main", *sys.argv[1:]]
    verbose = bool(os.environ.get("MEMPO_VERBOSE"))
    print(
        f"[mempo] training (verl V1 trainer); full log: {log_path}"
        + ("" if verbose else " (MEMPO_VERBOSE=1 shows it here)"),
        flush=True,
    )
    result = run_with_watchdog(command, timeout_s, log_path, env=env, on_line=console_printer(verbose))
    result.raise_for_failure()


def metrics_path(config: DictConfig) -> Path | None:
    """Where verl's ``file`` logger writes: ``$VERL_FILE_LOGGER_PATH``, set here to
    ``<trainer.default_local_dir>/metrics.jsonl`` when unset; None without the ``file`` logger."""
    if "file" not in list(config.trainer.get("logger") or []):
        return None
    os.environ.setdefault("VERL_FILE_LOGGER_PATH", str(Path(config.trainer.default_local_dir) / "metrics.jsonl"))
    Path(os.environ["VERL_FILE_LOGGER_PATH"]).parent.mkdir(parents=True, exist_ok=True)
    return Path(os.environ["VERL_FILE_LOGGER_PATH"])


def app(config: DictConfig) -> None:
    from mempo_verl.run_summary import read_metrics, summary_text

    register_resolvers()
    OmegaConf.resolve(config)  # the driver resolves: Ray workers never need our resolvers
    validate(config)
    metrics = metrics_path(config)
    timeout_s = _timeout_s(config)
    if os.environ.get(_CHILD_ENV):
        train(config)  # the watchdog's child: the parent prints the summary
        return
    if timeout_s > 0:
        _run_under_watchdog(timeout_s, config.trainer.default_local_dir)
    else:
        train(config)
    if metrics is not None:
        print(summary_text(read_metrics(metrics), config.trainer.default_local_dir), flush=True)


def quiet_imports() -> None:
    """Silence the import-time notices of verl's optional engines (torchtitan, megatron, ...) on the console."""
    import warnings

    warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)


def main() -> None:
    import hydra

    quiet_imports()
    register_resolvers()
    hydra.main(config_path=str(RECIPES_DIR), config_name="tiny_cpu", version_base=None)(app)()


if __name__ == "__main__":
    main()
