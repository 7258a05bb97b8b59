"""`janus serve` driven by the official `openai` Python client, on the tiny fixture model.

The tiny model's answers and images are noise, but every code path is the real one: these
tests check the protocol (shapes, streaming, errors), greedy determinism, and agreement
with the `janus` CLI, not the content.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import openai
import pytest

from janus_proc import IMAGES, MODEL, JanusServer, data_url, ensure_binary, png_info, post_stream, sse_events

QUESTION = "What is in this picture?"
IMAGE_SIDE = 384


def image_message(text: str = QUESTION, image: str = "wide.png") -> dict:
    return {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url(IMAGES / image)}},
            {"type": "text", "text": text},
        ],
    }


# ---------------------------------------------------------------------------- chat


def test_models_list(client, model_id):
    model = client.models.list().data[0]
    assert model.id == model_id
    assert model.object == "model"
    assert model.owned_by


def test_models_retrieve(client, model_id):
    """`GET /v1/models/{id}` by the id (which holds slashes) and by the generic name."""
    for name in (model_id, "janus", model_id.rstrip("/").rsplit("/", 1)[-1]):
        model = client.models.retrieve(name)
        assert model.id == model_id and model.object == "model", name


def test_chat_with_image_streamed_equals_non_streamed(client, model_id):
    """Greedy decoding is deterministic: the streamed deltas concatenate to the
    non-streamed message, and both stop for the same reason."""
    kwargs = dict(model=model_id, messages=[image_message()], max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kwargs)
    assert full.object == "chat.completion"
    assert full.model == model_id
    choice = full.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    text = choice.message.content
    assert isinstance(text, str) and text, full
    # The image alone is 576 placeholder tokens.
    assert full.usage.prompt_tokens > 576
    assert 0 < full.usage.completion_tokens <= 12
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert streamed == text
    assert finishes == [choice.finish_reason]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "text came in one piece"


def test_chat_matches_cli(client, model_id):
    """The server's greedy answer equals `janus understand` on the same image and question
    (one image in front of the text, the reference's template and system prompt)."""
    out = subprocess.run(
        [
            str(ensure_binary()),
            "understand",
            "--model",
            str(MODEL),
            "--image",
            str(IMAGES / "wide.png"),
            "--prompt",
            QUESTION,
            "--max-new-tokens",
            "8",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    cli = json.loads(out.stdout)
    resp = client.chat.completions.create(model=model_id, messages=[image_message()], max_tokens=8, temperature=0)
    assert resp.choices[0].message.content == cli["text"]
    assert resp.usage.prompt_tokens == cli["prompt_tokens"]


def test_chat_multi_turn_text_only(client, model_id):
    first = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello there"}], max_tokens=6, temperature=0
    )
    answer = first.choices[0].message.content
    second = client.chat.completions.create(
        model=model_id,
        messages=[
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And again?"},
        ],
        max_tokens=6,
        temperature=0,
    )
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert second.choices[0].finish_reason in ("stop", "length")


def test_chat_sampling_with_seed_is_repeatable(client, model_id):
    kwargs = dict(
        model=model_id,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=10,
        temperature=1.0,
        seed=123,
    )
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


# ---------------------------------------------------------------------------- images


def decode_png(b64: str) -> tuple[int, int, bytes]:
    return png_info(base64.b64decode(b64))


def test_image_generation_b64_json(client, model_id):
    resp = client.images.generate(
        model=model_id,
        prompt="A red apple on a wooden table.",
        n=2,
        size="384x384",
        response_format="b64_json",
        extra_body={"seed": 7, "cfg_weight": 5.0, "temperature": 1.0},
    )
    assert len(resp.data) == 2
    assert resp.model_extra["seed"] == 7
    pixels = []
    for item in resp.data:
        w, h, raw = decode_png(item.b64_json)
        assert (w, h) == (IMAGE_SIDE, IMAGE_SIDE)
        pixels.append(raw)
    assert pixels[0] != pixels[1], "the two images of one request should differ"


def test_image_generation_reports_the_seed_it_chose(client, model_id):
    """Without a seed the server picks one and reports it (extension field `seed`); asking
    with that seed draws the same image again."""
    kwargs = dict(model=model_id, prompt="A paper boat", n=1, response_format="b64_json")
    first = client.images.generate(**kwargs)
    seed = first.model_extra["seed"]
    assert isinstance(seed, int)
    again = client.images.generate(**kwargs, extra_body={"seed": seed})
    assert again.model_extra["seed"] == seed
    assert again.data[0].b64_json == first.data[0].b64_json


def test_image_urls_behind_a_tls_proxy(client, model_id):
    """A reverse proxy's X-Forwarded-Proto / X-Forwarded-Host make the image URLs point
    at the proxy, not at the loopback address it forwards to."""
    resp = client.images.generate(
        model=model_id,
        prompt="A lighthouse",
        response_format="url",
        extra_headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "janus.example.org"},
    )
    parts = urlsplit(resp.data[0].url)
    assert (parts.scheme, parts.netloc) == ("https", "janus.example.org"), resp.data[0].url
    assert parts.path.startswith("/v1/files/images/")


def test_image_generation_url_matches_b64_for_same_seed(client, model_id):
    """response_format=url gives a fetchable PNG, and the same seed and settings give the
    same pixels as b64_json."""
    kwargs = dict(
        model=model_id,
        prompt="A lighthouse at dusk",
        n=1,
        size="384x384",
        extra_body={"seed": 11, "cfg_weight": 3.0, "temperature": 1.0},
    )
    by_url = client.images.generate(response_format="url", **kwargs)
    url = by_url.data[0].url
    assert url and by_url.data[0].b64_json is None
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1", url
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert r.headers.get_content_type() == "image/png"
        fetched = r.read()
    by_b64 = client.images.generate(response_format="b64_json", **kwargs)
    assert png_info(fetched)[:2] == (IMAGE_SIDE, IMAGE_SIDE)
    assert png_info(fetched)[2] == decode_png(by_b64.data[0].b64_json)[2]


def test_image_generation_stream_extension(server, model_id):
    """`"stream": true` on /v1/images/generations: progress events up to 576/576 (and any
    partial images: on the tiny model they would come after the result, so the server skips
    them once it has timed its decoder), then the result, then [DONE]."""
    body = {"model": model_id, "prompt": "A blue bird", "n": 1, "size": "384x384", "seed": 3}
    conn, resp = post_stream(
        server.url, "/v1/images/generations", {**body, "stream": True, "partial_images": 2}
    )
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        steps, results, previews = [], [], 0
        for payload in sse_events(resp):
            event = json.loads(payload)
            if event["type"] == "progress":
                assert event["total"] == 576
                steps.append(event["step"])
            elif event["type"] == "partial_image":
                assert event["partial_image_index"] == previews and event["step"] < 576
                assert decode_png(event["data"][0]["b64_json"])[:2] == (IMAGE_SIDE, IMAGE_SIDE)
                previews += 1
            elif event["type"] == "result":
                results.append(event)
            else:
                raise AssertionError(f"unknown event {event}")
        assert steps and steps == sorted(steps) and steps[-1] == 576, steps[-5:]
        assert len(steps) > 1, "progress came in one event"
        assert len(results) == 1 and results[0]["seed"] == 3
        assert len(results[0]["data"]) == 1
        assert decode_png(results[0]["data"][0]["b64_json"])[:2] == (IMAGE_SIDE, IMAGE_SIDE)
        assert previews <= 2
    finally:
        conn.close()


# ---------------------------------------------------------------------------- errors


def assert_openai_error(exc: openai.APIStatusError, status: int, kind: str) -> dict:
    """The error has OpenAI's body {"error": {"message", "type", "param", "code"}}."""
    assert exc.status_code == status
    body = exc.response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"]
    # The client exposes the inner object as .body and its fields as attributes.
    assert exc.body == err
    assert exc.type == kind
    return err


def test_bad_request_size(client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model=model_id, prompt="x", size="512x512")
    err = assert_openai_error(e.value, 400, "invalid_request_error")
    assert err["param"] == "size"


def test_bad_request_n(client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model=model_id, prompt="x", n=0)
    assert assert_openai_error(e.value, 400, "invalid_request_error")["param"] == "n"


def test_bad_request_image(client, model_id):
    """A data: URL that is not an image."""
    bad = {
        "role": "user",
        "content": [
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()},
            },
            {"type": "text", "text": "?"},
        ],
    }
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=[bad], max_tokens=4)
    assert_openai_error(e.value, 400, "invalid_request_error")


def test_bad_request_empty_messages(client, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=[], max_tokens=4)
    assert_openai_error(e.value, 400, "invalid_request_error")


def test_not_found(client):
    """An unknown model id: 404 with OpenAI's body for a model it does not have."""
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert assert_openai_error(e.value, 404, "invalid_request_error")["code"] == "model_not_found"


def test_model_not_served(client):
    """A request naming another model is refused (404 `model_not_found`, param `model`)
    rather than answered by this one."""
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    err = assert_openai_error(e.value, 404, "invalid_request_error")
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError) as e:
        client.images.generate(model="dall-e-3", prompt="x")
    assert assert_openai_error(e.value, 404, "invalid_request_error")["code"] == "model_not_found"
    # The generic name is accepted.
    resp = client.chat.completions.create(
        model="janus", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
    )
    assert resp.choices[0].finish_reason in ("stop", "length")


def test_not_found_route(server):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.url}/v1/no-such-route", timeout=10)
    assert e.value.code == 404
    assert json.loads(e.value.read())["error"]["type"] == "not_found_error"


def test_authentication():
    """With --api-key, the API wants `Authorization: Bearer KEY`; the page itself and
    /health stay open so a browser can load the page and then enter the key."""
    with JanusServer("--api-key", "sekret") as srv:
        wrong = openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
        assert_openai_error(e.value, 401, "authentication_error")
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])

        right = openai.OpenAI(base_url=srv.base_url, api_key="sekret", max_retries=0)
        model = right.models.list().data[0].id
        resp = right.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
        )
        assert resp.choices[0].message.content is not None

        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{srv.url}/v1/models", timeout=10)
        assert e.value.code == 401
        for path in ("/", "/app.js", "/health"):
            with urllib.request.urlopen(f"{srv.url}{path}", timeout=10) as r:
                assert r.status == 200, path
        assert srv.stop() == 0


def queue_depth(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("janus_queue_depth "):
                return float(line.split()[1])
    raise AssertionError("no janus_queue_depth in /metrics")


def test_rate_limit_when_queue_full():
    """--max-queue 1: one image job running and one waiting fill the queue, so a third
    request gets 429 with OpenAI's rate-limit error. Closing the streams cancels the jobs."""
    with JanusServer("--max-queue", "1") as srv:
        model = json.load(urllib.request.urlopen(f"{srv.url}/v1/models", timeout=10))["data"][0]["id"]
        body = {"model": model, "prompt": "slow", "n": 2, "size": "384x384", "seed": 1, "stream": True}
        running_conn, running = post_stream(srv.url, "/v1/images/generations", body)
        assert running.status == 200
        first = json.loads(next(sse_events(running)))  # the job is on the model now
        assert first["type"] in ("progress", "preview")

        # The second request waits in the queue; its response may only start when it runs.
        waiting: dict = {}

        def send_waiting() -> None:
            waiting["conn"], waiting["resp"] = post_stream(srv.url, "/v1/images/generations", body)

        t = threading.Thread(target=send_waiting, daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while queue_depth(srv.url) < 1:
            assert time.monotonic() < deadline, "the second request never reached the queue"
            time.sleep(0.05)

        c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            c.images.generate(model=model, prompt="one too many", n=1)
        err = assert_openai_error(e.value, 429, "rate_limit_error")
        assert err["code"] == "queue_full"

        running_conn.close()
        t.join(30)
        if "conn" in waiting:
            waiting["conn"].close()
        # Cancelled jobs free the model: a small request goes through.
        deadline = time.monotonic() + 60
        while True:
            try:
                c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
                break
            except openai.RateLimitError:
                assert time.monotonic() < deadline, "still rate-limited a minute after the streams closed"
                time.sleep(0.2)
        assert srv.stop() == 0


# ---------------------------------------------------------------------------- plain routes


def test_health_metrics_and_page(server, client, model_id):
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:
        assert r.headers.get_content_type() == "text/plain"
        text = r.read().decode()
    assert "# TYPE janus_http_requests_total counter" in text
    assert "janus_queue_depth" in text
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as r:
        assert r.headers.get_content_type() == "text/html"
        html = r.read().decode()
    assert "/app.js" in html and "/style.css" in html
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as r:
            assert r.headers.get_content_type() == kind, path
