"""`sbatch examples/slurm/mempo_multinode.sbatch` on a one-node SLURM cluster of Debian's daemons (fixtures
`slurm_cluster`, `tiny_job`: tests/launch/conftest.py). Skipped, with the reason, where SLURM is not installed."""

import socket

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slurm_job(tiny_job):
    if tiny_job.route != "slurm":
        pytest.skip("the tiny job ran as a plain Ray job (MEMPO_LAUNCH_ROUTE=ray)")
    return tiny_job


def test_the_slurm_job_completes(slurm_job):
    job = slurm_job.slurm_job
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), slurm_job.log[-4000:]


def test_the_script_waits_on_readiness_and_takes_gpus_from_slurm(slurm_job):
    log = slurm_job.log
    assert "GPUs per node: 0 -> platform=cpu" in log  # --gpus-per-node=0: the CPU preset
    for ready in ("retriever /health on 1 node(s)", "Ray head (ray status)", "Ray cluster of 1 node(s)", "Ray job API"):
        assert f"{ready} ready" in log, ready
    assert f"Ray job mempo-{slurm_job.slurm_job['JobId']} succeeded" in log and "stopped (exit 0)" in log


def test_the_slurm_log_shows_the_training_steps(slurm_job):
    # the job's console (main's one line per step and its closing summary) is tailed into the SLURM log
    steps = slurm_job.steps
    assert f"== MemPO run: {steps} steps (1 -> {steps}) ==" in slurm_job.log


def test_a_retriever_that_dies_fails_the_job_naming_it(sbatch_example, tmp_path):
    job, log = sbatch_example(tmp_path, str(tmp_path / "no_such_index"))
    assert job["JobState"] == "FAILED", log
    assert "died while waiting for retriever /health" in log and "retriever (" in log, log
    assert "Ray head" not in log.split("ERROR")[0]  # it stopped there: nothing after the retriever started


def test_a_ray_head_that_dies_fails_the_job_naming_it(sbatch_example, tmp_path):
    # the head's GCS port, held here: `ray start --head` exits once its GCS gives up (~90 s, Ray's own limit)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        job, log = sbatch_example(tmp_path, "none", env={"MEMPO_RAY_PORT": str(taken.getsockname()[1])})
    assert job["JobState"] == "FAILED", log
    assert "ERROR: Ray head (" in log and "died while waiting for Ray head" in log, log
