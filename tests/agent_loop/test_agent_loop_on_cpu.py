"""MemPOAgentLoop end to end on CPU: the real loop, built as verl's AgentLoopWorker builds it (hydra instantiate
from the agent-loop registry, DictConfigWrap over verl's composed ppo_trainer config, the tiny model's tokenizer),
driven by the in-process PolicyServer running the real tiny Qwen2 (teacher-forced scripts and real sampling).

The TransferQueue test runs verl's own `AgentLoopWorkerTQ._agent_loop_postprocess` and `_compute_score`, with the
real `RewardLoopWorker` (naive manager + `mempo_verl.rewards.compute_score`) in process; only the final
`tq.async_kv_batch_put` is recorded instead of stored, because starting Ray + TransferQueue costs ~37 s here.
"""

import asyncio
import json
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from mempo_verl.agent_loop import MemPOAgentLoop
from mempo_verl.envs import Environment, Observation, register_env
from mempo_verl.envs.synthetic import make_synthetic_rows
from mempo_verl.eval.loop import NO_SESSION_SCORING, make_agent_loop, ppo_trainer_config
from mempo_verl.protocol import ToolCall, render_turn
from mempo_verl.rewards import compute_score, golds_from_ground_truth, score_answer
from mempo_verl.segments import Segment, decode_ids
from mempo_verl.testing.policy_server import PolicyServer

QUESTION = "What is the capital of France?"
REWARD_FUNCTION = {"custom_reward_function": {"path": "pkg://mempo_verl.rewards", "name": "compute_score"}}
ENV_CALLS: list[str] = []


@register_env("mempo_test_search")
class _SearchEnv(Environment):
    """A tiny search environment; special queries fail in each way an environment can."""

    def task_prompt(self, sample):
        return "Answer the question. Use <mem>, <think>, then <tool_call> or <answer>."

    def questions(self, sample):
        return list(sample["extra_info"]["questions"])

    def tool_schemas(self):
        params = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
        return [{"type": "function", "function": {"name": "search", "description": "Search.", "parameters": params}}]

    async def step(self, tool_call, sample):
        query = tool_call.arguments.get("query", "")
        ENV_CALLS.append(query)
        if query == "FAIL":
            return Observation("The search backend is down.", ok=False, error="retriever_unavailable")
        if query == "RAISE":
            raise RuntimeError("boom")
        if query == "SLOW":
            await asyncio.sleep(30)
        if query == "LONG":
            return Observation("Doc 1(Title: Long) " + "word " * 400)
        return Observation(f"Doc 1(Title: {query}) Paris is the capital of France.")

    def score(self, answer, ground_truth):
        return score_answer(answer, golds_from_ground_truth(ground_truth))

    def gold_answer_text(self, ground_truth):
        return "; ".join(a[0] for a in golds_from_ground_truth(ground_truth))


def call(mem, query):
    return render_turn(mem, "I search.", tool_call=ToolCall("search", {"query": query}))


def answer(mem, text="Paris"):
    return render_turn(mem, "I know it.", answer=text)


def sample(uid="u1", session_id=0, **extra_info):
    return {
        "data_source": "test",
        "raw_prompt": [{"role": "user", "content": QUESTION}],
        "reward_model": {"style": "rule", "ground_truth": {"target": [["Paris"]]}},
        "extra_info": {"index": 0, "questions": [QUESTION], **extra_info},
        "uid": uid,
        "session_id": session_id,
        "global_steps": 1,
        "index": 0,
        "tools_kwargs": {},
    }


@pytest.fixture(scope="module")
def base_config(tiny_model_path):
    """verl's real ppo_trainer config, composed from the installed package, with our reward function; no session-end
    scoring (its scripted servers do not force answers; the rollout scorer has tests/agent_loop/
    test_rollout_credit_on_cpu.py)."""
    rollout = {"prompt_length": 1024, "response_length": 128, "calculate_log_probs": True}
    model = {"path": str(tiny_model_path)}
    return OmegaConf.merge(
        ppo_trainer_config(),
        NO_SESSION_SCORING,
        {"actor_rollout_ref": {"model": model, "rollout": rollout}, "reward": REWARD_FUNCTION},
    )


def make_config(base, rollout=None, **mempo):
    config = OmegaConf.merge(base, {"mempo": {"env": {"name": "mempo_test_search"}, **mempo}})
    if rollout:
        config = OmegaConf.merge(config, {"actor_rollout_ref": {"rollout": rollout}})
    return config


def sampling_params(config):
    """As AgentLoopWorker.generate_sequences builds them."""
    rollout = config.actor_rollout_ref.rollout
    return dict(
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        repetition_penalty=1.0,
        logprobs=rollout.calculate_log_probs,
    )


def run_session(config, server, tokenizer, row=None):
    ENV_CALLS.clear()

    async def go():
        loop = make_agent_loop(config, server, tokenizer, hf_model_type="qwen2")
        return await loop.run(sampling_params(config), **(row or sample()))

    return asyncio.run(go())


def segments(outputs):
    return [Segment.from_extra_fields(o.extra_fields) for o in outputs]


def reward(outputs, row=None):
    """verl's reward input: the row's extra_info merged with the last output's extra_fields (naive.py)."""
    row = row or sample()
    extra_info = {**row["extra_info"], **outputs[-1].extra_fields}
    return compute_score("test", "", row["reward_model"]["ground_truth"], extra_info)["score"]


def check_mem_spans(tokenizer, output):
    for turn in Segment.from_extra_fields(output.extra_fields).turns:
        if turn.memory is not None:
            start, end = turn.mem_span
            assert f"<mem>{turn.memory}</mem>" in decode_ids(tokenizer, output.response_ids[start:end])


SCRIPT = [call("Need the capital of France.", "capital of France"), call("Doc says Paris.", "Paris"), answer("Paris.")]


def test_registered_under_mempo_agent():
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    assert _agent_loop_registry["mempo_agent"] == {"_target_": "mempo_verl.agent_loop.MemPOAgentLoop"}


def test_memory_policy_one_segment_per_turn(base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=SCRIPT)
    outputs = run_session(make_config(base_config), server, tokenizer)
    assert len(outputs) == len(server.requests) == 3
    for output, request in zip(outputs, server.requests, strict=True):
        # the model saw exactly the stored prompt, and the response is exactly what it generated
        assert output.prompt_ids == list(request.prompt_ids)
        assert output.response_ids == list(request.response_ids)
        assert output.response_mask == [1] * len(output.response_ids)
        assert output.response_logprobs == list(request.log_probs)
        assert output.num_turns == 6  # 3 assistant turns + 3 user/tool messages (verl counts chat turns)
        check_mem_spans(tokenizer, output)
    # the log-probs are the tiny model's own: recompute one without the server's shortcut
    first = outputs[0]
    ids = torch.tensor([first.prompt_ids + first.response_ids])
    logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0].float(), -1)
    direct = [logp[len(first.prompt_ids) - 1 + j, t].item() for j, t in enumerate(first.response_ids)]
    assert max(abs(a - b) for a, b in zip(direct, first.response_logprobs, strict=True)) < 1e-4
    # turn 2 sees turn 1's memory and information, not turn 0's (k = 1)
    prompt_2 = tokenizer.decode(outputs[2].prompt_ids)
    assert "<mem>Doc says Paris.</mem>\n<information>Doc 1(Title: Paris)" in prompt_2
    assert "Need the capital" not in prompt_2 and "Title: capital of France" not in prompt_2
    assert "Turns left: 14 (this one included)." in prompt_2
    segs = segments(outputs)
    assert [s.segment_index for s in segs] == [0, 1, 2] and [s.is_last for s in segs] == [False, False, True]
    assert all((s.uid, s.session_id, s.gold_answer, s.policy) == ("u1", 0, "Paris", "memory") for s in segs)
    # one row per turn: each row's one turn is the one its R^M credits
    assert all(s.layout == "per_turn" and s.credited_turn == s.turns[0] for s in segs)
    # the turn is recorded once, with what later contexts render (the call as parsed, the think)
    assert segs[0].turns[0].tool_call == ToolCall("search", {"query": "capital of France"})
    assert segs[0].turns[0].think == "I search."
    # memory credit scores with the tool schemas the rollout's chat template received (no environment in the trainer)
    assert all(s.tool_schemas == tuple(_SearchEnv().tool_schemas()) for s in segs)
    last = segs[-1]
    assert (last.termination, last.final_answer, last.format_valid) == ("answer", "Paris", True)
    assert last.episode.num_turns == 3 and last.episode.env_failures == 0
    assert last.episode.total_tokens == sum(len(o.prompt_ids) + len(o.response_ids) for o in outputs)
    assert segs[1].turns[0].observation == "Doc 1(Title: Paris) Paris is the capital of France."
    assert reward(outputs) == 1.0
    assert outputs[-1].extra_fields["answer_normalization"] == "squad"  # mempo.reward.normalization's default
    assert json.loads(json.dumps(outputs[-1].extra_fields)) == outputs[-1].extra_fields


def _five_turns():
    return [call(f"Fact {i}: searching more.", f"topic {i}") for i in range(4)] + [answer("Fact 4: Paris.")]


def test_prompt_length_flat_under_memory_and_growing_under_full(base_config, tiny_model, tokenizer):
    memory = PolicyServer(tiny_model, tokenizer, script=_five_turns())
    run_session(make_config(base_config), memory, tokenizer)
    lengths = [len(r.prompt_ids) for r in memory.requests]
    assert max(lengths[1:]) - min(lengths[1:]) <= 2  # one memory + one observation, whatever the turn
    full = PolicyServer(tiny_model, tokenizer, script=_five_turns())
    full_config = make_config(base_config, rollout={"response_length": 1024}, context={"policy": "full"})
    run_session(full_config, full, tokenizer)
    grown = [len(r.prompt_ids) for r in full.requests]
    completions = [len(r.response_ids) for r in full.requests]
    # each turn's context is the previous one + its generation + the new information
    assert all(b >= a + c for a, b, c in zip(grown, grown[1:], completions, strict=False))
    assert grown[-1] > lengths[-1] + 100


def test_full_policy_is_one_segment_with_context_tokens_masked(base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=SCRIPT)
    config = make_config(base_config, rollout={"response_length": 512}, context={"policy": "full"})
    outputs = run_session(config, server, tokenizer)
    assert len(outputs) == 1
    out = outputs[0]
    sequence, prompt_len = out.prompt_ids + out.response_ids, len(out.prompt_ids)
    assert out.prompt_ids == list(server.requests[0].prompt_ids)
    generated = [0] * len(out.response_ids)
    segment = segments(outputs)[0]
    for turn, request in zip(segment.turns, server.requests, strict=True):
        start, end = turn.response_span
        # what turn t was sent is exactly the segment's sequence up to its generation
        assert list(request.prompt_ids) == sequence[: prompt_len + start]
        assert out.response_ids[start:end] == list(request.response_ids)
        assert out.response_logprobs[start:end] == list(request.log_probs)
        generated[start:end] = [1] * (end - start)
    assert out.response_mask == generated  # 1 on generated tokens, 0 on the information tokens in between
    assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, out.response_mask, strict=True) if m == 0)
    context = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m == 0])
    assert "<information>Doc 1(Title: capital of France)" in context and "Turns left: 14" in context
    check_mem_spans(tokenizer, out)
    assert (segment.policy, segment.termination, segment.is_last) == ("full", "answer", True)
    # the layout the policy chose: one sequence, whose row carries no single <mem> to credit (A^T only)
    assert segment.layout == "sequence" and segment.credited_turn is None
    assert reward(outputs) == 1.0


BAD_TURNS = {
    "no_tags": ("The answer is Paris.", "format_error", "missing_mem"),
    "unterminated_mem": (
        "<mem>half a memory <think>t</think><answer>Paris</answer>",
        "format_error",
        "missing_close_tag",
    ),
    "invalid_tool_json": (
        '<mem>m</mem><think>t</think><tool_call>{"name": "search", "arguments": </tool_call>',
        "format_error",
        "invalid_tool_json",
    ),
    "unknown_tool": (render_turn("m", "t", tool_call=ToolCall("browse", {"url": "x"})), "unknown_tool", None),
    "empty_answer": ("<mem>m</mem><think>t</think><answer>  </answer>", "format_error", "empty_answer"),
    "undecodable": (None, "undecodable", None),
    "truncated": (answer("a very long memory " * 20), "truncated", "missing_close_tag"),
}


@pytest.mark.parametrize("case", sorted(BAD_TURNS))
def test_bad_model_output_ends_the_episode_with_zero_reward(case, base_config, tiny_model, tokenizer):
    text, reason, error = BAD_TURNS[case]
    if text is None:
        # an id past the tokenizer's vocabulary (a model with a padded vocabulary can sample one)
        text = tokenizer.encode(answer("m"), add_special_tokens=False) + [len(tokenizer) + 7]
    server = PolicyServer(tiny_model, tokenizer, script=[call("first", "capital of France"), text])
    agent = {"max_turn_tokens": 48} if case == "truncated" else {}
    outputs = run_session(make_config(base_config, agent=agent), server, tokenizer)
    assert len(outputs) == 2  # the good first turn is kept as its own segment
    last = segments(outputs)[-1]
    assert (last.termination, last.format_valid, last.final_answer) == (reason, False, None)
    if error is not None:
        assert error in last.turns[0].format_errors
    assert outputs[-1].response_ids == list(server.requests[-1].response_ids)
    assert reward(outputs) == 0.0


@pytest.mark.parametrize(
    ("query", "timeout", "error", "shown"),
    [
        ("FAIL", 60, "retriever_unavailable", "The search backend is down."),
        ("RAISE", 60, "exception", "The search tool failed (RuntimeError)."),
        ("SLOW", 0.2, "timeout", "The search tool did not answer within 0.2 s."),
    ],
)
def test_environment_failure_is_an_observation(query, timeout, error, shown, base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=[call("m", query), answer("Paris.")])
    config = make_config(base_config, env={"name": "mempo_test_search", "tool_timeout_s": timeout})
    outputs = run_session(config, server, tokenizer)
    first, last = segments(outputs)
    assert (first.turns[0].observation_ok, first.turns[0].observation_error) == (False, error)
    assert f"<information>{shown}</information>" in tokenizer.decode(server.requests[1].prompt_ids)
    assert last.episode.env_failures == 1
    assert (last.termination, reward(outputs)) == ("answer", 1.0)  # the episode went on


def test_max_turns_cuts_without_running_the_last_call(base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=[call("a", "one"), call("b", "two")])
    outputs = run_session(make_config(base_config, agent={"max_turns": 2}), server, tokenizer)
    last = segments(outputs)[-1]
    assert (len(outputs), last.termination, ENV_CALLS) == (2, "max_turns", ["one"])
    assert last.turns[0].observation is None and reward(outputs) == 0.0


@pytest.mark.parametrize("policy", ["memory", "full"])
def test_prompt_budget_ends_the_episode(policy, base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=[call("a", "LONG"), answer("Paris.")])
    rollout = {"prompt_length": 300} if policy == "memory" else {"response_length": 200}
    outputs = run_session(make_config(base_config, rollout=rollout, context={"policy": policy}), server, tokenizer)
    assert len(server.requests) == 1  # the over-budget context was never sent
    assert segments(outputs)[-1].termination == "prompt_budget" and reward(outputs) == 0.0
    if policy == "full":
        assert len(outputs[0].response_ids) == len(server.requests[0].response_ids)  # no unsent tokens


def test_first_prompt_over_budget_is_a_config_error(base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=SCRIPT)
    with pytest.raises(ValueError, match="rollout.prompt_length=20"):
        run_session(make_config(base_config, rollout={"prompt_length": 20}), server, tokenizer)


def test_memory_over_its_budget_is_cut_in_the_next_context(base_config, tiny_model, tokenizer):
    long_memory = "one two three four five six seven eight"
    server = PolicyServer(tiny_model, tokenizer, script=[call(long_memory, "q"), answer("Paris.")])
    outputs = run_session(make_config(base_config, context={"memory_token_budget": 4}), server, tokenizer)
    first, last = segments(outputs)
    assert first.turns[0].memory == long_memory  # the segment keeps what was written (and trained)
    assert (first.turns[0].memory_in_context, first.turns[0].memory_truncated) == ("one two three four", True)
    assert "<mem>one two three four</mem>" in tokenizer.decode(server.requests[1].prompt_ids)
    assert last.episode.memory_truncations == 1


def test_sampling_from_random_weights_ends_cleanly(base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, mode="sampling", seed=1)
    outputs = run_session(make_config(base_config, agent={"max_turn_tokens": 16}), server, tokenizer)
    last = segments(outputs)[-1]
    assert last.termination in {"format_error", "truncated", "undecodable"} and reward(outputs) == 0.0
    assert outputs[-1].response_ids == list(server.requests[-1].response_ids)
    assert all(math.isfinite(lp) and lp <= 0 for lp in outputs[-1].response_logprobs)


def test_builtin_synthetic_environment(base_config, tiny_model, tokenizer):
    row = make_synthetic_rows(1, objectives=1, hops=2, seed=3)[0]
    chain = row["extra_info"]["chains"][0]
    lookups = [render_turn(f"Next: {k}.", "Look it up.", tool_call=ToolCall("lookup", {"key": k})) for k in chain[:2]]
    script = [*lookups, answer(f"Found {chain[2]}.", chain[2])]
    server = PolicyServer(tiny_model, tokenizer, script=script)
    kwargs = {k: v for k, v in row.items() if k not in ("prompt", "agent_name")}
    kwargs.update(raw_prompt=row["prompt"], uid="s1", session_id=0, global_steps=1)
    config = make_config(base_config, env={"name": "synthetic"}, agent={"max_turns": 4})
    outputs = run_session(config, server, tokenizer, kwargs)
    segs = segments(outputs)
    assert segs[0].turns[0].observation.startswith(f"{chain[0]}:")
    assert (segs[-1].termination, segs[-1].gold_answer) == ("answer", chain[2])
    assert reward(outputs, kwargs) == 1.0


# ------------------------------------------------------------------ verl's TransferQueue postprocess


def _tq_worker(monkeypatch, config, tokenizer, reward_worker):
    """A real AgentLoopWorkerTQ (its undecorated class) with the fields the postprocess reads; puts are recorded."""
    from verl.trainer.ppo.v1 import agent_loop_tq

    puts = []

    async def record_put(keys, fields, tags, partition_id):
        puts.append(SimpleNamespace(keys=keys, fields=fields, tags=tags, partition_id=partition_id))

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", record_put)
    worker = object.__new__(agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class)
    handles = None
    if reward_worker is not None:
        # a Ray call pickles its arguments: the reward worker must not mutate the caller's objects
        remote = lambda data: reward_worker.compute_score(pickle.loads(pickle.dumps(data)))  # noqa: E731
        handles = [SimpleNamespace(compute_score=SimpleNamespace(remote=remote))]
    worker.__dict__.update(
        config=config,
        tokenizer=tokenizer,
        processor=None,
        mm_processor_kwargs={},
        distillation_enabled=False,
        reward_loop_worker_handles=handles,
    )
    return worker, puts


def _postprocess(monkeypatch, config, tokenizer, outputs, row, with_reward_worker=True):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    async def go():
        reward_worker = RewardLoopWorker(config) if with_reward_worker else None  # inside the running loop
        worker, puts = _tq_worker(monkeypatch, config, tokenizer, reward_worker)
        await worker._agent_loop_postprocess(outputs, False, **row)
        return puts

    return asyncio.run(go())


@pytest.mark.parametrize("script", ["good", "bad"])
def test_rows_land_in_transfer_queue_with_reward_broadcast(script, monkeypatch, base_config, tiny_model, tokenizer):
    turns = SCRIPT if script == "good" else [call("first", "q"), "no tags at all"]
    server = PolicyServer(tiny_model, tokenizer, script=turns)
    config = make_config(base_config)
    row = sample(uid="prompt7", session_id=2)
    outputs = run_session(config, server, tokenizer, row)
    (put,) = _postprocess(monkeypatch, config, tokenizer, outputs, row)
    n = len(outputs)
    assert put.keys == [f"prompt7_2_{i}" for i in range(n)] and put.partition_id == "train"
    expected = 1.0 if script == "good" else 0.0
    # the reward was computed once on the last output by our compute_score and copied to every row
    assert [o.reward_score for o in outputs] == [expected] * n
    infos = [o.extra_fields["reward_extra_info"] for o in outputs]
    assert all(info == infos[-1] for info in infos) and infos[-1]["format_valid"] == float(script == "good")
    for i, output in enumerate(outputs):
        rm_scores = put.fields["rm_scores"][i]
        assert rm_scores[-1].item() == expected and rm_scores[:-1].abs().sum().item() == 0
        assert put.fields["input_ids"][i].tolist() == output.prompt_ids + output.response_ids
        assert put.fields["loss_mask"][i].tolist() == output.response_mask
        stored = Segment.from_extra_fields(put.fields["extra_fields"][i])
        assert stored.segment_index == i and stored.turns[0].turn_index == i
        assert put.tags[i]["prompt_len"] == len(output.prompt_ids) and put.tags[i]["min_global_steps"] == 0
    assert "mempo" not in row["extra_info"]  # the row's own extra_info is stored untouched


def test_environment_reward_source_skips_verls_reward_worker(monkeypatch, base_config, tiny_model, tokenizer):
    server = PolicyServer(tiny_model, tokenizer, script=SCRIPT)
    config = make_config(base_config, reward={"source": "environment"})
    outputs = run_session(config, server, tokenizer)
    assert outputs[-1].reward_score == 1.0 and outputs[-1].extra_fields["reward_extra_info"]["em"] == 1.0
    (put,) = _postprocess(monkeypatch, config, tokenizer, outputs, sample(), with_reward_worker=False)
    assert [o.reward_score for o in outputs] == [1.0, 1.0, 1.0]
    assert put.fields["rm_scores"][0][-1].item() == 1.0


@pytest.mark.parametrize(("normalization", "expected"), [("squad", 0.0), ("unicode", 1.0)])
def test_reward_normalization_reaches_the_reward_function(normalization, expected, base_config, tiny_model, tokenizer):
    # "Beyonce" against the gold "Beyoncé": the official SQuAD rules keep the accent, the unicode option folds it
    row = {**sample(), "reward_model": {"style": "rule", "ground_truth": {"target": [["Beyoncé"]]}}}
    server = PolicyServer(tiny_model, tokenizer, script=[answer("Known.", "Beyonce")])
    outputs = run_session(make_config(base_config, reward={"normalization": normalization}), server, tokenizer, row)
    assert outputs[-1].extra_fields["answer_normalization"] == normalization
    assert reward(outputs, row) == expected


def test_policy_server_keeps_verls_generate_signature():
    import inspect

    from verl.workers.rollout.llm_server import LLMServerClient

    ours, verls = inspect.signature(PolicyServer.generate), inspect.signature(LLMServerClient.generate)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in verls.parameters.values()
    ]
    assert MemPOAgentLoop.__module__ == "mempo_verl.agent_loop"
