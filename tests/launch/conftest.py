"""The launch routes for real: a local Ray cluster (`ray start --head`) taking a `ray job submit`, and a one-node
SLURM cluster (Debian's munged, slurmctld, slurmd) taking `sbatch examples/slurm/mempo_multinode.sbatch`.

One tiny training run serves both (fixture `tiny_job`): the sbatch script itself starts its Ray head with `ray start
--head` and submits the recipe with `ray job submit --runtime-env examples/ray_cluster/runtime_env.yaml`, so where
SLURM is installed (CI: .ci/run installs it) the SLURM job is also the Ray-cluster job. Without SLURM (or with
MEMPO_LAUNCH_ROUTE=ray) the test starts the Ray head and submits the job itself. Either way the run is
`python -m mempo_verl.main --config-name tiny_cpu` for 2 steps on the tiny world's random-weight model (the launch
route is under test, not learning), no validation, a checkpoint at step 2.

Every daemon is started here in the foreground as our own child and stopped by its PID (`ray stop` is not used: it
stops every Ray on the machine, not only ours).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mempo_verl.platform.watchdog import kill_tree
from mempo_verl.run_summary import read_metrics
from mempo_verl.testing.services import free_port

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "examples" / "slurm" / "mempo_multinode.sbatch"
RUNTIME_ENV = REPO / "examples" / "ray_cluster" / "runtime_env.yaml"
STEPS = 2
JOB_TIMEOUT_S = 900  # the whole job: cluster start (~30 s), trainer start-up (~1-2 min), 2 steps, checkpoint
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def job_overrides(work: Path) -> list[str]:
    """The tiny recipe, short: 2 steps on the random-weight tiny world model, no validation, a checkpoint at the end."""
    return [
        f"trainer.total_training_steps={STEPS}",
        f"trainer.save_freq={STEPS}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        f"trainer.default_local_dir={work / 'checkpoints'}",
        f"hydra.run.dir={work / 'hydra'}",
        "actor_rollout_ref.model.path=${mempo_tiny_world:model}",
        "mempo.run.timeout_s=600",  # main's own watchdog: a hang fails the job before the test's limit
    ]


def job_env(model_cache: Path) -> dict[str, str]:
    """What `ray start` (hence the job's driver and workers) and sbatch run with: this venv first on PATH, the session's
    model cache, full Hydra errors; no inherited file-logger path (main sets <default_local_dir>/metrics.jsonl)."""
    env = {key: value for key, value in os.environ.items() if key not in ("VERL_FILE_LOGGER_PATH", "RAY_ADDRESS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(MEMPO_CACHE_DIR=str(model_cache), HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    # Ray's token auth, for the head and for every client alike (Ray enables it for `ray start` by itself once
    # ~/.ray/auth_token exists, but not for `ray status` / `ray job`): a token of the test's, not the user's file
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    return env


def wait_for(what: str, check, timeout_s: float, alive: subprocess.Popen | None = None, every_s: float = 2.0):
    """Poll `check()` until it returns a truthy value; fail on timeout or when `alive` (a daemon) has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{what}: {alive.args[0]} exited with {alive.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(every_s)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM a daemon we started and everything under it (collected while alive), SIGKILL what is left."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    kill_tree(tree, grace_s=20)


@dataclass
class LaunchedJob:
    """One tiny training job launched on a cluster: where it ran and what it left."""

    route: str  # "slurm" (sbatch -> ray start --head -> ray job submit) or "ray" (the test's own Ray head)
    work: Path
    log: str  # the SLURM job's output, or `ray job logs`
    ray_status: str  # the job's final status as Ray reported it
    wall_s: float
    slurm_job: dict[str, str] | None = None  # `scontrol show job` fields of the finished SLURM job
    steps: int = STEPS

    @property
    def checkpoint_dir(self) -> Path:
        return self.work / "checkpoints"

    @property
    def metrics(self) -> dict[int, dict[str, float]]:
        return read_metrics(self.checkpoint_dir / "metrics.jsonl")


# ---------------------------------------------------------------- Ray


def final_status(text: str, submission: str) -> str:
    """A finished Ray job's status from `ray job status` or the end of `ray job submit`'s log tail, which print
    "Job '<id>' succeeded" (failed, stopped); "" while it runs."""
    return next((s for s in ("SUCCEEDED", "FAILED", "STOPPED") if f"Job '{submission}' {s.lower()}" in text), "")


class RayHead:
    """`ray start --head --block` on free ports, with its own temp dir and the CPU preset's logical resources."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # AF_UNIX socket paths under the temp dir must stay < 108 bytes: a short folder of our own
        self.temp_dir = Path(f"/tmp/mempo-ray-{os.getpid()}-{self.port}")
        cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}"]
        cmd += [f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1", f"--temp-dir={self.temp_dir}"]
        cmd += ["--num-cpus=32", "--num-gpus=1"]  # recipes/platform/cpu.yaml ray_kwargs.ray_init
        self.log_path = work / "ray-head.log"
        self.env = env
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ray(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ray", *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def wait_ready(self, timeout_s: float = 120) -> None:
        wait_for(
            "Ray head",
            lambda: self.ray("status", f"--address=127.0.0.1:{self.port}").returncode == 0,
            timeout_s,
            self.process,
        )
        wait_for(
            "Ray job API",
            lambda: self.ray("job", "list", f"--address={self.address}").returncode == 0,
            timeout_s,
            self.process,
        )

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def run_ray_job(work: Path, env: dict[str, str]) -> LaunchedJob:
    """Start a Ray head, `ray job submit --no-wait` the tiny recipe, poll `ray job status`, always stop the head."""
    start = time.monotonic()
    head = RayHead(work, env)
    try:
        head.wait_ready()
        submission = f"mempo-launch-{os.getpid()}"
        submit = ["job", "submit", f"--address={head.address}", f"--runtime-env={RUNTIME_ENV}", "--no-wait"]
        submit += [f"--submission-id={submission}", "--", "python", "-m", "mempo_verl.main", "--config-name=tiny_cpu"]
        result = subprocess.run(
            ["ray", *submit, *job_overrides(work)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        submitted = result.stdout + result.stderr
        assert result.returncode == 0, f"ray job submit failed:\n{submitted}"

        def finished() -> str:
            return final_status(head.ray("job", "status", f"--address={head.address}", submission).stdout, submission)

        try:
            status = wait_for("Ray job", finished, JOB_TIMEOUT_S, head.process, every_s=10)
        finally:
            logs = submitted + head.ray("job", "logs", f"--address={head.address}", submission).stdout
            (work / "job.log").write_text(logs)
        return LaunchedJob("ray", work, logs, status, time.monotonic() - start)
    finally:
        head.stop()


# ---------------------------------------------------------------- SLURM


def slurm_missing() -> str | None:
    """Why a SLURM cluster cannot start here (a binary not on PATH, not root), or None."""
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} not on PATH): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster runs its daemons as root (SlurmUser=root); run as root"
    return None


def slurm_conf(folder: Path, munge_socket: Path) -> str:
    """A one-node cluster on this machine: its real CPU count and memory, cons_tres, no accounting, no cgroups."""
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    memory_mib = int(psutil.virtual_memory().total / 2**20 * 0.95)  # slurmd drains a node with less than configured
    return f"""\
ClusterName=mempo-ci
SlurmctldHost={host}(127.0.0.1)
SlurmUser={getpass.getuser()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN
PartitionName=ci Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged, slurmctld and slurmd in the foreground under `folder`; commands run with SLURM_CONF pointing here."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        for sub in ("state", "spool", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)  # munged refuses a key or socket in a folder others can write
        munge_socket = folder / "munge" / "munge.socket"
        key = folder / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        conf = folder / "slurm.conf"
        conf.write_text(slurm_conf(folder, munge_socket))
        self.env = {**env, "SLURM_CONF": str(conf)}
        self.daemons: list[subprocess.Popen] = []
        munge = ["munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}"]
        munge += [f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munge/munged.log"]
        munge += [f"--seed-file={folder}/munge/munged.seed"]
        self._start(munge)
        wait_for("munged", munge_socket.exists, 30, self.daemons[-1], every_s=0.5)
        self._start(["slurmctld", "-D", "-c"])
        self._start(["slurmd", "-D"])

    def _start(self, cmd: list[str]) -> None:
        log = (self.folder / f"{cmd[0]}.out").open("w")
        self.daemons.append(
            subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def run(self, *cmd: str, timeout_s: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        def idle() -> bool:
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    raise RuntimeError(f"{daemon.args[0]} exited with {daemon.returncode}: {self.logs()}")
            return self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"

        wait_for("SLURM node idle", idle, timeout_s)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value (kept MinJobAge after the job ends)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def wait_job(self, job_id: str, timeout_s: float) -> dict[str, str]:
        def done() -> dict[str, str] | None:
            job = self.job(job_id)
            return job if job.get("JobState") not in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING") else None

        try:
            return wait_for(f"SLURM job {job_id}", done, timeout_s, every_s=5)
        except TimeoutError:
            self.run("scancel", job_id)
            raise

    def logs(self) -> str:
        return "\n".join(f"== {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            stop(daemon)


def sbatch(cluster: SlurmCluster, work: Path, index: str, overrides: list[str], extra_env: dict[str, str]) -> str:
    """`sbatch` the example on the one-node cluster, its directives sized to this machine; returns the job id."""
    env_flags = ",".join(["ALL", *(f"{key}={value}" for key, value in extra_env.items())])
    cmd = ["sbatch", "--parsable", "--nodes=1", f"--cpus-per-task={os.cpu_count() or 1}", "--gpus-per-node=0"]
    cmd += [f"--output={work / 'slurm-%j.log'}", f"--export={env_flags}", "--time=30", str(SBATCH), "tiny_cpu"]
    result = cluster.run(*cmd, index, *overrides, cwd=REPO)
    assert result.returncode == 0, f"sbatch failed: {result.stdout}{result.stderr}\n{cluster.logs()}"
    return result.stdout.strip().split(";")[0]


def ray_ports() -> dict[str, str]:
    """Free ports and a short temp dir for the Ray cluster the sbatch script starts (other Rays may run here)."""
    port = free_port()
    return {
        "MEMPO_RAY_PORT": str(port),
        "MEMPO_RAY_DASHBOARD_PORT": str(free_port()),
        "MEMPO_RETRIEVER_PORT": str(free_port()),
        "MEMPO_RAY_TEMP_DIR": f"/tmp/mempo-ray-{os.getpid()}-{port}",
        "MEMPO_READY_TIMEOUT_S": "180",
    }


def run_sbatch(
    cluster: SlurmCluster, work: Path, index: str, overrides: list[str], env: dict[str, str], timeout_s: float
) -> tuple[dict[str, str], str]:
    """sbatch the example (free Ray and retriever ports, plus `env`), wait for it; its final state and its log."""
    ports = {**ray_ports(), **env}
    try:
        job_id = sbatch(cluster, work, index, overrides, ports)
        job = cluster.wait_job(job_id, timeout_s)
    finally:
        shutil.rmtree(ports["MEMPO_RAY_TEMP_DIR"], ignore_errors=True)
    return job, (work / f"slurm-{job_id}.log").read_text()


def run_slurm_job(cluster: SlurmCluster, work: Path) -> LaunchedJob:
    start = time.monotonic()
    job, log = run_sbatch(cluster, work, "sample", job_overrides(work), {}, JOB_TIMEOUT_S)
    status = final_status(log, f"mempo-{job['JobId']}")
    return LaunchedJob("slurm", work, log, status, time.monotonic() - start, slurm_job=job)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, model_cache) -> Iterator[SlurmCluster]:
    reason = slurm_missing()
    if reason is not None:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), job_env(model_cache))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tiny_job(request, tmp_path_factory, model_cache) -> LaunchedJob:
    """The one tiny training job of the launch tests: through SLURM where it is installed, else a plain Ray job."""
    work = tmp_path_factory.mktemp("tiny_job")
    env = job_env(model_cache)
    route = os.environ.get("MEMPO_LAUNCH_ROUTE") or ("ray" if slurm_missing() else "slurm")
    if route == "slurm":
        job = run_slurm_job(request.getfixturevalue("slurm_cluster"), work)
    else:
        job = run_ray_job(work, env)
    print(f"\nlaunch route {job.route}: tiny job of {STEPS} steps in {job.wall_s:.0f} s")
    return job


@pytest.fixture
def sbatch_example(slurm_cluster):
    """`sbatch_example(work, index, env=...)`: a short job of the example on the session's cluster (a failure path:
    no training overrides), waited for; returns its `scontrol show job` fields and its log."""

    def submit(work: Path, index: str, env: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
        return run_sbatch(slurm_cluster, work, index, [], env or {}, timeout_s=240)

    return submit
