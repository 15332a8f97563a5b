"""`mempo_verl.main.attach_to_cluster`: a recipe's local-Ray keys become checked requirements on a running cluster."""

import pytest
import ray
from hydra import compose, initialize_config_dir

from mempo_verl.main import RECIPES_DIR, attach_to_cluster, cluster_address


def _tiny_cpu(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
        return compose(config_name="tiny_cpu", overrides=overrides or [])


@pytest.fixture
def cluster(monkeypatch):
    """A stand-in for the running cluster's logical resources (what `ray.cluster_resources()` reports)."""
    resources = {"CPU": 32.0, "GPU": 1.0}
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    return resources


def test_the_address_comes_from_the_config_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(_tiny_cpu()) is None  # verl starts a local Ray with the preset's num_cpus/num_gpus
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what `ray job submit` sets in the job's driver
    assert cluster_address(_tiny_cpu()) == "10.0.0.1:6379"
    assert cluster_address(_tiny_cpu(["+ray_kwargs.ray_init.address=10.0.0.2:6379"])) == "10.0.0.2:6379"


def test_node_keys_are_dropped_and_the_file_logger_path_reaches_the_workers(cluster, monkeypatch):
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", "/ckpt/metrics.jsonl")
    config = _tiny_cpu()
    attach_to_cluster(config, "10.0.0.1:6379")
    ray_init = config.ray_kwargs.ray_init
    # ray.init refuses num_cpus / num_gpus when it connects to a running cluster
    assert ray_init.num_cpus is None and ray_init.num_gpus is None
    # the cluster's workers did not inherit this process's environment: verl's file logger must be told
    assert ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == "/ckpt/metrics.jsonl"


def test_a_cluster_with_too_few_logical_resources_is_refused_with_the_ray_start_flags(cluster):
    cluster.update(CPU=2.0, GPU=0.0)  # `ray start --head` without the CPU preset's resources: verl would hang
    with pytest.raises(RuntimeError, match=r"CPU 2 < 32, GPU 0 < 1.*ray start --head --num-cpus=32 --num-gpus=1"):
        attach_to_cluster(_tiny_cpu(), "10.0.0.1:6379")
