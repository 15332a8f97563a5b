"""MemPOAgentLoop: a verl 0.9.1 agent loop (``@register("mempo_agent")``) that writes one segment per turn.

One call of ``run`` is one session (verl runs ``rollout.n`` of them per prompt). The loop is a state machine::

    BUILD_CONTEXT --> GENERATE --> PARSE --(tool call)--> ACT --> BUILD_CONTEXT
          |                          |
          +--(over budget)--> TERMINATED <--(answer / malformed / unknown tool / undecodable / truncated / max turns)

BUILD_CONTEXT  the context policy's messages for turn t -> the exact prompt ids (``memory``: the chat template
               of the rewritten context; ``full``: the ids already sent + the generated ids + the new context
               tokens, through verl's Continuous Token builder, as ``ToolAgentLoop`` does)
GENERATE       ``server_manager.generate``: token ids in, token ids and rollout log-probs out
PARSE          decode, ``protocol.parse_turn``; decide the next state
ACT            ``env.step`` under a timeout; its reply is the next context's ``<information>``

``run`` returns ``list[AgentLoopOutput]``: under ``memory``/``mem1`` one per turn (prompt = the ids the model saw
for that turn, response = exactly its generated ids, ``response_mask`` ones, its log-probs); under ``full`` one for
the trajectory (response = generated ids and context tokens, mask 0 on the context tokens). ``extra_fields``
carry ``segments.Segment``. verl stores each output as the row ``{uid}_{session_id}_{index}`` and computes the
reward on the last one (``reward.source``: verl's reward function reads the last segment's ``final_answer`` /
``format_valid``; or ``env.score`` here), then copies it to the session's other rows.

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
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.config import EnvConfig, mempo_section, model_positions, scoring_window
from mempo_verl.context import (
    ContextPolicy,
    ContextTurn,
    EpisodeContext,
    Message,
    render_questions,
    truncate_to_token_budget,
)
from mempo_verl.envs import Environment, Observation, make_env
from mempo_verl.protocol import DEFAULT_EOS_STRINGS, Turn, parse_turn, strip_eos
from mempo_verl.rewards import trajectory_format_valid, validate_reward_mode
from mempo_verl.rollout_credit import score_session
from mempo_verl.segments import (
    EpisodeSummary,
    Segment,
    TerminationReason,
    TurnRecord,
    decode_ids,
    memory_token_span,
    undecodable_ids,
)

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
class TurnTrace:
    """Everything one turn produced; filled as the turn moves through the states."""

    prompt_ids: list[int]
    """The ids sent to ``generate`` (under ``full``: the whole sequence so far)."""
    max_tokens: int
    """The turn's generation limit."""
    response_start: int
    """Where the turn's generated ids start in its segment's response ids (0 under the memory policies)."""
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    server_fields: dict[str, Any] = field(default_factory=dict)
    """``TokenOutput.extra_fields`` (weight versions for verl's staleness tags)."""
    num_preempted: int = -1
    text: str = ""
    """The decoded turn ("" when undecodable)."""
    turn: Turn = field(default_factory=lambda: parse_turn(""))
    observation: Observation | None = None
    memory_in_context: str | None = None
    """The ``<mem>`` content later contexts show (cut to ``memory_token_budget``)."""
    memory_truncated: bool = False
    generate_s: float = 0.0
    tool_s: float = 0.0


@dataclass
class FullSequence:
    """The one growing sequence of the ``full`` policy."""

    prompt_ids: list[int]
    """The first turn's prompt: the segment's prompt."""
    token_ids: list[int]
    """Prompt + every token since (generated and context): what the next ``generate`` is sent."""
    response_mask: list[int] = field(default_factory=list)
    """1 on generated tokens, 0 on context tokens, for ``token_ids[len(prompt_ids):]``."""
    response_logprobs: list[float] | None = field(default_factory=list)
    """Rollout log-probs aligned with ``response_mask`` (0.0 on context tokens); None when the server gave none."""


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
    history: list[ContextTurn] = field(default_factory=list)
    traces: list[TurnTrace] = field(default_factory=list)
    pending: TurnTrace | None = None
    full: FullSequence | None = None
    termination: TerminationReason | None = None
    env_failures: int = 0


@register("mempo_agent")
class MemPOAgentLoop(AgentLoopBase):
    """MemPO's multi-turn agent loop; configured by the ``mempo:`` section (``mempo_verl.config``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # verl passes tools=ToolListWrap(...) of its own tool registry; the environment provides ours instead
        kwargs.pop("tools", None)
        super().__init__(*args, **kwargs)
        self.mempo = mempo_section(self.config)
        self.policy = ContextPolicy(self.mempo.context, self.mempo.tags)
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
        )

    # ------------------------------------------------------------------------------------------ state handlers

    async def _build_context(self, state: EpisodeState) -> LoopState:
        # 1. turn t's messages from the context policy (pure)
        messages = self.policy.messages(state.episode, state.history)
        # 2. the exact ids the server will see
        if state.full is None:
            prompt_ids = self.continuous_token_builder.build_initial_tokens(messages, tools=self.tool_schemas)
            merged = None
            used = 0
        else:
            merged = self._merge_context(state.full, messages)
            prompt_ids = merged.token_ids
            used = len(prompt_ids) - len(state.full.prompt_ids)
        if not state.traces and len(prompt_ids) > self.prompt_length:
            # why: not a model failure; a first prompt that never fits is a data/config error, and dropping the
            # session silently would hide it (verl logs the error and marks the prompt group failed)
            raise ValueError(
                f"the first prompt has {len(prompt_ids)} tokens, more than rollout.prompt_length="
                f"{self.prompt_length}; raise prompt_length or shorten the task prompt or question"
            )
        # 3. budget: the memory policies bound each prompt, full bounds its growing response
        if (merged is not None and used >= self.response_length) or len(prompt_ids) - used > self.prompt_length:
            # why: the context the model would need does not fit; the episode ends unanswered (R^T = 0)
            state.termination = "prompt_budget"
            return LoopState.TERMINATED
        if merged is not None:
            state.full = merged
        elif self.policy.single_segment:
            state.full = FullSequence(prompt_ids=list(prompt_ids), token_ids=list(prompt_ids))
        max_tokens = self.response_length - used
        if self.mempo.agent.max_turn_tokens is not None:
            max_tokens = min(max_tokens, self.mempo.agent.max_turn_tokens)
        state.pending = TurnTrace(prompt_ids=list(prompt_ids), max_tokens=max_tokens, response_start=used)
        return LoopState.GENERATE

    def _merge_context(self, full: FullSequence, messages: list[Message]) -> FullSequence:
        """``full``: the sequence with the new user message's tokens appended (verl's Continuous Token merge).

        The policy's messages for turn t extend turn t-1's by [assistant, user]; ``messages[:-1]`` is what the
        sequence already renders, so only the user message (and the chat template's boundary) is tokenized. The
        result replaces ``full`` only once it fits the budget: tokens never sent must not enter the segment.
        """
        builder = self.continuous_token_builder
        merge = builder.merge_context_tokens(messages[:-1], messages, full.token_ids, tools=self.tool_schemas)
        mask, logprobs = builder.align_response_metadata(merge, full.response_mask, full.response_logprobs)
        return FullSequence(full.prompt_ids, list(merge.token_ids), mask, logprobs)

    async def _generate(self, state: EpisodeState) -> LoopState:
        pending = state.pending
        params = {**state.sampling_params, "max_tokens": pending.max_tokens}
        start = time.perf_counter()
        output: TokenOutput = await self.server_manager.generate(
            request_id=state.request_id, prompt_ids=pending.prompt_ids, sampling_params=params
        )
        pending.generate_s = time.perf_counter() - start
        pending.response_ids = [int(i) for i in output.token_ids]
        pending.logprobs = list(output.log_probs) if output.log_probs is not None else None
        pending.server_fields = dict(output.extra_fields or {})
        pending.num_preempted = output.num_preempted if output.num_preempted is not None else -1
        if state.full is not None:
            self._append_generated(state.full, pending)
        return LoopState.PARSE

    @staticmethod
    def _append_generated(full: FullSequence, pending: TurnTrace) -> None:
        """``full``: the generated ids join the sequence verbatim, mask 1, with their log-probs."""
        full.token_ids.extend(pending.response_ids)
        full.response_mask.extend([1] * len(pending.response_ids))
        if full.response_logprobs is not None and pending.logprobs is not None:
            full.response_logprobs.extend(pending.logprobs)
        else:
            # why: one turn without log-probs leaves the sequence without aligned log-probs
            full.response_logprobs = None

    async def _parse(self, state: EpisodeState) -> LoopState:
        pending = state.pending
        # 1. an id outside the vocabulary has no text: nothing can be parsed from the turn
        bad_ids = undecodable_ids(self.tokenizer, pending.response_ids)
        if bad_ids:
            logger.warning("turn %d holds undecodable token ids %s", len(state.traces), bad_ids[:5])
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
        if len(state.traces) + 1 >= self.mempo.agent.max_turns:
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
        """Move the pending turn into the traces and the context history."""
        pending, turn = state.pending, state.pending.turn
        if turn.mem is not None:
            # why: a memory over its budget is cut where later turns read it; its written tokens stay trained
            budget = self.mempo.context.memory_token_budget
            pending.memory_in_context, pending.memory_truncated = truncate_to_token_budget(
                self.tokenizer, turn.mem, budget
            )
        observation = pending.observation.text if pending.observation is not None else None
        state.history.append(
            ContextTurn(strip_eos(pending.text), pending.memory_in_context, turn.think, turn.tool_call, observation)
        )
        state.traces.append(pending)
        state.pending = None

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
        """The session's segments: one per turn (memory policies) or one per trajectory (``full``)."""
        records = [self._turn_record(i, trace) for i, trace in enumerate(state.traces)]
        if not records:
            # why: only reachable when the first prompt is over budget, which raised in BUILD_CONTEXT
            raise RuntimeError("a session ended without any turn")
        final = self._final(state, records)
        groups = [records] if state.full is not None else [[r] for r in records]
        last = len(groups) - 1
        return [
            self._segment(state, i, group, is_last=i == last, final=final if i == last else {})
            for i, group in enumerate(groups)
        ]

    def _outputs(self, state: EpisodeState, segments: list[Segment]) -> list[AgentLoopOutput]:
        """The session's rows, one per segment."""
        outputs = [self._output(state, segment, num_turns=2 * len(state.traces)) for segment in segments]
        final = segments[-1]
        if self.mempo.reward.source == "environment":
            self._environment_reward(state, outputs[-1], final.final_answer, final.format_valid)
        return outputs

    def _turn_record(self, index: int, trace: TurnTrace) -> TurnRecord:
        turn = trace.turn
        mem_span = None
        if "mem" in turn.spans:
            start, end = memory_token_span(self.tokenizer, trace.response_ids, turn.spans["mem"])
            mem_span = (trace.response_start + start, trace.response_start + end)
        observation = trace.observation
        return TurnRecord(
            turn_index=index,
            text=strip_eos(trace.text),
            observation=observation.text if observation is not None else None,
            observation_ok=observation.ok if observation is not None else None,
            observation_error=observation.error if observation is not None else None,
            observation_metrics={k: float(v) for k, v in observation.metrics.items()} if observation else {},
            action=turn.action,
            tool_call={"name": turn.tool_call.name, "arguments": dict(turn.tool_call.arguments)}
            if turn.tool_call is not None
            else None,
            answer=turn.answer,
            memory=turn.mem,
            memory_in_context=trace.memory_in_context,
            memory_truncated=trace.memory_truncated,
            mem_span=mem_span,
            response_span=(trace.response_start, trace.response_start + len(trace.response_ids)),
            prompt_tokens=len(trace.prompt_ids),
            completion_tokens=len(trace.response_ids),
            format_errors=tuple(e.kind for e in turn.errors),
        )

    def _final(self, state: EpisodeState, records: list[TurnRecord]) -> dict[str, Any]:
        """The last segment's verdict: termination, final answer, format validity and the episode's numbers."""
        sizes = [r.prompt_tokens + r.completion_tokens for r in records]
        return dict(
            termination=state.termination,
            # the answer counts only when the episode ended on it
            final_answer=state.traces[-1].turn.answer if state.termination == "answer" else None,
            format_valid=trajectory_format_valid([t.turn for t in state.traces]),
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

    def _output(self, state: EpisodeState, segment: Segment, num_turns: int) -> AgentLoopOutput:
        traces = [state.traces[t.turn_index] for t in segment.turns]
        if state.full is not None:
            prompt_ids = state.full.prompt_ids
            response_ids = state.full.token_ids[len(prompt_ids) :]
            mask, logprobs = state.full.response_mask, state.full.response_logprobs
        else:
            prompt_ids, response_ids = traces[0].prompt_ids, traces[0].response_ids
            mask, logprobs = [1] * len(response_ids), traces[0].logprobs
        if not response_ids:
            # why: verl writes the reward at response index -1 (AgentLoopOutput.as_dict); an empty generation
            # becomes one eos token with mask 0, trained on nothing
            response_ids, mask = [int(self.tokenizer.eos_token_id)], [0]
            logprobs = [0.0] if logprobs is not None else None
        extra_fields = segment.to_extra_fields()
        # verl's staleness tags read the weight versions from each row's extra_fields (agent_loop_tq.py)
        extra_fields["min_global_steps"] = traces[0].server_fields.get("min_global_steps")
        extra_fields["max_global_steps"] = traces[-1].server_fields.get("max_global_steps")
        preempted = [t.num_preempted for t in traces if t.num_preempted >= 0]
        metrics = AgentLoopMetrics(
            generate_sequences=sum(t.generate_s for t in traces),
            tool_calls=sum(t.tool_s for t in traces),
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
