"""`ray job submit` of the tiny recipe to a running Ray cluster (fixture `tiny_job`, tests/launch/conftest.py: the
SLURM job's own Ray cluster where SLURM is installed, else a `ray start --head` of the test's). The job attaches
through RAY_ADDRESS, its CPU preset's `ray_init` resources checked against those `ray start` gave, ships the checkout
through examples/ray_cluster/runtime_env.yaml, trains its steps and leaves a checkpoint."""

import math
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNTIME_ENV = REPO / "examples" / "ray_cluster" / "runtime_env.yaml"

pytestmark = pytest.mark.e2e


def test_the_job_succeeds_and_logs_every_step(tiny_job):
    assert tiny_job.ray_status == "SUCCEEDED", f"{tiny_job.route} job: {tiny_job.log[-4000:]}"
    metrics = tiny_job.metrics
    train_steps = sorted(step for step, row in metrics.items() if "mempo/reward_T/mean" in row)
    assert train_steps == list(range(1, tiny_job.steps + 1)), sorted(metrics)
    for step in train_steps:
        assert 0.0 <= metrics[step]["mempo/reward_T/mean"] <= 1.0
        assert math.isfinite(metrics[step]["actor/pg_loss"])
    assert not any(key.startswith("val-") for row in metrics.values() for key in row)  # validation was off


def test_the_job_checkpoints_its_last_step(tiny_job):
    steps = tiny_job.steps
    assert (tiny_job.checkpoint_dir / "latest_checkpointed_iteration.txt").read_text().strip() == str(steps)
    assert (tiny_job.checkpoint_dir / f"global_step_{steps}" / "actor" / "huggingface" / "config.json").exists()


def test_the_job_attached_to_the_cluster(tiny_job):
    train_log = (tiny_job.checkpoint_dir / "train.log").read_text()
    # main checked the cluster's logical resources instead of passing num_cpus/num_gpus to ray.init
    assert "attached to the Ray cluster at" in train_log and "num_cpus=32, num_gpus=1" in train_log


def test_the_runtime_env_ships_the_package_data_and_not_the_venv(tmp_path):
    """The working_dir package exactly as `ray job submit` builds it (Ray's own packaging, .gitignore included)."""
    from ray._private.runtime_env.packaging import create_package

    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    package = tmp_path / "package.zip"
    create_package(str(REPO), package, include_gitignore=True, excludes=runtime_env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert "mempo_verl/data/corpus.jsonl" in names  # a bare "data/" exclude would drop the package's own data
    assert "examples/ray_cluster/runtime_env.yaml" in names
    assert not [name for name in names if name.startswith((".venv/", ".git/", "checkpoints/", "outputs/"))]
    assert package.stat().st_size < 10 * 2**20
