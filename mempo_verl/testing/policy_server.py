"""A stand-in for verl's server manager that runs the real tiny model in process (tests, demos, no vLLM).

It keeps verl 0.9.1's interface exactly: ``await generate(request_id, *, prompt_ids, sampling_params, image_data,
video_data, audio_data, mm_processor_kwargs, **kwargs) -> TokenOutput``, as ``LLMServerClient.generate``
(``verl/workers/rollout/llm_server.py``), including its ``extra_fields`` (``global_steps``, ``min_global_steps``,
``max_global_steps``, ``num_cached_tokens``) and ``stop_reason="length"`` when ``max_tokens`` is reached.

Two modes:

- **scripted**: each call takes the next item of a script (a turn text, or raw token ids) and teacher-forces it:
  the returned ids are the item's ids (a text is tokenized and followed by the eos token), cut at ``max_tokens``,
  and the log-probs are the tiny model's real log-probs of those ids after the prompt. Tests drive valid
  multi-turn episodes with real log-probs this way. A callable script receives the prompt ids and returns the item.
- **sampling**: the tiny model samples with the request's temperature / top-p / top-k up to ``max_tokens`` or eos
  (``mempo-eval``'s local backend functions, ``eval.backends.sample_ids``); log-probs are the model's log-probs of
  the sampled ids (temperature 1, as vLLM reports raw log-probs). Random weights give garbage, which exercises the
  format-error path.

Every request is recorded (``requests``) so that tests can compare the prompt ids a segment stores with the ids
the model was sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from verl.workers.rollout.replica import TokenOutput

from mempo_verl.eval.backends import local_token_output, response_logprobs, sample_ids

ScriptItem = str | Sequence[int]
"""A turn text (tokenized, eos appended) or the exact token ids to return."""


@dataclass(frozen=True)
class GenerateRequest:
    """One recorded ``generate`` call."""

    request_id: str
    prompt_ids: tuple[int, ...]
    sampling_params: dict[str, Any]
    response_ids: tuple[int, ...]
    log_probs: tuple[float, ...] | None


class PolicyServer:
    """In-process ``generate`` over a causal LM; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        mode: Literal["scripted", "sampling"] = "scripted",
        script: Iterable[ScriptItem] | Callable[[list[int]], ScriptItem] = (),
        seed: int = 0,
        global_steps: int = 0,
        default_max_tokens: int = 256,
    ) -> None:
        if mode not in ("scripted", "sampling"):
            raise ValueError(f"mode={mode!r}; allowed: scripted, sampling")
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode
        self._script_fn = script if callable(script) else None
        self._script: deque[ScriptItem] = deque() if callable(script) else deque(script)
        self.seed = seed
        self.global_steps = global_steps
        self.default_max_tokens = default_max_tokens
        self.requests: list[GenerateRequest] = []

    def extend_script(self, items: Iterable[ScriptItem]) -> None:
        """Queue more scripted turns."""
        self._script.extend(items)

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """verl's ``LLMServerClient.generate``: token ids in, ``TokenOutput`` out."""
        prompt = [int(i) for i in prompt_ids]
        params = dict(sampling_params)
        max_tokens = int(params.get("max_tokens", params.get("max_new_tokens", self.default_max_tokens)))
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens} (vLLM rejects it too)")
        if self.mode == "scripted":
            response = self._scripted_ids(prompt)[:max_tokens]
        else:
            sampling = {**params, "max_tokens": max_tokens}
            response = sample_ids(self.model, self.tokenizer, prompt, sampling, self.seed + len(self.requests))
        log_probs = self.logprobs(prompt, response) if params.get("logprobs") else None
        recorded = tuple(log_probs) if log_probs is not None else None
        self.requests.append(GenerateRequest(request_id, tuple(prompt), params, tuple(response), recorded))
        return local_token_output(response, log_probs, max_tokens, self.global_steps)

    def _scripted_ids(self, prompt: list[int]) -> list[int]:
        if self._script_fn is not None:
            item = self._script_fn(prompt)
        elif self._script:
            item = self._script.popleft()
        else:
            raise RuntimeError("PolicyServer: the script is exhausted; queue more turns with extend_script")
        if isinstance(item, str):
            return self.tokenizer.encode(item, add_special_tokens=False) + [int(self.tokenizer.eos_token_id)]
        return [int(i) for i in item]

    def logprobs(self, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
        """log π(response_j | prompt, response_<j) under the model, one float per response token."""
        return response_logprobs(self.model, list(prompt), list(response))
