"""Entry point of stage 1 (SFT cold start): ``python -m mempo_verl.sft --config-name <recipe> [hydra overrides]``.

A recipe (``recipes/sft_*.yaml``) is verl's ``sft_trainer_engine`` config (Hydra searchpath
``pkg://verl.trainer.config``) with the keys that differ. This module resolves our recipe resolvers in the driver
(``mempo_verl.main.register_resolvers``) and runs verl 0.9.1's own SFT trainer (``verl.trainer.sft_trainer.run_sft``:
``MultiTurnSFTDataset``, the FSDP engine, checkpoints, resume). verl's trainer is a torchrun program; run here
without torchrun it is a one-process group (``RANK=0``, ``WORLD_SIZE=1`` on a free local port), and under
``torchrun --nproc_per_node=N -m mempo_verl.sft`` it is N ranks as verl expects.
"""

from __future__ import annotations

import os
import socket

from omegaconf import DictConfig, OmegaConf

from mempo_verl.main import RECIPES_DIR, quiet_imports, register_resolvers


def single_process_group_env() -> dict[str, str]:
    """torchrun's variables for a one-rank group on 127.0.0.1 (a free port), unless torchrun already set them."""
    if "RANK" in os.environ:
        return {}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def app(config: DictConfig) -> None:
    from verl.trainer.sft_trainer import run_sft
    from verl.utils.device import auto_set_device

    register_resolvers()
    OmegaConf.resolve(config)
    os.environ.update(single_process_group_env())
    auto_set_device(config)
    run_sft(config)


def main() -> None:
    import hydra

    quiet_imports()
    register_resolvers()
    hydra.main(config_path=str(RECIPES_DIR), config_name="sft_tiny", version_base=None)(app)()


if __name__ == "__main__":
    main()
