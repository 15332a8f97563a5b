"""Workarounds of verl 0.9.1 limitations on the cpu platform: one named function each, applied only there.

Each function names the upstream file:line it works around (paths inside the installed `verl` package, 0.9.1) and
has a test in tests/platform/test_workarounds_on_cpu.py that fails without it; the same test also checks that the
upstream limitation still exists, so the day it is fixed upstream the test says which workaround to delete.
Nothing here runs where verl picks an accelerator platform (`mempo_verl.platform.activate`).

The vLLM-side workaround lives in `mempo_verl.platform.vllm_plugin` (vLLM loads it in its own processes).
"""

from __future__ import annotations

import functools
import logging
import os
from datetime import timedelta
from types import ModuleType

from mempo_verl.platform.import_hooks import when_imported

logger = logging.getLogger(__name__)

FSDP_ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
WORKAROUND_ATTR = "__mempo_workaround__"  # set on every replacement we install, naming its workaround


def _mark(replacement, name: str, original):
    setattr(replacement, WORKAROUND_ATTR, name)
    replacement.__wrapped__ = original
    return replacement


def gloo_only_process_group() -> None:
    """Initialise the process group with plain `cpu:gloo`, in Ray workers and under torchrun (verl's SFT trainer).

    verl/utils/distributed.py:63 (`initialize_global_process_group`, torchrun programs such as
    verl/trainer/sft_trainer.py:455) and :89 (`initialize_global_process_group_ray`) build the backend
    `f"cpu:gloo,{device}:{backend}"`, which is `cpu:gloo,cpu:gloo` on CPU and torch rejects it ("Duplicate device
    type cpu"). The Ray wrapper must replace the module attribute before verl/workers/engine_workers.py:38 imports
    the function by name, which is why it is applied at plugin load (inside `import verl`, before any worker module
    is imported); the SFT trainer imports its function at call time.
    """
    import torch.distributed
    from verl.utils import distributed

    original_ray = distributed.initialize_global_process_group_ray
    if getattr(original_ray, WORKAROUND_ATTR, None):
        return

    @functools.wraps(original_ray)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original_ray(timeout_second=timeout_second, backend=backend or "cpu:gloo")

    original = distributed.initialize_global_process_group

    @functools.wraps(original)
    def initialize_global_process_group(timeout_second=36000):
        # verl's body (distributed.py:62-75) with the one backend torch accepts on CPU; no device to select
        torch.distributed.init_process_group(
            backend="cpu:gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    distributed.initialize_global_process_group_ray = _mark(
        initialize_global_process_group_ray, "gloo_only_process_group", original_ray
    )
    distributed.initialize_global_process_group = _mark(
        initialize_global_process_group, "gloo_only_process_group", original
    )


def fsdp2_engine_for_cpu(transformer_impl: ModuleType) -> None:
    """Register verl's FSDP2 engines for device `cpu` (the engine code itself is device-agnostic).

    verl/workers/engine/fsdp/transformer_impl.py:1143 and :1594 register `FSDPEngineWithLMHead` and
    `FSDPEngineWithValueHead` for devices cuda/npu only, and the lookup (verl/workers/engine/base.py:396-430) keys
    on `get_device_name()`. Only backend `fsdp2` is registered: FSDP1 cannot run on CPU (it hard-codes
    `sync_module_states=True`, transformer_impl.py:437-448, which torch refuses for CPU modules), and an
    unregistered backend fails with verl's own clear "No engine registered" error instead.
    """
    from verl.workers.engine.base import EngineRegistry

    for model_type, engine_cls in (
        ("language_model", transformer_impl.FSDPEngineWithLMHead),
        ("value_model", transformer_impl.FSDPEngineWithValueHead),
    ):
        if EngineRegistry._engines.get(model_type, {}).get("fsdp2", {}).get("cpu") is engine_cls:
            continue
        EngineRegistry.register(model_type=model_type, backend="fsdp2", device="cpu")(engine_cls)


def unpinned_fsdp2_offload(transformer_impl: ModuleType) -> None:
    """Build the FSDP2 CPU-offload policy with `pin_memory=False`.

    verl/workers/engine/fsdp/transformer_impl.py:462 always builds `CPUOffloadPolicy(pin_memory=True)` for the
    reference model (forward_only) or when `offload_policy` is set; pinning host memory needs an accelerator
    ("Cannot access accelerator device when none is available"). The module's own name `CPUOffloadPolicy` (imported
    at transformer_impl.py:42-43) is replaced by a factory; torch still receives a real `CPUOffloadPolicy`.
    """
    original = transformer_impl.CPUOffloadPolicy
    if original is None or getattr(original, WORKAROUND_ATTR, None):
        return

    def unpinned_cpu_offload_policy(pin_memory: bool = False):  # noqa: ARG001  pinning needs an accelerator
        return original(pin_memory=False)

    transformer_impl.CPUOffloadPolicy = _mark(unpinned_cpu_offload_policy, "unpinned_fsdp2_offload", original)


def apply_verl_workarounds() -> None:
    """Install every verl-side workaround (idempotent). Called by `activate()` only on the cpu platform."""
    gloo_only_process_group()
    when_imported(FSDP_ENGINE_MODULE, fsdp2_engine_for_cpu)
    when_imported(FSDP_ENGINE_MODULE, unpinned_fsdp2_offload)
