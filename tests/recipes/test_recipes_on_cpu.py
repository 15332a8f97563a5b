"""Every Hydra recipe composes with verl's installed `ppo_trainer` config and carries a valid `mempo:` section."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mempo_verl import doctor
from mempo_verl.config import MemPOConfig
from mempo_verl.main import RECIPES_DIR, validate
from mempo_verl.trainer import prompt_mini_batches

SFT_RECIPES = sorted(path.stem for path in Path(RECIPES_DIR).glob("sft_*.yaml"))  # verl's SFT trainer (stage 1)
RECIPES = sorted(path.stem for path in Path(RECIPES_DIR).glob("*.yaml") if path.stem not in SFT_RECIPES)
MEMPO_RECIPES = [name for name in RECIPES if name != "grpo_tiny"]  # grpo_tiny is verl's own GRPO baseline


def _compose(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
        return compose(config_name=name, overrides=overrides or [])


def test_recipes_found():
    assert {"tiny_cpu", "mempo_qwen2.5_7b", "grpo_full_history_qwen2.5_7b", "mem1_qwen2.5_7b"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_over_verl_ppo_trainer(name):
    config = _compose(name)
    # verl's defaults are there (the recipe is a delta) and the V1 trainer runs it
    assert config.trainer.use_v1 is True
    assert "actor_rollout_ref" in config and "critic" in config
    header = (Path(RECIPES_DIR) / f"{name}.yaml").read_text().splitlines()[0]
    assert header.startswith("# "), f"{name}: the header comment states purpose, hardware and launch command"


@pytest.mark.parametrize("name", MEMPO_RECIPES)
def test_mempo_recipe_section_is_valid_and_consistent(name):
    config = _compose(name)
    mempo = MemPOConfig.from_config(config.mempo)
    assert config.algorithm.adv_estimator == "mempo" and config.trainer.v1.trainer_mode == "mempo"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "mempo_agent"
    assert OmegaConf.select(config, "reward.custom_reward_function.path") == "pkg://mempo_verl.rewards"
    if "full_history" in name:
        assert mempo.context.policy == "full" and mempo.credit.alpha == 0
    if name.startswith(("grpo_", "mem1_")):
        assert mempo.credit.alpha == 0  # baselines: GRPO advantage only
    if mempo.update.mini_batch == "prompts":  # the trainer would refuse to start otherwise
        prompt_mini_batches(config.data.train_batch_size, config.actor_rollout_ref.actor.ppo_mini_batch_size)


@pytest.mark.parametrize("name", SFT_RECIPES)
def test_sft_recipe_composes_over_verls_sft_trainer(name):
    config = _compose(name)
    # verl's sft_trainer_engine defaults are there; the settings the CPU needs are the recipe's
    assert "engine" in config and "optim" in config and config.data.messages_key == "messages"
    assert config.engine.strategy == "fsdp2" and config.data.pad_mode == "no_padding"
    assert "hf_model" in config.checkpoint.save_contents  # stage 2 starts from the Hugging Face folder


def test_tiny_world_recipes_agree():
    from mempo_verl.tiny import data

    rl, sft = _compose("tiny_cpu"), _compose("sft_tiny")
    assert rl.mempo.env.name == "synthetic" and rl.mempo.env.kwargs.prompt == data.PROMPT == "tiny"
    # the SFT contexts are built with the RL recipe's turn limit and context keys: the contexts read the same
    assert rl.mempo.agent.max_turns == data.MAX_TURNS
    for key, value in data.CONTEXT_OVERRIDES.items():
        assert OmegaConf.select(rl, key) == value, key
    assert sft.data.max_length >= rl.data.max_prompt_length  # one SFT row = one turn's context + the turn


def test_paper_sft_recipe_fits_the_paper_rl_recipe():
    rl, sft = _compose("mempo_qwen2.5_7b"), _compose("sft_qwen2.5_7b")
    assert sft.model.path == rl.actor_rollout_ref.model.path and sft.trainer.total_epochs == 1  # the paper: one epoch
    # one SFT row is one turn's context and the turn: it must fit what the RL recipe lets a turn be
    assert sft.data.max_length >= rl.data.max_prompt_length + rl.data.max_response_length
    assert sft.data.truncation == "error" and sft.trainer.n_gpus_per_node == rl.trainer.n_gpus_per_node


def test_paper_recipe_matches_the_paper():
    config = _compose("mempo_qwen2.5_7b")
    assert config.actor_rollout_ref.rollout.n == 16 and config.data.train_batch_size == 128
    assert config.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    assert config.mempo.agent.max_turns == 16 and "Qwen2.5-7B" in config.actor_rollout_ref.model.path
    # Eq. 10 (per-trajectory token mean), over verl's token-mean aggregation that it rescales
    assert config.mempo.credit.loss_normalization == "trajectory_mean"
    assert config.actor_rollout_ref.actor.loss_agg_mode == "token-mean"


def test_tiny_cpu_composes_the_cpu_preset():
    config = _compose("tiny_cpu")
    assert config.trainer.device == "cpu" and config.actor_rollout_ref.rollout.enable_sleep_mode is False


def test_bad_mempo_value_fails_with_key_value_and_allowed_set():
    config = _compose("tiny_cpu", ["mempo.credit.grouping=prompt"])
    with pytest.raises(ValueError, match="mempo.credit.grouping='prompt' is invalid; allowed: group, per_turn, batch"):
        MemPOConfig.from_config(config.mempo)


def test_defaults_file_equals_the_dataclass_defaults():
    import dataclasses

    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
        config = compose(config_name="base/mempo_defaults")
    assert OmegaConf.to_container(config.mempo) == dataclasses.asdict(MemPOConfig())


def test_every_mempo_key_can_be_overridden_from_the_command_line():
    config = _compose("mempo_qwen2.5_7b", ["mempo.run.credit_dump_dir=/tmp/x", "mempo.credit.scorer=ref"])
    mempo = MemPOConfig.from_config(config.mempo)
    assert mempo.run.credit_dump_dir == "/tmp/x" and mempo.credit.scorer == "ref"


@pytest.fixture
def _check(monkeypatch):
    """`main.validate` of a composed recipe, the install check (`mempo-doctor`, tested in tests/platform) skipped."""
    monkeypatch.setattr(doctor, "require_ready", lambda: None)
    return lambda name, overrides: validate(_compose(name, overrides))


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_passes_the_start_checks(_check, name):
    _check(name, [])


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.v1.trainer_mode=sync"],  # the MemPO estimator under verl's sync trainer: GRPO over segments, no A^M
        ["trainer.v1.trainer_mode=colocate_async"],
        ["algorithm.adv_estimator=grpo"],  # the MemPO trainer under another estimator name
    ],
)
def test_mempo_estimator_and_trainer_go_together(_check, overrides):
    with pytest.raises(ValueError, match=r"algorithm\.adv_estimator=.*trainer\.v1\.trainer_mode="):
        _check("tiny_cpu", overrides)


NO_KL = ["actor_rollout_ref.actor.use_kl_loss=false", "algorithm.use_kl_in_reward=false"]


def test_ref_scorer_needs_a_reference_policy(_check):
    # no KL term: verl builds no reference policy, so scoring through it would fail mid-step (AttributeError)
    with pytest.raises(ValueError, match=r"mempo\.credit\.scorer=ref.*actor_rollout_ref\.actor\.use_kl_loss"):
        _check("tiny_cpu", ["mempo.credit.scorer=ref", *NO_KL])
    _check("tiny_cpu", ["mempo.credit.scorer=ref", "actor_rollout_ref.actor.use_kl_loss=true"])
    _check("tiny_cpu", ["mempo.credit.scorer=ref", *NO_KL, "actor_rollout_ref.model.lora.rank=8"])  # base = ref
    _check("tiny_cpu", ["mempo.credit.scorer=ref", *NO_KL, "mempo.credit.alpha=0"])  # α = 0 scores nothing


def test_parameter_sync_step_is_refused_with_prompt_mini_batches(_check):
    # verl repeats sample-and-update parameter_sync_step times a step, each making the K updates of the whole batch
    with pytest.raises(ValueError, match=r"trainer\.v1\.mempo\.parameter_sync_step=4 .*mempo\.update\.mini_batch"):
        _check("tiny_cpu", ["+trainer.v1.mempo.parameter_sync_step=4"])
    _check("tiny_cpu", ["+trainer.v1.mempo.parameter_sync_step=1"])
    _check("tiny_cpu", ["+trainer.v1.mempo.parameter_sync_step=4", "mempo.update.mini_batch=rows"])  # verl's own


def test_trajectory_mean_needs_token_mean_aggregation(_check):
    # the Eq. 10 weights scale the advantages under verl's token-mean; seq-mean-token-mean would average them again
    overrides = ["mempo.credit.loss_normalization=trajectory_mean"]
    _check("tiny_cpu", overrides)
    with pytest.raises(ValueError, match=r"trajectory_mean needs actor_rollout_ref\.actor\.loss_agg_mode=token-mean"):
        _check("tiny_cpu", [*overrides, "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean"])
    with pytest.raises(ValueError, match=r"loss_agg_mode=token-mean \(got 'token-sum'\)"):
        _check("mempo_qwen2.5_7b", ["actor_rollout_ref.actor.loss_agg_mode=token-sum"])
