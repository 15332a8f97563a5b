"""Test helper: verl's own SFT dataset over a parquet of SFT rows, as verl's SFT trainer builds it (no padding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def verl_sft_dataset(path: str | Path, tokenizer: Any, max_length: int = 2048) -> Any:
    """``verl.utils.dataset.multiturn_sft_dataset.MultiTurnSFTDataset`` over ``path``: items hold ``input_ids`` and
    ``loss_mask`` (1 on the assistant turn's tokens), exactly what the trainer computes the loss on."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = OmegaConf.create({"pad_mode": "no_padding", "max_length": max_length, "truncation": "error"})
    return MultiTurnSFTDataset(str(path), tokenizer, config)
