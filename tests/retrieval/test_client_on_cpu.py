"""RetrievalClient retries (mempo_verl/retrieval/client.py) against real local HTTP servers that misbehave on cue."""

import asyncio
import json
import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mempo_verl.retrieval.client import (
    RetrievalClient,
    RetrievalError,
    backoff_delay,
    endpoint_url,
    parse_response,
)
from mempo_verl.testing.scripted_http import ScriptedHTTPServer, closed_port_url

OK_BODY = {"result": [[{"document": {"id": "1", "contents": '"T"\ntext'}, "score": 1.5}]]}


def client(url, **kwargs):
    return RetrievalClient(url, **{"timeout_s": 0.2, "max_retries": 2, "backoff_s": 0.01, **kwargs})


def test_backoff_delay_doubles_and_caps():
    assert [backoff_delay(r, 0.5, 3.0) for r in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]  # 0.5 * 2**(r-1), cap 3


def test_endpoint_url():
    assert endpoint_url("http://h:8000") == "http://h:8000/retrieve"  # bare host: path added
    assert endpoint_url("http://h:8000/") == "http://h:8000/retrieve"
    assert endpoint_url("http://h:8000/retrieve") == "http://h:8000/retrieve"  # Search-R1's search_url: kept
    assert endpoint_url("http://h/api/search") == "http://h/api/search"


def test_parse_response_with_and_without_scores():
    hits = parse_response(OK_BODY, 1)
    assert hits[0][0].score == 1.5 and hits[0][0].title == "T" and hits[0][0].text == "text"
    bare = parse_response({"result": [[{"id": "1", "contents": '"T"\ntext'}]]}, 1)
    assert bare[0][0].score is None and bare[0][0].doc_id == "1"


def test_parse_response_rejects_broken_contract():
    with pytest.raises(ValueError, match="no 'result'"):
        parse_response({"results": []}, 1)
    with pytest.raises(ValueError, match="2 result lists for 1 queries"):
        parse_response({"result": [[], []]}, 1)


def test_500_twice_then_success():
    with ScriptedHTTPServer([(500, 0, {"detail": "boom"}), (500, 0, {"detail": "boom"}), (200, 0, OK_BODY)]) as srv:
        hits = client(srv.url).search(["q"], topk=1)
        assert srv.requests == 3  # two retries used
    assert hits[0][0].doc_id == "1"


def test_always_500_raises_with_attempts():
    with ScriptedHTTPServer([(503, 0, {"detail": "down"})]) as srv:
        with pytest.raises(RetrievalError) as err:
            client(srv.url, max_retries=3).search(["q"], topk=1)
        assert srv.requests == 4  # 1 + max_retries
    assert err.value.attempts == 4 and err.value.status_code == 503
    assert err.value.url == srv.url and "after 4 attempt(s)" in str(err.value) and "HTTP 503" in str(err.value)


def test_nothing_listening_fails_fast():
    start = time.monotonic()
    with pytest.raises(RetrievalError) as err:
        client(closed_port_url()).search(["q"], topk=1)
    assert time.monotonic() - start < 2.0
    assert err.value.attempts == 3 and isinstance(err.value.cause, httpx.ConnectError)


def test_slow_server_times_out_then_errors():
    with ScriptedHTTPServer([(200, 0.6, OK_BODY)]) as srv:
        with pytest.raises(RetrievalError) as err:
            client(srv.url, max_retries=1).search(["q"], topk=1)
        assert srv.requests == 2  # the timeout was retried once
    assert isinstance(err.value.cause, httpx.TimeoutException) and err.value.status_code is None


def test_4xx_is_not_retried():
    with ScriptedHTTPServer([(422, 0, {"message": "body.topk: bad"})]) as srv:
        with pytest.raises(RetrievalError) as err:
            client(srv.url).search(["q"], topk=1)
        assert srv.requests == 1
    assert err.value.attempts == 1 and err.value.status_code == 422 and "body.topk: bad" in str(err.value)


def test_bad_body_is_not_retried():
    with ScriptedHTTPServer([(200, 0, {"nope": 1})]) as srv:
        with pytest.raises(RetrievalError, match="bad response body"):
            client(srv.url).search(["q"], topk=1)
        assert srv.requests == 1


def test_async_retries_then_success_and_failure():
    with ScriptedHTTPServer([(500, 0, {}), (200, 0, OK_BODY)]) as srv:
        hits = asyncio.run(client(srv.url).asearch(["q"], topk=1))
        assert srv.requests == 2 and hits[0][0].score == 1.5
    with ScriptedHTTPServer([(502, 0, {})]) as srv:
        with pytest.raises(RetrievalError) as err:
            asyncio.run(client(srv.url, max_retries=1).asearch(["q"], topk=1))
        assert srv.requests == 2 and err.value.attempts == 2


def test_empty_batch_makes_no_request():
    assert client("http://127.0.0.1:9").search([], topk=3) == []


def test_argument_validation():
    with pytest.raises(ValueError, match="timeout_s"):
        RetrievalClient("http://h", timeout_s=0)


class CountingApp:
    """ASGI app answering OK_BODY and recording each request's client port: one port per TCP connection."""

    def __init__(self):
        self.ports = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.ports.append(scope["client"][1])
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(OK_BODY).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def counting_server():
    pytest.importorskip("uvicorn", reason="the `retrieval` extra (uvicorn) is not installed")
    from mempo_verl.retrieval.server import BackgroundServer

    app = CountingApp()
    with BackgroundServer(app) as server:
        yield server.url, app


def test_many_sync_calls_share_one_connection(counting_server):
    url, app = counting_server
    with client(url) as c:
        answers = [c.search([f"q{i}"], topk=1) for i in range(20)]
    assert all(a[0][0].doc_id == "1" for a in answers)
    assert len(app.ports) == 20 and len(set(app.ports)) == 1  # 20 requests, one TCP connection kept alive


def test_threads_share_one_pool(counting_server):
    url, app = counting_server
    c = client(url)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: c.search([f"q{i}"], topk=1), range(40)))
    c.close()
    assert len(answers) == 40 and all(a[0][0].doc_id == "1" for a in answers)
    assert len(set(app.ports)) <= 4  # at most one connection per thread in flight, reused across the 40 calls


def test_many_async_calls_share_one_connection(counting_server):
    url, app = counting_server

    async def run():
        async with client(url) as c:
            return [await c.asearch([f"q{i}"], topk=1) for i in range(20)]

    assert all(a[0][0].doc_id == "1" for a in asyncio.run(run()))
    assert len(app.ports) == 20 and len(set(app.ports)) == 1


def test_async_calls_from_a_second_loop_get_their_own_pool(counting_server):
    # why: an AsyncClient is bound to its loop; eval runs one `asyncio.run` per batch
    url, app = counting_server
    c = client(url)
    for _ in range(2):
        assert asyncio.run(c.asearch(["q"], topk=1))[0][0].doc_id == "1"
    assert len(set(app.ports)) == 2  # the first loop closed with its connection; the second opened its own


def test_closed_client_reopens_and_pickles(counting_server):
    url, app = counting_server
    c = client(url)
    c.search(["q"], topk=1)
    c.close()
    c.search(["q"], topk=1)  # a fresh pool after close()
    copy = pickle.loads(pickle.dumps(c))  # the pools stay behind; the copy opens its own
    assert copy.url == c.url and copy.search(["q"], topk=1)[0][0].doc_id == "1"
    c.close()
    copy.close()
    assert len(set(app.ports)) == 3
