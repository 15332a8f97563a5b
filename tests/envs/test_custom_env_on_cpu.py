"""examples/custom_env: a third-party package installed for real with pip is found by `make_env` through the
`mempo_verl.envs` entry point, with no change to mempo-verl."""

import asyncio
import sys
from pathlib import Path

import pytest

from mempo_verl.envs import available_envs, make_env
from mempo_verl.protocol import ToolCall, parse_turn
from mempo_verl.testing.services import pip_install_aside

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_env"
ROW = {
    "extra_info": {"questions": ["What is 17 * 23?"]},
    "reward_model": {"ground_truth": {"target": [["391"]]}},
}


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """pip-install the example into a target folder (offline, no deps) and put that folder on sys.path."""
    target = pip_install_aside(EXAMPLE, tmp_path)
    monkeypatch.syspath_prepend(str(target))
    yield target
    monkeypatch.delitem(sys.modules, "mempo_custom_env_example", raising=False)


def test_installed_package_is_discovered_and_runs(installed_example):
    entry_points = (installed_example / "mempo_custom_env_example-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert "[mempo_verl.envs]\narithmetic = mempo_custom_env_example:ArithmeticEnv" in entry_points

    env = make_env("arithmetic")  # found through the entry point: nothing imported it before
    assert Path(sys.modules[type(env).__module__].__file__).is_relative_to(installed_example)
    assert "arithmetic" in available_envs()

    obs = asyncio.run(env.step(ToolCall("calculator", {"expression": "17 * 23"}), ROW))
    assert obs.ok and obs.text == "17 * 23 = 391"
    bad = asyncio.run(env.step(ToolCall("calculator", {"expression": "__import__('os')"}), ROW))
    assert not bad.ok and bad.error == "bad_arguments"  # no eval: only arithmetic
    assert env.score("391", ROW["reward_model"]["ground_truth"]).score == 1.0
    assert env.gold_answer_text(ROW["reward_model"]["ground_truth"]) == "391"
    assert env.questions(ROW) == ["What is 17 * 23?"]
    assert parse_turn(env.task_prompt(ROW).split("Example turn:\n")[1]).is_valid
