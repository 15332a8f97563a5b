"""Where the evaluated model generates: an OpenAI-compatible completions server, or a local transformers model.

Both give the agent loop verl's server-manager interface through ``EpisodeServer`` (one per episode), so the loop
runs unchanged: ``await generate(request_id, *, prompt_ids, sampling_params, **kw) -> TokenOutput``. Turn t of an
episode is generated with the seed ``episode_seed + t``, so that sampled tokens depend on the example and the turn
only, never on the order in which concurrent episodes reach the model (a resumed run samples the same tokens).

``openai``   POST ``{url}/v1/completions`` with the prompt as token ids (``vllm serve``, SGLang). The generated ids
             are read from ``choices[0].token_ids`` (vLLM ``return_token_ids``), else from
             ``logprobs.tokens`` written ``token_id:N`` (vLLM ``return_tokens_as_token_ids``), else the text is
             re-tokenized (counted as ``retokenized`` in the example's backend stats). Bounded in-flight requests,
             a time limit per request, retries with exponential backoff on connection errors, timeouts, 429 and 5xx.
             Every failure becomes a ``BackendError`` with a kind, which the runner records for the example.
``local``    a transformers causal LM in this process (``sample_ids``, ``response_logprobs``; the tests'
             ``PolicyServer`` samples with the same two functions), on CPU or any torch device.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, get_args

from verl.workers.rollout.replica import TokenOutput

from mempo_verl.eval.config import BackendConfig

logger = logging.getLogger(__name__)

BackendErrorKind = Literal["unreachable", "timeout", "http_status", "bad_response"]
"""Why a request failed: no connection; no answer in time; an HTTP error status; an answer that is not a
completion (not JSON, no choices, ids that are not integers, ...)."""

BACKEND_ERROR_KINDS: tuple[BackendErrorKind, ...] = get_args(BackendErrorKind)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth asking again (overload, restarts); other errors are the request's or the server's fault."""

TOKEN_ID_PREFIX = "token_id:"
"""vLLM's ``return_tokens_as_token_ids`` spelling of a generated token in ``logprobs.tokens``."""


class BackendError(Exception):
    """A request that produced no usable completion; ``kind`` is one of ``BACKEND_ERROR_KINDS``."""

    def __init__(self, kind: BackendErrorKind, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        """True for failures that asking again may cure (no connection, timeout, HTTP 408/429/5xx)."""


class Backend(Protocol):
    """What the runner needs from a backend."""

    tokenizer: Any
    """The model's tokenizer (prompt ids and every token count)."""
    hf_model_type: str | None
    """The model's Hugging Face ``model_type`` (verl's Continuous Token builder)."""

    async def complete(self, prompt_ids: list[int], sampling_params: Mapping[str, Any], seed: int) -> TokenOutput:
        """Generate one turn from ``prompt_ids``."""

    async def aclose(self) -> None:
        """Release connections."""


class EpisodeServer:
    """verl's server-manager interface for one episode: turn t is generated with ``seed + t``."""

    def __init__(self, backend: Backend, seed: int) -> None:
        self.backend = backend
        self.seed = seed
        self.turns = 0
        """Requests made so far (the turn that failed, when one does)."""
        self.stats: dict[str, int] = {"requests": 0, "retokenized": 0}
        """``requests``: turns the backend answered; ``retokenized``: answers whose ids were rebuilt from text."""

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
        seed = self.seed + self.turns
        self.turns += 1
        output = await self.backend.complete([int(i) for i in prompt_ids], sampling_params, seed)
        self.stats["requests"] += 1
        self.stats["retokenized"] += int(output.extra_fields.get("token_ids_source") == "text")
        return output


# ----------------------------------------------------------------------------------------------- openai


def completions_url(url: str) -> str:
    """``http://h:p`` / ``http://h:p/v1`` / ``http://h:p/v1/completions`` -> the completions endpoint."""
    url = url.rstrip("/")
    if url.endswith("/v1/completions"):
        return url
    return f"{url}/completions" if url.endswith("/v1") else f"{url}/v1/completions"


def completion_request(model: str, prompt_ids: list[int], params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The JSON body of one turn: token-id prompt, the loop's sampling parameters, ids back (vLLM extensions)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "max_tokens": int(params["max_tokens"]),
        "temperature": float(params.get("temperature", 1.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "seed": int(seed),
        "n": 1,
        "stream": False,
        # one log-prob per token: the channel that carries the ids on servers without return_token_ids
        "logprobs": 1,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        # special tokens kept: a re-tokenized answer then holds its end-of-turn token as the loop expects
        "skip_special_tokens": False,
    }
    top_k = int(params.get("top_k", -1))
    if top_k > 0:
        body["top_k"] = top_k
    return body


def _int_list(values: Any) -> list[int] | None:
    if isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return list(values)
    return None


def _ids_from_logprob_tokens(logprobs: Any) -> list[int] | None:
    tokens = logprobs.get("tokens") if isinstance(logprobs, Mapping) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.startswith(TOKEN_ID_PREFIX) for t in tokens):
        return None
    try:
        return [int(t[len(TOKEN_ID_PREFIX) :]) for t in tokens]
    except ValueError:
        return None


def parse_completion(payload: bytes | str, encode: Callable[[str], list[int]]) -> TokenOutput:
    """A ``/v1/completions`` answer -> ``TokenOutput``; anything else raises ``BackendError("bad_response")``.

    Args:
        payload: the response body.
        encode: text -> token ids with the model's tokenizer (the fallback when the server gives no ids).
    """

    def bad(why: str) -> BackendError:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        return BackendError("bad_response", f"{why}: {text[:200]!r}")

    try:
        data = json.loads(payload)
    except ValueError:
        raise bad("the answer is not JSON") from None
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise bad("the answer has no choices")
    choice = choices[0]
    logprobs = choice.get("logprobs")
    # 1. the ids, from the most exact source the server offers
    ids, source = _int_list(choice.get("token_ids")), "token_ids"
    if ids is None:
        ids, source = _ids_from_logprob_tokens(logprobs), "logprob_tokens"
    if ids is None:
        if not isinstance(choice.get("text"), str):
            raise bad("the choice has neither token ids nor text")
        ids, source = encode(choice["text"]), "text"
    # 2. log-probs only when they line up with the ids
    values = logprobs.get("token_logprobs") if isinstance(logprobs, Mapping) else None
    aligned = isinstance(values, list) and len(values) == len(ids)
    log_probs = [float(v) if isinstance(v, (int, float)) else 0.0 for v in values] if aligned else None
    stop = "length" if choice.get("finish_reason") == "length" else "completed"
    return TokenOutput(
        token_ids=ids, log_probs=log_probs, stop_reason=stop, num_preempted=0, extra_fields={"token_ids_source": source}
    )


class OpenAICompletionsBackend:
    """``openai``: any server with an OpenAI-compatible ``/v1/completions`` endpoint (see the module docstring)."""

    def __init__(self, config: BackendConfig, tokenizer: Any, hf_model_type: str | None = None) -> None:
        import httpx

        self.config = config
        self.tokenizer = tokenizer
        self.hf_model_type = hf_model_type
        self.url = completions_url(config.url or "")
        self._httpx = httpx
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    async def complete(self, prompt_ids: list[int], sampling_params: Mapping[str, Any], seed: int) -> TokenOutput:
        """One turn, retried on transient failures; raises ``BackendError`` when no usable answer came back."""
        if self._client is None:
            # built inside the running event loop, which the client and the semaphore belong to
            limits = self._httpx.Limits(max_connections=self.config.concurrency)
            self._client = self._httpx.AsyncClient(timeout=self.config.timeout_s, limits=limits)
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
        body = completion_request(self.config.model, prompt_ids, sampling_params, seed)
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                async with self._semaphore:
                    return await self._attempt(body)
            except BackendError as exc:
                if not exc.retryable:
                    raise
                error = exc
            if attempt + 1 < attempts:
                delay = self.config.backoff_s * 2**attempt
                logger.info("request failed (%s: %s); retry %d in %.1f s", error.kind, error, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise BackendError(error.kind, f"{error} (gave up after {attempts} attempts)")

    async def _attempt(self, body: dict[str, Any]) -> TokenOutput:
        """One POST -> the completion; raises ``BackendError`` (``retryable`` when asking again may help)."""
        httpx = self._httpx
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            limit = self.config.timeout_s
            raise BackendError(
                "timeout", f"{self.url}: no answer within {limit:g} s ({exc!r})", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise BackendError("unreachable", f"{self.url}: {exc!r}", retryable=True) from None
        if response.status_code >= 400:
            message = f"{self.url}: HTTP {response.status_code}: {response.text[:200]!r}"
            raise BackendError("http_status", message, retryable=response.status_code in RETRY_STATUSES)
        return parse_completion(response.content, self._encode)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# ----------------------------------------------------------------------------------------------- local


class _OnDevice:
    """Hands ``sample_ids`` / ``response_logprobs`` (which build their tensors on the CPU) a model on another device."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.config = model.config
        self.device = model.device

    def generate(self, *, input_ids: Any, attention_mask: Any, **kwargs: Any) -> Any:
        ids = input_ids.to(self.device)
        return self._model.generate(input_ids=ids, attention_mask=attention_mask.to(self.device), **kwargs).cpu()

    def __call__(self, *, input_ids: Any, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(logits=self._model(input_ids=input_ids.to(self.device), **kwargs).logits.cpu())


def sample_ids(model: Any, tokenizer: Any, prompt: list[int], params: Mapping[str, Any], seed: int) -> list[int]:
    """The ids ``model`` generates after ``prompt`` with vLLM-style sampling ``params`` (``temperature``, 0 = greedy;
    ``top_p``; ``top_k``, -1 = off; ``max_tokens``), up to its limit or the tokenizer's eos; torch seeded with
    ``seed`` first, so one seed gives one sample."""
    import torch

    temperature = float(params.get("temperature", 1.0))
    max_tokens = int(params["max_tokens"])
    kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "eos_token_id": tokenizer.eos_token_id}
    if temperature > 0:
        top_k = int(params.get("top_k", -1))
        kwargs.update(
            do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)), top_k=max(top_k, 0)
        )
    else:
        kwargs.update(do_sample=False)
    torch.manual_seed(seed)
    input_ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )
    return [int(i) for i in output[0, len(prompt) :].tolist()]


def response_logprobs(model: Any, prompt: list[int], response: list[int]) -> list[float]:
    """log π(response_j | prompt, response_<j) under ``model``, one float per response token (of the untempered
    logits, as vLLM reports them); an id outside the model's vocabulary gets 0.0."""
    import torch

    if not response:
        return []
    vocab = int(model.config.vocab_size)
    ids = torch.tensor(list(prompt) + list(response), dtype=torch.long)
    in_vocab = (ids >= 0) & (ids < vocab)
    with torch.no_grad():
        # only the R + 1 last positions' logits: the full (P + R, V) matrix is ~0.3 GB for a 500-token prompt
        out = model(input_ids=torch.where(in_vocab, ids, 0)[None], logits_to_keep=len(response) + 1)
    logits = out.logits[0, :-1]  # (R, V): position P - 1 + j predicts response token j
    logp = torch.log_softmax(logits.float(), dim=-1)
    targets = ids[len(prompt) :]  # (R,)
    picked = logp.gather(-1, torch.where(in_vocab[len(prompt) :], targets, 0)[:, None]).squeeze(-1)
    return torch.where(in_vocab[len(prompt) :], picked, 0.0).tolist()


def local_token_output(
    response: list[int], log_probs: list[float] | None, max_tokens: int, global_steps: int = 0
) -> TokenOutput:
    """``response`` as verl's ``LLMServerClient.generate`` returns it (``verl/workers/rollout/llm_server.py``):
    ``stop_reason`` ``length`` when the budget is used up, else ``completed``; its ``extra_fields``."""
    return TokenOutput(
        token_ids=response,
        log_probs=log_probs,
        stop_reason="length" if len(response) >= max_tokens else "completed",
        num_preempted=0,
        extra_fields={
            "global_steps": global_steps,
            "min_global_steps": global_steps,
            "max_global_steps": global_steps,
            "num_cached_tokens": None,
        },
    )


class LocalModelBackend:
    """``local``: a transformers causal LM in this process (``sample_ids``, ``response_logprobs``).

    One generation at a time: the model is one in-process object and torch's seed is global, so each request
    seeds and samples without yielding to another episode (use a server for throughput).
    """

    def __init__(
        self, model: Any, tokenizer: Any, hf_model_type: str | None = None, threads: int | None = None
    ) -> None:
        self.model = model if str(model.device) == "cpu" else _OnDevice(model)
        self.tokenizer = tokenizer
        self.hf_model_type = hf_model_type
        self.threads = threads

    @classmethod
    def from_pretrained(cls, config: BackendConfig) -> LocalModelBackend:
        """Load ``config.model`` (and its tokenizer) onto ``config.device``, in eval mode."""
        from transformers import AutoModelForCausalLM, GenerationConfig

        tokenizer = load_tokenizer(config.tokenizer_path)
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=config.dtype).to(config.device).eval()
        # why: a checkpoint's generation_config (e.g. Qwen's repetition_penalty 1.05, top_k 20) would silently add
        # to the eval's sampling settings; the run samples with exactly the settings its summary reports
        model.generation_config = GenerationConfig(
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        return cls(model, tokenizer, getattr(model.config, "model_type", None), config.threads)

    async def complete(self, prompt_ids: list[int], sampling_params: Mapping[str, Any], seed: int) -> TokenOutput:
        import torch

        params = dict(sampling_params)
        threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            response = sample_ids(self.model, self.tokenizer, [int(i) for i in prompt_ids], params, seed)
            log_probs = response_logprobs(self.model, prompt_ids, response) if params.get("logprobs") else None
        finally:
            torch.set_num_threads(threads)
        return local_token_output(response, log_probs, int(params["max_tokens"]))

    async def aclose(self) -> None:
        return None


def load_tokenizer(path: str) -> Any:
    """The model's tokenizer (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def model_type(path: str) -> str | None:
    """The Hugging Face ``model_type`` of a model folder or name; None when it has no readable config."""
    try:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(path), "model_type", None)
    except (OSError, ValueError):
        return None


def make_backend(config: BackendConfig) -> Backend:
    """The backend ``config.kind`` names (one dict, STYLE §8)."""
    builders: dict[str, Callable[[BackendConfig], Backend]] = {
        "local": LocalModelBackend.from_pretrained,
        "openai": lambda c: OpenAICompletionsBackend(c, load_tokenizer(c.tokenizer_path), model_type(c.tokenizer_path)),
    }
    return builders[config.kind](config)
