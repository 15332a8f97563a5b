"""MemPOAgentLoop: a verl 0.9.1 agent loop (``@register("mempo_agent")``) that writes one segment per turn.

One call of ``run`` is one session (verl runs ``rollout.n`` of them per prompt). The loop is a state machine::

    BUILD_CONTEXT --> GENERATE --> PARSE --(tool call)--> ACT --> BUILD_CONTEXT
          |                          |
          +--(over budget)--> TERMINATED <--(answer / malformed / unknown tool / undecodable / truncated / max turns)

BUILD_CONTEXT  the context policy's messages for turn t -> the exact prompt ids, from the session's segment
               layout (``layout.py``, chosen once from the policy: ``per_turn`` renders each context afresh,
               ``sequence`` appends to one growing sequence, as ``ToolAgentLoop`` does)
GENERATE       ``server_manager.generate``: token ids in, token ids and rollout log-probs out (handed to the layout)
PARSE          decode, ``protocol.parse_turn``; decide the next state
ACT            ``env.step`` under a timeout; its reply is the next context's ``<information>``

Each committed turn is recorded once, as a ``turns.TurnRecord``: the context policy renders later contexts from
it and the segments carry it. ``run`` returns ``list[AgentLoopOutput]``, one per row of the layout: one per turn
under ``per_turn`` (prompt = the ids the model saw for that turn, response = exactly its generated ids,
``response_mask`` ones, its log-probs); one for the trajectory under ``sequence`` (response = generated ids and
context tokens, mask 0 on the context tokens). ``extra_fields`` carry ``segments.Segment``. verl stores each
output as the row ``{uid}_{session_id}_{index}`` and computes the reward on the last one (``reward.source``:
verl's reward function reads the last segment's ``final_answer`` / ``format_valid``; or ``env.score`` here), then
copies it to the session's other rows.

Bad model output never raises: it ends the episode with a ``TerminationReason`` and R^T = 0 (DESIGN §3).
Environment failures (``ok=False``, timeouts, exceptions) are observations the model reads, and are counted.

Notation: t is the 0-based turn index; T = ``mempo.agent.max_turns``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.config import EnvConfig, mempo_section, model_positions, scoring_window
from mempo_verl.context import ContextPolicy, EpisodeContext, render_questions, truncate_to_token_budget
from mempo_verl.envs import Environment, Observation, make_env
from mempo_verl.layout import LAYOUTS, Row, SegmentLayout, TurnPrompt
from mempo_verl.protocol import DEFAULT_EOS_STRINGS, Turn, parse_turn, strip_eos
from mempo_verl.rewards import trajectory_format_valid, validate_reward_mode
from mempo_verl.rollout_credit import SharedScores, score_session
from mempo_verl.segments import (
    EpisodeSummary,
    Segment,
    TerminationReason,
    decode_ids,
    memory_token_span,
    undecodable_ids,
)
from mempo_verl.turns import TurnRecord

logger = logging.getLogger(__name__)

_ENVIRONMENTS: dict[tuple[str, str], Environment] = {}
"""One environment per (name, kwargs) and process: verl builds a new agent loop per sample, while an environment is
stateless across episodes and may hold an expensive resource (a BM25 index) (``envs/base.py``)."""


def get_environment(config: EnvConfig) -> Environment:
    """The process's environment for ``config``, built on first use with ``make_env(name, **kwargs)``."""
    key = config.cache_key()
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = make_env(config.name, **dict(config.kwargs))
    return _ENVIRONMENTS[key]


class LoopState(Enum):
    """The states of one session (see the module docstring)."""

    BUILD_CONTEXT = "build_context"
    GENERATE = "generate"
    PARSE = "parse"
    ACT = "act"
    TERMINATED = "terminated"


@dataclass
class _Generation:
    """The loop's private working state of one turn: filled as it moves through the states, committed as a
    ``TurnRecord`` (the one description of a turn); kept for the row's server fields and timings."""

    prompt: TurnPrompt
    """The layout's prompt for the turn."""
    max_tokens: int
    """The turn's generation limit."""
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    server_fields: dict[str, Any] = field(default_factory=dict)
    """``TokenOutput.extra_fields`` (weight versions for verl's staleness tags)."""
    num_preempted: int = -1
    text: str = ""
    """The decoded turn ("" when undecodable)."""
    turn: Turn = field(default_factory=lambda: parse_turn(""))
    observation: Observation | None = None
    generate_s: float = 0.0
    tool_s: float = 0.0


@dataclass
class EpisodeState:
    """One session's state, owned by ``MemPOAgentLoop.run``."""

    sample: dict[str, Any]
    """The dataset row as verl passes it (``raw_prompt``, ``extra_info``, ``reward_model``, ``uid``, …)."""
    sampling_params: dict[str, Any]
    request_id: str
    """One id per session: verl's sticky-session routing keeps the turns on one server (prefix cache)."""
    episode: EpisodeContext
    questions: tuple[str, ...]
    ground_truth: Any
    gold_answer: str | None
    reward_mode: str
    layout: SegmentLayout
    """The session's segment layout: prompt ids, generated ids and rows."""
    turns: list[TurnRecord] = field(default_factory=list)
    """The committed turns: the context policy's history, and the segments' turns."""
    generations: list[_Generation] = field(default_factory=list)
    """The committed turns' working state (server fields, timings, parsed ``Turn``), aligned with ``turns``."""
    pending: _Generation | None = None
    termination: TerminationReason | None = None
    env_failures: int = 0


@register("mempo_agent")
class MemPOAgentLoop(AgentLoopBase):
    """MemPO's multi-turn agent loop; configured by the ``mempo:`` section (``mempo_verl.config``)."""

    shared_scores: ClassVar[SharedScores] = SharedScores()
    """The worker's rollout-scorer requests of the current weights, shared by its sessions (verl builds one loop
    object per session, so the table lives on the class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # verl passes tools=ToolListWrap(...) of its own tool registry; the environment provides ours instead
        kwargs.pop("tools", None)
        super().__init__(*args, **kwargs)
        self.mempo = mempo_section(self.config)
        self.policy = ContextPolicy(self.mempo.context, self.mempo.tags)
        self.layout_class = LAYOUTS[self.policy.layout]
        self.env = get_environment(self.mempo.env)
        self.tool_schemas = list(self.env.tool_schemas())
        self.tool_names = {s.get("function", {}).get("name") for s in self.tool_schemas}
        self.scoring_window: int | None = None
        """The scoring window of ``scorer: rollout`` (``config.scoring_window``); None under the other scorers."""
        if self.mempo.credit.scorer == "rollout":
            positions = model_positions(str(self.config.actor_rollout_ref.model.path))
            self.scoring_window = scoring_window(self.mempo, self.config, positions)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)
        added = self.tokenizer.get_added_vocab()
        self.eos_ids = {int(self.tokenizer.eos_token_id)} | {added[s] for s in DEFAULT_EOS_STRINGS if s in added}
        self._handlers: dict[LoopState, Callable[[EpisodeState], Awaitable[LoopState]]] = {
            LoopState.BUILD_CONTEXT: self._build_context,
            LoopState.GENERATE: self._generate,
            LoopState.PARSE: self._parse,
            LoopState.ACT: self._act,
        }

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> list[AgentLoopOutput]:
        """Run one session; ``kwargs`` is the dataset row plus ``uid`` and ``session_id``."""
        state = self._start(sampling_params, kwargs)
        status = LoopState.BUILD_CONTEXT
        while status is not LoopState.TERMINATED:
            status = await self._handlers[status](state)
        segments = self._segments(state)
        if self.mempo.credit.scorer == "rollout" and self.mempo.credit.alpha != 0:
            # session end: P[ans | q, mem_t] and ε_t of every turn from the rollout server (rollout_credit.py);
            # α = 0 never reads them
            segments = await score_session(
                self.server_manager.generate, state.request_id, segments, self.tokenizer,
                self.mempo.credit.baseline, self.scoring_window, self.mempo.tags,
                shared=self.shared_scores, version=state.generations[-1].server_fields.get("global_steps"),
            )  # fmt: skip
        return self._outputs(state, segments)

    def _start(self, sampling_params: dict[str, Any], sample: dict[str, Any]) -> EpisodeState:
        questions = tuple(self.env.questions(sample))
        ground_truth = (sample.get("reward_model") or {}).get("ground_truth")
        row_mode = (sample.get("extra_info") or {}).get("reward_mode")
        # a row's own reward mode (a dataset mixing modes) wins over the run-wide default
        reward_mode = validate_reward_mode(row_mode) if row_mode is not None else self.mempo.reward.mode
        deterministic = getattr(self.rollout_config, "full_determinism", False)
        return EpisodeState(
            sample=sample,
            sampling_params=dict(sampling_params),
            request_id=f"det-{int(sample.get('priority', 0))}" if deterministic else uuid4().hex,
            episode=EpisodeContext(
                task_prompt=self.env.task_prompt(sample),
                question_text=render_questions(questions),
                max_turns=self.mempo.agent.max_turns,
            ),
            questions=questions,
            ground_truth=ground_truth,
            gold_answer=self.env.gold_answer_text(ground_truth) if ground_truth is not None else None,
            reward_mode=reward_mode,
            layout=self.layout_class(
                self.continuous_token_builder, self.tool_schemas, self.prompt_length, self.response_length
            ),
        )

    # ------------------------------------------------------------------------------------------ state handlers

    async def _build_context(self, state: EpisodeState) -> LoopState:
        # 1. turn t's messages from the context policy (pure)
        messages = self.policy.messages(state.episode, state.turns)
        # 2. the exact ids the server will see, from the session's layout
        prompt = state.layout.next_prompt(messages)
        if not state.turns and not prompt.fits:
            # why: not a model failure; a first prompt that never fits is a data/config error, and dropping the
            # session silently would hide it (verl logs the error and marks the prompt group failed)
            raise ValueError(
                f"the first prompt has {len(prompt.prompt_ids)} tokens, more than rollout.prompt_length="
                f"{self.prompt_length}; raise prompt_length or shorten the task prompt or question"
            )
        # 3. budget: per_turn bounds each prompt, sequence bounds its growing response (the layout decides)
        if not prompt.fits:
            # why: the context the model would need does not fit; the episode ends unanswered (R^T = 0)
            state.termination = "prompt_budget"
            return LoopState.TERMINATED
        max_tokens = prompt.max_tokens
        if self.mempo.agent.max_turn_tokens is not None:
            max_tokens = min(max_tokens, self.mempo.agent.max_turn_tokens)
        state.pending = _Generation(prompt=prompt, max_tokens=max_tokens)
        return LoopState.GENERATE

    async def _generate(self, state: EpisodeState) -> LoopState:
        pending = state.pending
        params = {**state.sampling_params, "max_tokens": pending.max_tokens}
        start = time.perf_counter()
        output: TokenOutput = await self.server_manager.generate(
            request_id=state.request_id, prompt_ids=pending.prompt.prompt_ids, sampling_params=params
        )
        pending.generate_s = time.perf_counter() - start
        pending.response_ids = [int(i) for i in output.token_ids]
        pending.logprobs = list(output.log_probs) if output.log_probs is not None else None
        pending.server_fields = dict(output.extra_fields or {})
        pending.num_preempted = output.num_preempted if output.num_preempted is not None else -1
        state.layout.append(pending.prompt, pending.response_ids, pending.logprobs)
        return LoopState.PARSE

    async def _parse(self, state: EpisodeState) -> LoopState:
        pending = state.pending
        # 1. an id outside the vocabulary has no text: nothing can be parsed from the turn
        bad_ids = undecodable_ids(self.tokenizer, pending.response_ids)
        if bad_ids:
            logger.warning("turn %d holds undecodable token ids %s", len(state.turns), bad_ids[:5])
            return self._end_turn(state, "undecodable")
        # 2. decode (special tokens kept, so character offsets match the ids) and parse
        pending.text = decode_ids(self.tokenizer, pending.response_ids)
        pending.turn = parse_turn(pending.text, self.mempo.tags)
        ids = pending.response_ids
        truncated = len(ids) >= pending.max_tokens and (not ids or ids[-1] not in self.eos_ids)
        # 3. the next state
        if not pending.turn.is_valid:
            # why: a malformed turn ends the episode (DESIGN §3); a cut one is reported as cut
            return self._end_turn(state, "truncated" if truncated else "format_error")
        if pending.turn.action == "answer":
            return self._end_turn(state, "answer")
        if pending.turn.tool_call.name not in self.tool_names:
            # why: calling a tool the environment does not offer is malformed output, not an environment failure
            return self._end_turn(state, "unknown_tool")
        if len(state.turns) + 1 >= self.mempo.agent.max_turns:
            # why: the last allowed turn asked for a tool whose reply no turn would read; cut (R^T = 0)
            return self._end_turn(state, "max_turns")
        return LoopState.ACT

    async def _act(self, state: EpisodeState) -> LoopState:
        pending = state.pending
        start = time.perf_counter()
        pending.observation = await self._run_tool(pending.turn, state.sample)
        pending.tool_s = time.perf_counter() - start
        if not pending.observation.ok:
            state.env_failures += 1
        self._commit_turn(state)
        return LoopState.BUILD_CONTEXT

    def _end_turn(self, state: EpisodeState, reason: TerminationReason) -> LoopState:
        state.termination = reason
        self._commit_turn(state)
        return LoopState.TERMINATED

    def _commit_turn(self, state: EpisodeState) -> None:
        """Record the pending turn once (``TurnRecord``): the context history and the segments' turn."""
        state.turns.append(self._turn_record(len(state.turns), state.pending))
        state.generations.append(state.pending)
        state.pending = None

    def _turn_record(self, index: int, generation: _Generation) -> TurnRecord:
        turn, start = generation.turn, generation.prompt.response_start
        memory_in_context, memory_truncated = None, False
        if turn.mem is not None:
            # why: a memory over its budget is cut where later turns read it; its written tokens stay trained
            budget = self.mempo.context.memory_token_budget
            memory_in_context, memory_truncated = truncate_to_token_budget(self.tokenizer, turn.mem, budget)
        mem_span = None
        if "mem" in turn.spans:
            first, end = memory_token_span(self.tokenizer, generation.response_ids, turn.spans["mem"])
            mem_span = (start + first, start + end)
        observation = generation.observation
        return TurnRecord(
            turn_index=index,
            text=strip_eos(generation.text),
            memory=turn.mem,
            memory_in_context=memory_in_context,
            memory_truncated=memory_truncated,
            think=turn.think,
            action=turn.action,
            tool_call=turn.tool_call,
            answer=turn.answer,
            observation=observation.text if observation is not None else None,
            observation_ok=observation.ok if observation is not None else None,
            observation_error=observation.error if observation is not None else None,
            observation_metrics={k: float(v) for k, v in observation.metrics.items()} if observation else {},
            mem_span=mem_span,
            response_span=(start, start + len(generation.response_ids)),
            prompt_tokens=len(generation.prompt.prompt_ids),
            completion_tokens=len(generation.response_ids),
            format_errors=tuple(e.kind for e in turn.errors),
        )

    async def _run_tool(self, turn: Turn, sample: Mapping[str, Any]) -> Observation:
        """``env.step`` under the timeout; a timeout, an exception or a non-Observation becomes ``ok=False``."""
        name, timeout = turn.tool_call.name, self.mempo.env.tool_timeout_s
        try:
            observation = await asyncio.wait_for(self.env.step(turn.tool_call, sample), timeout=timeout)
        except asyncio.TimeoutError:
            return Observation(f"The {name} tool did not answer within {timeout:g} s.", ok=False, error="timeout")
        except Exception as exc:
            # why: step must not raise (envs/base.py); a buggy environment must not kill the rollout worker
            logger.warning("environment %r raised in step(%s): %r", self.mempo.env.name, name, exc, exc_info=True)
            return Observation(f"The {name} tool failed ({type(exc).__name__}).", ok=False, error="exception")
        if not isinstance(observation, Observation):
            logger.warning("environment %r returned %r instead of an Observation", self.mempo.env.name, observation)
            return Observation(f"The {name} tool failed.", ok=False, error="bad_observation")
        return observation

    # ------------------------------------------------------------------------------------------ outputs

    def _segments(self, state: EpisodeState) -> list[Segment]:
        """The session's segments, one per row of its layout (one per turn, or one for the trajectory)."""
        if not state.turns:
            # why: only reachable when the first prompt is over budget, which raised in BUILD_CONTEXT
            raise RuntimeError("a session ended without any turn")
        groups = [[state.turns[t] for t in row.turns] for row in state.layout.rows()]
        final, last = self._final(state), len(groups) - 1
        return [
            self._segment(state, i, group, is_last=i == last, final=final if i == last else {})
            for i, group in enumerate(groups)
        ]

    def _outputs(self, state: EpisodeState, segments: list[Segment]) -> list[AgentLoopOutput]:
        """The session's rows, one per segment."""
        rows, num_turns = state.layout.rows(), 2 * len(state.turns)
        outputs = [self._output(state, row, segment, num_turns) for row, segment in zip(rows, segments, strict=True)]
        final = segments[-1]
        if self.mempo.reward.source == "environment":
            self._environment_reward(state, outputs[-1], final.final_answer, final.format_valid)
        return outputs

    def _final(self, state: EpisodeState) -> dict[str, Any]:
        """The last segment's verdict: termination, final answer, format validity and the episode's numbers."""
        records = state.turns
        sizes = [r.prompt_tokens + r.completion_tokens for r in records]
        return dict(
            termination=state.termination,
            # the answer counts only when the episode ended on it
            final_answer=records[-1].answer if state.termination == "answer" else None,
            format_valid=trajectory_format_valid([g.turn for g in state.generations]),
            episode=EpisodeSummary(
                num_turns=len(records),
                total_tokens=sum(sizes),
                peak_tokens=max(sizes),
                env_failures=state.env_failures,
                memory_truncations=sum(r.memory_truncated for r in records),
            ),
        )

    def _segment(
        self, state: EpisodeState, index: int, turns: list[TurnRecord], *, is_last: bool, final: dict[str, Any]
    ) -> Segment:
        return Segment(
            uid=None if state.sample.get("uid") is None else str(state.sample["uid"]),
            session_id=None if state.sample.get("session_id") is None else int(state.sample["session_id"]),
            segment_index=index,
            policy=self.policy.name,
            layout=state.layout.name,
            turns=tuple(turns),
            task_prompt=state.episode.task_prompt,
            questions=state.questions,
            question_text=state.episode.question_text,
            gold_answer=state.gold_answer,
            reward_mode=state.reward_mode,
            is_last=is_last,
            answer_normalization=self.mempo.reward.normalization,
            tool_schemas=tuple(self.tool_schemas),
            **final,
        )

    def _output(self, state: EpisodeState, row: Row, segment: Segment, num_turns: int) -> AgentLoopOutput:
        generations = [state.generations[t] for t in row.turns]
        prompt_ids, response_ids = row.prompt_ids, row.response_ids
        mask, logprobs = row.response_mask, row.response_logprobs
        if not response_ids:
            # why: verl writes the reward at response index -1 (AgentLoopOutput.as_dict); an empty generation
            # becomes one eos token with mask 0, trained on nothing
            response_ids, mask = [int(self.tokenizer.eos_token_id)], [0]
            logprobs = [0.0] if logprobs is not None else None
        extra_fields = segment.to_extra_fields()
        # verl's staleness tags read the weight versions from each row's extra_fields (agent_loop_tq.py)
        extra_fields["min_global_steps"] = generations[0].server_fields.get("min_global_steps")
        extra_fields["max_global_steps"] = generations[-1].server_fields.get("max_global_steps")
        preempted = [t.num_preempted for t in generations if t.num_preempted >= 0]
        metrics = AgentLoopMetrics(
            generate_sequences=sum(t.generate_s for t in generations),
            tool_calls=sum(t.tool_s for t in generations),
            num_preempted=sum(preempted) if preempted else -1,
        )
        return AgentLoopOutput(
            prompt_ids=list(prompt_ids),
            response_ids=list(response_ids),
            response_mask=list(mask),
            response_logprobs=list(logprobs) if logprobs is not None else None,
            num_turns=num_turns,
            metrics=metrics,
            extra_fields=extra_fields,
        )

    def _environment_reward(
        self, state: EpisodeState, last: AgentLoopOutput, final_answer: str | None, format_valid: bool
    ) -> None:
        """``reward.source=environment``: R^T = env.score on the last segment (0 if the format is invalid).

        verl then skips its reward worker (``_compute_score`` runs only when ``reward_score is None``) and copies
        ``reward_score`` and ``reward_extra_info`` to the session's other rows (agent_loop_tq.py), so both are set.
        """
        if state.ground_truth is None:
            # why: nothing to score against (an unlabeled row); leave it to verl's reward function
            return
        score = self.env.score(final_answer, state.ground_truth)
        reward = float(score.score) if format_valid else 0.0
        last.reward_score = reward
        last.extra_fields["reward_extra_info"] = {
            "score": reward,
            "em": sum(score.em) / len(score.em),
            "f1": sum(score.f1) / len(score.f1),
            "format_valid": float(format_valid),
        }
