"""The embedded default's two stages, short (fixture `tiny_world`): verl's SFT trainer on the synthetic oracle's
rows lowers the loss and leaves a Hugging Face checkpoint; MemPO RL from the shipped SFT checkpoint through the user
CLI trains, validates on held-out worlds before and after, and its rerun after a crash ends with the summary."""

import pytest
import torch

pytestmark = pytest.mark.e2e


def test_sft_loss_falls_and_the_checkpoint_loads(tiny_world):
    losses = [tiny_world.sft.metric(step, "train/loss") for step in range(1, tiny_world.sft_steps + 1)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # from random weights, ~ln(640) = 6.46 nats a token; 40 steps of 32 oracle turns must cut it well down
    assert 5.5 < first < 7.5 and last < first - 2.0, losses
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_world.sft_model)
    vocab = len(AutoTokenizer.from_pretrained(tiny_world.sft_model))
    assert model.config.vocab_size == vocab == 640 and all(torch.isfinite(p).all() for p in model.parameters())


def test_rl_steps_train_from_the_sft_checkpoint(tiny_world):
    rl, steps = tiny_world.rl, tiny_world.rl_steps
    train_steps = [s for s, m in rl.metrics.items() if "mempo/reward_T/mean" in m]
    assert sorted(train_steps) == list(range(1, steps + 1))
    for step in train_steps:
        assert 0.0 <= rl.metric(step, "mempo/reward_T/mean") <= 1.0
        assert torch.isfinite(torch.tensor(rl.metric(step, "actor/pg_loss")))
    assert 0.0 <= rl.metric(steps, "mempo/format_valid/rate") <= 1.0
    val = [k for k in rl.metrics[steps] if k.startswith("val-core/") and "/reward/mean" in k]
    assert val and 0 in rl.metrics and val[0] in rl.metrics[0]  # held-out R^T before and after
    # the first process was killed in step 3 (the fixture's crash); its rerun ends with the summary
    log = tiny_world.resumed.result.log_path.read_text()
    assert f"== MemPO run: 1 step ({steps + 1} -> {steps + 1}) ==" in log
    assert (rl.checkpoint_dir / f"global_step_{steps}" / "actor" / "huggingface" / "config.json").exists()
