"""Client for any server speaking Search-R1's `/retrieve` contract (ours, Search-R1's e5 + wiki-18, MEM1's…).

    client = RetrievalClient("http://127.0.0.1:8000/retrieve", timeout_s=30, max_retries=3, backoff_s=0.5)
    client.search(["who invented the tide clock"], topk=3)          # -> [[Hit, Hit, Hit]]
    await client.asearch([...], topk=3)                             # same, with httpx's async client
    client.close()                                                  # or `with RetrievalClient(...) as client:`

Connections are kept alive: one `httpx.Client` per client object (shared by every thread; httpx's clients are
thread-safe) and one `httpx.AsyncClient` per event loop that calls `asearch` (an async client is bound to its loop).
Both are opened on first use, so the object stays cheap to build and picklable (a copy opens its own).

Retried (up to `max_retries` times after the first attempt, sleeping backoff_s * 2**(retry-1), capped): connection
errors, timeouts and other transport errors, and 5xx answers. Not retried: 4xx (the request itself is wrong; the
server's message is in the error) and a 200 whose body breaks the contract. Every failure raises `RetrievalError`
carrying the URL, the attempts made and the last cause.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from mempo_verl.retrieval.base import check_queries
from mempo_verl.retrieval.documents import Hit, normalize_document

logger = logging.getLogger(__name__)

# why no cap on connections: the agent loop runs many sessions at once, and a capped pool would make them queue and
# fail with PoolTimeout, a failure a client per call never had; idle keep-alives stay at httpx's default cap
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)


class RetrievalError(RuntimeError):
    """A retrieval request failed for good.

    Attributes:
        url: the endpoint called.
        attempts: requests made (1 + retries used).
        cause: the last failure: the httpx exception, or a description of the bad HTTP answer.
        status_code: the last HTTP status, None when no answer came (connection error, timeout).
    """

    def __init__(self, url: str, attempts: int, cause: BaseException | str, status_code: int | None = None) -> None:
        self.url = url
        self.attempts = attempts
        self.cause = cause
        self.status_code = status_code
        what = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
        super().__init__(f"retrieval from {url} failed after {attempts} attempt(s): {what}")


class _RetryableStatus(Exception):
    """A 5xx answer: worth another attempt."""

    def __init__(self, status_code: int, body: str) -> None:
        self.status_code = status_code
        super().__init__(f"HTTP {status_code}: {body[:500]}")


def endpoint_url(url: str) -> str:
    """'http://host:8000' -> 'http://host:8000/retrieve'; a URL with a path (e.g. '/retrieve') is kept as is."""
    url = url.rstrip("/")
    return url + "/retrieve" if urlsplit(url).path in ("", "/") else url


def backoff_delay(retry: int, backoff_s: float, max_backoff_s: float) -> float:
    """Seconds to sleep before retry number `retry` (1, 2, …): backoff_s * 2**(retry-1), at most max_backoff_s.

    backoff_delay(1, 0.5, 8) == 0.5, backoff_delay(3, 0.5, 8) == 2.0, backoff_delay(10, 0.5, 8) == 8.
    """
    return min(backoff_s * (2 ** (retry - 1)), max_backoff_s)


def request_payload(queries: list[str], topk: int) -> dict[str, Any]:
    """The Search-R1 request body; scores are always asked for, so every Hit has one."""
    return {"queries": list(queries), "topk": topk, "return_scores": True}


def parse_item(item: Any) -> Hit:
    """A result item -> Hit: {"document": doc, "score": s} (scores on) or a bare document (scores off)."""
    if not isinstance(item, dict):
        raise ValueError(f"result item is a {type(item).__name__}, expected an object")
    if "document" in item:
        score = item.get("score")
        return Hit(normalize_document(item["document"], fallback_id=""), None if score is None else float(score))
    return Hit(normalize_document(item, fallback_id=""), None)


def parse_response(body: Any, num_queries: int) -> list[list[Hit]]:
    """Check `{"result": [[item, ...] per query]}` and turn it into hits; ValueError says what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise ValueError("response has no 'result' list")
    result = body["result"]
    if len(result) != num_queries:
        raise ValueError(f"response has {len(result)} result lists for {num_queries} queries")
    return [[parse_item(item) for item in per_query] for per_query in result]


class RetrievalClient:
    """Sync and async client of a Search-R1 `/retrieve` endpoint, with retries and exponential backoff.

    Attributes:
        url: the endpoint ("http://127.0.0.1:8000/retrieve"; a bare "http://host:port" gets "/retrieve" added).
        timeout_s: per-request timeout for connecting, sending and reading (default 30 s).
        max_retries: extra attempts after the first for retryable failures (default 3).
        backoff_s: first sleep between attempts, doubled each retry (default 0.5 s), capped at max_backoff_s (8 s).

    `close()` (or leaving a `with` block) closes the sync pool and forgets the async ones; `await aclose()` (or
    `async with`) also closes the calling loop's pool cleanly. A call after closing opens a fresh pool.
    """

    backend = "http"

    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"RetrievalClient.timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0 or backoff_s < 0:
            raise ValueError(f"RetrievalClient.max_retries and backoff_s must be >= 0, got {max_retries}, {backoff_s}")
        self.url = endpoint_url(url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._open_pools()

    def _open_pools(self) -> None:
        """Fresh, empty pool slots; the pools themselves are opened on first use."""
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._async_http: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def __getstate__(self) -> dict[str, Any]:
        # why: sockets, locks and loop-bound clients do not pickle (Ray ships the object); the copy opens its own
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_http", "_async_http")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_pools()

    def _sync_client(self) -> httpx.Client:
        """The object's kept-alive sync client, opened on first use."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.timeout_s, limits=_LIMITS)
            return self._http

    def _async_client(self) -> httpx.AsyncClient:
        """The running loop's kept-alive async client, opened on first use; pools of closed loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            # why: a closed loop's connections can never be used again (e.g. one `asyncio.run` per eval batch)
            for dead in [other for other in self._async_http if other.is_closed()]:
                del self._async_http[dead]
            if loop not in self._async_http:
                self._async_http[loop] = httpx.AsyncClient(timeout=self.timeout_s, limits=_LIMITS)
            return self._async_http[loop]

    def close(self) -> None:
        """Close the sync pool; async pools are forgotten (their sockets close with their loop or the collector)."""
        with self._lock:
            http, self._http = self._http, None
            self._async_http.clear()
        if http is not None:
            http.close()

    async def aclose(self) -> None:
        """`close()`, and close the running loop's async pool cleanly (other loops' pools are forgotten)."""
        with self._lock:
            ahttp = self._async_http.pop(asyncio.get_running_loop(), None)
        self.close()
        if ahttp is not None:
            await ahttp.aclose()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RetrievalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RetrievalClient({self.url!r}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"

    def _check_answer(self, response: httpx.Response, attempt: int, num_queries: int) -> list[list[Hit]]:
        """Turn an HTTP answer into hits; 5xx -> _RetryableStatus, 4xx or a bad body -> RetrievalError."""
        if response.status_code >= 500:
            raise _RetryableStatus(response.status_code, response.text)
        if response.status_code >= 400:
            cause = f"HTTP {response.status_code} (not retried): {response.text[:1000]}"
            raise RetrievalError(self.url, attempt, cause, response.status_code)
        try:
            return parse_response(response.json(), num_queries)
        except ValueError as e:  # json.JSONDecodeError is a ValueError too
            raise RetrievalError(self.url, attempt, f"bad response body: {e}", response.status_code) from e

    def _give_up_or_wait(self, attempt: int, cause: Exception) -> float:
        """Raise RetrievalError when retries are spent; else log and return the delay before the next attempt."""
        status = cause.status_code if isinstance(cause, _RetryableStatus) else None
        if attempt > self.max_retries:
            raise RetrievalError(self.url, attempt, cause, status) from cause
        delay = backoff_delay(attempt, self.backoff_s, self.max_backoff_s)
        logger.warning("retrieval attempt %d at %s failed (%s); retrying in %.2fs", attempt, self.url, cause, delay)
        return delay

    def search(self, queries: list[str], topk: int) -> list[list[Hit]]:
        """POST the queries; blocks through retries. Raises RetrievalError when it gives up."""
        check_queries(queries, topk)
        if not queries:
            return []
        payload = request_payload(queries, topk)
        http = self._sync_client()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._check_answer(http.post(self.url, json=payload), attempt, len(queries))
            except (httpx.TransportError, _RetryableStatus) as e:
                time.sleep(self._give_up_or_wait(attempt, e))

    async def asearch(self, queries: list[str], topk: int) -> list[list[Hit]]:
        """`search` with httpx's async client: awaits through retries without blocking the event loop."""
        check_queries(queries, topk)
        if not queries:
            return []
        payload = request_payload(queries, topk)
        http = self._async_client()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await http.post(self.url, json=payload)
                return self._check_answer(response, attempt, len(queries))
            except (httpx.TransportError, _RetryableStatus) as e:
                await asyncio.sleep(self._give_up_or_wait(attempt, e))
