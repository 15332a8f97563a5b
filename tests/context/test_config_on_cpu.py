"""The typed `mempo:` config: defaults, from_config over dicts and OmegaConf, errors naming key, value, allowed."""

import pytest
from omegaconf import OmegaConf

from mempo_verl.config import AgentConfig, ContextConfig, EnvConfig, MemPOConfig, RewardConfig
from mempo_verl.protocol import TagSet


def test_defaults_follow_design():
    config = MemPOConfig.from_config(None)
    assert config.agent.max_turns == 16  # DESIGN §3 "max turns"
    assert (config.context.policy, config.context.retain_turns) == ("memory", 1)  # MemPO context
    assert config.reward == RewardConfig("all_em", "reward_function", "squad")  # squad: DESIGN §3 "answer matching"
    assert config.env.name == "search_qa" and config.tags == TagSet()
    assert config.update.mini_batch == "prompts"  # DESIGN §3 "updates per step"


def test_from_dict_and_omegaconf_agree():
    values = {
        "agent": {"max_turns": 4},
        "context": {"policy": "full", "retain_turns": "all", "memory_token_budget": None},
        "env": {"name": "synthetic", "kwargs": {"reward_mode": "em_mean"}, "tool_timeout_s": 5},
        "reward": {"mode": "em_sum", "source": "environment"},
        "tags": {"mem": "memory"},
    }
    from_dict = MemPOConfig.from_config(values)
    assert from_dict == MemPOConfig.from_config(OmegaConf.create(values))
    assert from_dict.env.kwargs == {"reward_mode": "em_mean"}
    assert from_dict.tags.mem == "memory" and from_dict.context.memory_token_budget is None


def test_interpolations_resolve():
    root = OmegaConf.create({"turns": 7, "mempo": {"agent": {"max_turns": "${turns}"}}})
    assert MemPOConfig.from_config(root.mempo).agent.max_turns == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"contxt": {}}, r"unknown key\(s\) mempo.contxt; allowed: agent, context, env, reward, credit, update, run"),
        ({"context": {"window": 2}}, r"mempo.context.window; allowed: policy, retain_turns"),
        ({"context": {"policy": "react"}}, r"mempo.context.policy='react' is invalid; allowed: memory, full, mem1"),
        ({"context": {"retain_turns": 0}}, r"mempo.context.retain_turns=0 is invalid; allowed: an integer >= 1 or"),
        ({"context": {"retain_turns": "some"}}, r"retain_turns='some'"),
        ({"context": {"turns_left_template": "left"}}, r"turns_left_template='left'.*\{turns_left\}"),
        ({"context": {"turns_left_template": "{turns_left} of {max}"}}, r"no other field"),
        ({"context": {"memory_token_budget": 0}}, r"memory_token_budget=0"),
        ({"agent": {"max_turns": 0}}, r"mempo.agent.max_turns=0 is invalid; allowed: an integer >= 1"),
        ({"agent": {"max_turns": True}}, r"max_turns=True"),
        ({"env": {"tool_timeout_s": 0}}, r"mempo.env.tool_timeout_s=0"),
        ({"env": {"name": ""}}, r"mempo.env.name=''"),
        ({"reward": {"mode": "exact"}}, r"mempo.reward.mode='exact' is invalid; allowed: all_em, em_mean"),
        ({"reward": {"source": "model"}}, r"allowed: reward_function, environment"),
        (
            {"reward": {"normalization": "nfkc"}},
            r"mempo.reward.normalization='nfkc' is invalid; allowed: squad, unicode",
        ),
        ({"tags": {"mem": "<mem>"}}, r"TagSet.mem='<mem>'"),
        ({"update": {"mini_batch": "segments"}}, r"update.mini_batch='segments' is invalid; allowed: prompts, rows"),
    ],
)
def test_errors_name_key_value_and_allowed(values, message):
    with pytest.raises(ValueError, match=message):
        MemPOConfig.from_config(values)


def test_non_mapping_section_is_a_type_error():
    with pytest.raises(TypeError, match="mempo.context must be a mapping"):
        MemPOConfig.from_config({"context": 3})


def test_env_cache_key_is_canonical():
    assert EnvConfig("x", {"a": 1, "b": 2}).cache_key() == EnvConfig("x", {"b": 2, "a": 1}).cache_key()
    with pytest.raises(ValueError, match="JSON-able"):
        EnvConfig("x", {"a": object()})


def test_dataclasses_are_frozen():
    with pytest.raises(AttributeError):
        AgentConfig().max_turns = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ContextConfig().policy = "full"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("credit", "message"),
    [
        ({"alpha": float("nan")}, r"mempo.credit.alpha=nan is invalid; allowed: a finite number"),
        ({"grouping": "prompt"}, r"mempo.credit.grouping='prompt' is invalid; allowed: group, per_turn, batch"),
        ({"baseline": "full"}, r"mempo.credit.baseline='full' is invalid; allowed: prefix, question, none"),
        ({"scorer": "critic"}, r"mempo.credit.scorer='critic' is invalid; allowed: actor, ref, rollout"),
        ({"memory_noise_floor": -0.1}, r"mempo.credit.memory_noise_floor=-0.1 is invalid; allowed: a finite number"),
        ({"memory_noise_floor": float("inf")}, r"mempo.credit.memory_noise_floor=inf"),
        ({"memory_gate": "never"}, r"mempo.credit.memory_gate='never' is invalid; allowed: always, task_success"),
    ],
)
def test_credit_section_validated(credit, message):
    with pytest.raises(ValueError, match=message):
        MemPOConfig.from_config({"credit": credit})


def test_credit_section_defaults_follow_the_paper():
    credit = MemPOConfig.from_config(None).credit
    assert (credit.alpha, credit.grouping, credit.baseline) == (1.0, "group", "prefix")
    assert credit.memory_gate == "always"  # the paper gives every prompt's <mem> segments their A^M
    # the paper is silent on who scores: ours, `rollout`, as it matched `actor` within issue 11's 1e-4 (fp32)
    assert credit.scorer == "rollout"


def test_mempo_section_is_parsed_once_per_config_object():
    from omegaconf import OmegaConf

    from mempo_verl.config import mempo_section

    config = OmegaConf.create({"mempo": {"agent": {"max_turns": 3}}})
    first = mempo_section(config)
    assert first.agent.max_turns == 3
    assert mempo_section(config) is first  # verl's one config object per worker: one parse for all agent loops
    other = OmegaConf.create({"mempo": {"agent": {"max_turns": 5}}})
    assert mempo_section(other).agent.max_turns == 5  # another object is parsed on its own
    with pytest.raises(ValueError, match="mempo.agent.max_turns"):
        mempo_section(OmegaConf.create({"mempo": {"agent": {"max_turns": 0}}}))
