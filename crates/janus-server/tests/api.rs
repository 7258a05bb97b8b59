//! The HTTP API end to end, in process: requests go through the real router, queue and
//! model thread on the tiny fixture model (no port is opened).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use janus::engine::{GenerateParams, SamplingParams};
use janus::pipeline::UnderstandOptions;
use janus::processor::{load_image, Message};
use janus_server::ServerOptions;
use serde_json::{json, Value};
use support::*;
use tower::ServiceExt;

const PROMPT: &str = "What is in this picture?";

fn chat_body(max_tokens: u64) -> Value {
    json!({
        "model": "tiny-pro",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url("wide.png")}},
            {"type": "text", "text": PROMPT},
        ]}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// What the library answers for the same conversation, greedy.
fn reference_answer(max_new_tokens: usize) -> janus::pipeline::UnderstandResult {
    let img = load_image(fixtures().join("images/wide.png")).unwrap();
    let msgs = [Message::user(PROMPT).with_images([img])];
    let opts = UnderstandOptions {
        sampling: SamplingParams::default(),
        max_new_tokens,
        ..Default::default()
    };
    pipe()
        .understand(&msgs, &opts, |_| std::ops::ControlFlow::Continue(()))
        .unwrap()
}

#[tokio::test]
async fn chat_with_an_image_equals_the_library() {
    let (_server, router) = server();
    let want = reference_answer(8);
    let (status, v) = send_json(&router, post("/v1/chat/completions", &chat_body(8))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny-pro");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], want.text.as_str());
    assert_eq!(choice["finish_reason"], want.finish.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], want.token_ids.len());
    assert_eq!(
        v["usage"]["total_tokens"],
        want.prompt_tokens + want.token_ids.len()
    );
    // The prompt counts the image's 576 tokens.
    assert!(want.prompt_tokens > 576);
}

#[tokio::test]
async fn chat_streams_the_same_text() {
    let (_server, router) = server();
    let want = reference_answer(8);
    let mut body = chat_body(8);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, bytes) = send(&router, post("/v1/chat/completions", &body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let data = sse_data(&bytes);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want.text);
    // Then the finish reason, then the usage chunk with no choices.
    let n = chunks.len();
    assert_eq!(
        chunks[n - 2]["choices"][0]["finish_reason"],
        want.finish.as_str()
    );
    assert_eq!(chunks[n - 2]["usage"], Value::Null);
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["completion_tokens"],
        want.token_ids.len()
    );
    assert_eq!(chunks[n - 1]["usage"]["prompt_tokens"], want.prompt_tokens);

    // Without include_usage there is no usage at all.
    body["stream_options"] = json!(null);
    let (_, _, bytes) = send(&router, post("/v1/chat/completions", &body)).await;
    let data = sse_data(&bytes);
    assert!(data.iter().all(|d| !d.contains("usage")));
}

#[tokio::test]
async fn stop_sequences_end_the_answer() {
    let (_server, router) = server();
    let full = reference_answer(24).text;
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 4, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut body = chat_body(24);
        body["stop"] = json!([stop, "never-in-the-answer"]);
        body["stream"] = json!(stream);
        let (status, _, bytes) = send(&router, post("/v1/chat/completions", &body)).await;
        assert_eq!(status, StatusCode::OK);
        let (text, finish) = if stream {
            let chunks: Vec<Value> = sse_data(&bytes)
                .iter()
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let text: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            let finish = chunks
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(String::from));
            (text, finish.unwrap())
        } else {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            (
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["choices"][0]["finish_reason"].as_str().unwrap().into(),
            )
        };
        assert_eq!(text, want, "stream {stream}");
        assert_eq!(finish, "stop");
    }
}

#[tokio::test]
async fn system_messages_and_text_only_chats() {
    let (_server, router) = server();
    let body = json!({
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [{"type": "text", "text": "Who are you?"}]},
        ],
        "max_completion_tokens": 5,
    });
    let (status, v) = send_json(&router, post("/v1/chat/completions", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let msgs = [
        Message::user("Hello"),
        Message::assistant("Hi."),
        Message::user("Who are you?"),
    ];
    let opts = UnderstandOptions {
        max_new_tokens: 5,
        system: Some("Answer briefly.".into()),
        ..Default::default()
    };
    let want = pipe()
        .understand(&msgs, &opts, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], want.text.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);
}

/// Greedy images as `Pipeline::generate` draws them for one prompt alone.
fn reference_images(prompt: &str, n: usize, seed: u64) -> Vec<image::RgbImage> {
    let params = GenerateParams {
        parallel: n,
        cfg_weight: 5.0,
        temperature: 0.0,
        seed,
        speculative: Default::default(),
    };
    pipe()
        .generate(prompt, &params, |_, _| std::ops::ControlFlow::Continue(()))
        .unwrap()
        .images
}

/// The response reports the seed it was drawn with: the request's, or the random one
/// chosen, which draws the same images again.
#[tokio::test]
async fn images_report_their_seed() {
    let (_server, router) = server();
    let (status, v) = send_json(
        &router,
        post("/v1/images/generations", &image_body("a seed", 1)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["seed"], 3);
    let body = json!({"prompt": "a seed", "temperature": 1});
    let (status, first) = send_json(&router, post("/v1/images/generations", &body)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let seed = first["seed"].as_u64().expect("a seed in the response");
    let mut again = body.clone();
    again["seed"] = json!(seed);
    let (_, second) = send_json(&router, post("/v1/images/generations", &again)).await;
    assert_eq!(second["seed"], seed);
    assert_eq!(first["data"][0]["b64_json"], second["data"][0]["b64_json"]);
    // The streamed result carries it too.
    let mut streamed = again.clone();
    streamed["stream"] = json!(true);
    let (_, _, bytes) = send(&router, post("/v1/images/generations", &streamed)).await;
    let result: Value = sse_data(&bytes)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["type"] == "result")
        .unwrap();
    assert_eq!(result["seed"], seed);
    assert_eq!(result["data"][0]["b64_json"], first["data"][0]["b64_json"]);
}

/// `speculative` and `accept` in a request: exact speculation returns the plain images'
/// bytes, sjd runs, and the metrics count the passes and drafts.
#[tokio::test]
async fn speculative_requests_return_the_plain_images() {
    let (_server, router) = server();
    let body = json!({"prompt": "a fast cat", "temperature": 1, "seed": 21, "n": 2});
    let (status, plain) = send_json(&router, post("/v1/images/generations", &body)).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    for window in [json!(4), json!("16"), json!("auto")] {
        let mut spec = body.clone();
        spec["speculative"] = window.clone();
        spec["accept"] = json!("exact");
        let (status, v) = send_json(&router, post("/v1/images/generations", &spec)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"], plain["data"], "window {window}");
    }
    let mut sjd = body.clone();
    sjd["speculative"] = json!(8);
    sjd["accept"] = json!("sjd");
    let (status, v) = send_json(&router, post("/v1/images/generations", &sjd)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, _, bytes) = send(&router, get("/metrics")).await;
    let text = String::from_utf8_lossy(&bytes);
    let counter = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // The plain request alone took 576 passes; the speculative ones fewer each.
    let passes = counter("janus_image_passes_total");
    assert!(passes > 576 && passes < 5 * 576, "{passes}");
    assert!(
        counter("janus_image_drafts_checked_total") > counter("janus_image_drafts_accepted_total")
    );
}

fn image_body(prompt: &str, n: usize) -> Value {
    json!({"prompt": prompt, "n": n, "size": "384x384", "seed": 3, "temperature": 0, "cfg_weight": 5})
}

#[tokio::test]
async fn images_as_base64_equal_the_library() {
    let (_server, router) = server();
    let prompt = "A red apple on a wooden table.";
    let (status, v) = send_json(
        &router,
        post("/v1/images/generations", &image_body(prompt, 2)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let want = reference_images(prompt, 2, 3);
    for (d, w) in data.iter().zip(&want) {
        assert!(d.get("url").is_none());
        let got = decode_b64_png(d["b64_json"].as_str().unwrap());
        assert_eq!(got.dimensions(), (384, 384));
        assert!(got == *w, "image differs from Pipeline::generate");
    }
    // The PNG records how it was made, as the CLI's do.
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        data[1]["b64_json"].as_str().unwrap(),
    )
    .unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let text: Vec<(String, String)> = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for (k, v) in [
        ("janus:prompt", prompt),
        ("janus:seed", "3"),
        ("janus:index", "1"),
        ("janus:parallel", "2"),
        ("janus:model", "tiny-pro"),
    ] {
        assert!(text.contains(&(k.into(), v.into())), "{k} in {text:?}");
    }
}

#[tokio::test]
async fn images_by_url() {
    let (server, router) = server();
    let mut body = image_body("a blue bird", 1);
    body["response_format"] = json!("url");
    let req = Request::post("/v1/images/generations")
        .header(header::HOST, "janus.test:8080")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, v) = send_json(&router, req).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let url = v["data"][0]["url"].as_str().unwrap();
    let path = url.strip_prefix("http://janus.test:8080").unwrap();
    assert!(path.starts_with("/v1/files/images/"), "{url}");
    assert!(v["data"][0].get("b64_json").is_none());
    let (status, headers, bytes) = send(&router, get(path)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    let got = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert!(got == reference_images("a blue bird", 1, 3)[0]);
    // The file lives in the server's own directory, which goes when the server stops.
    let dir = server.image_dir().to_path_buf();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let (status, v) = send_json(&router, get("/v1/files/images/0123.png")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    server.stop();
    assert!(!dir.exists());
}

/// The events of a streamed image request, `[DONE]` checked and left off.
async fn image_events(router: &axum::Router, body: &Value) -> Vec<Value> {
    let (status, _, bytes) = send(router, post("/v1/images/generations", body)).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&bytes);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `partial_images` with `stream`: while sampling is slow, a preview decoded from the codes
/// drawn so far (the rest filled in from the rows above) arrives before the result.
#[tokio::test]
async fn streamed_partial_images() {
    // 5 ms a step: sampling takes seconds, far longer than a preview's decode.
    let model = TestModel {
        delay: Duration::from_millis(5),
        ..TestModel::plain()
    };
    let (_server, router) = server_with(model, ServerOptions::new("tiny-pro"));
    let prompt = "a mountain lake";
    let mut body = image_body(prompt, 2);
    body["stream"] = json!(true);
    body["partial_images"] = json!(1);
    let events = image_events(&router, &body).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let first = kinds.iter().position(|k| *k == "partial_image");
    let result = kinds.iter().position(|k| *k == "result");
    assert!(first.is_some() && first < result, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "partial_image").count(), 1);
    let partial = &events[first.unwrap()];
    assert_eq!(partial["partial_image_index"], 0);
    assert_eq!(partial["step"], 288);
    assert_eq!(partial["total"], 576);
    // Each preview is the decode of that image's first 288 codes, filled in.
    let (cond, uncond) = janus::processor::prepare_generation(&pipe().tokenizer, prompt).unwrap();
    let params = GenerateParams {
        parallel: 2,
        cfg_weight: 5.0,
        temperature: 0.0,
        seed: 3,
        speculative: Default::default(),
    };
    let out = janus::engine::generate_codes(&pipe().model, &cond, &uncond, &params, |_, _| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let filled: Vec<Vec<u32>> = out
        .codes
        .iter()
        .map(|c| janus_server::decode::fill_partial_grid(&c[..288], 24))
        .collect();
    let want = pipe().decode_images(&filled).unwrap();
    let data = partial["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (d, w) in data.iter().zip(&want) {
        assert!(decode_b64_png(d["b64_json"].as_str().unwrap()) == *w);
    }
    let finished = &events[result.unwrap()];
    let got = decode_b64_png(finished["data"][1]["b64_json"].as_str().unwrap());
    assert!(got == pipe().decode_images(&out.codes[1..]).unwrap()[0]);
}

/// On a fast model previews are skipped once the decoder's speed is known: they would
/// only arrive after the result.
#[tokio::test]
async fn partial_images_are_skipped_when_they_would_come_last() {
    let (_server, router) = server();
    let (status, _) = send_json(&router, post("/v1/images/generations", &image_body("x", 1))).await;
    assert_eq!(status, StatusCode::OK);
    let mut body = image_body("a quick one", 1);
    body["stream"] = json!(true);
    body["partial_images"] = json!(3);
    let events = image_events(&router, &body).await;
    assert!(events.iter().all(|e| e["type"] != "partial_image"));
    assert_eq!(events.last().unwrap()["type"], "result");
}

/// Behind a TLS proxy the file URLs use the scheme and host it forwards, or
/// `--public-url` when set.
#[tokio::test]
async fn image_urls_behind_a_proxy() {
    let url_for = |router: axum::Router, headers: Vec<(&'static str, &'static str)>| async move {
        let mut body = image_body("a proxy", 1);
        body["response_format"] = json!("url");
        let mut req = Request::post("/v1/images/generations");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (status, v) = send_json(&router, req.body(Body::from(body.to_string())).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"][0]["url"].as_str().unwrap().to_string()
    };
    let (_server, router) = server();
    let forwarded = vec![
        ("host", "127.0.0.1:8080"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "janus.example.org"),
    ];
    let url = url_for(router.clone(), forwarded.clone()).await;
    assert!(
        url.starts_with("https://janus.example.org/v1/files/images/"),
        "{url}"
    );
    let mut opts = ServerOptions::new("tiny-pro");
    opts.public_url = Some("https://example.org/janus/".into());
    let (_server, router) = server_with(TestModel::plain(), opts);
    let url = url_for(router.clone(), forwarded).await;
    let path = url.strip_prefix("https://example.org/janus").unwrap();
    assert!(path.starts_with("/v1/files/images/"), "{url}");
    let (status, _, _) = send(&router, get(path)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn image_progress_streams() {
    let (_server, router) = server();
    let mut body = image_body("a green hill", 1);
    body["stream"] = json!(true);
    let t0 = Instant::now();
    let (status, headers, bytes) = send(&router, post("/v1/images/generations", &body)).await;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let data = sse_data(&bytes);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let events: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let progress: Vec<&Value> = events.iter().filter(|e| e["type"] == "progress").collect();
    assert!(!progress.is_empty());
    let steps: Vec<u64> = progress
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(*steps.last().unwrap(), 576);
    assert!(progress.iter().all(|e| e["total"] == 576));
    // At most 20 a second (the first and the last may come closer).
    assert!(
        progress.len() as f64 <= 20.0 * secs + 2.0,
        "{} events in {secs}s",
        progress.len()
    );
    let result = events.last().unwrap();
    assert_eq!(result["type"], "result");
    let got = decode_b64_png(result["data"][0]["b64_json"].as_str().unwrap());
    assert!(got == reference_images("a green hill", 1, 3)[0]);
}

#[tokio::test]
async fn models_health_and_metrics() {
    let (_server, router) = server();
    let (status, v) = send_json(&router, get("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny-pro");
    assert_eq!(v["data"][0]["object"], "model");
    let (status, v) = send_json(&router, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (status, _) = send_json(&router, get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_json(&router, post("/v1/chat/completions", &chat_body(3))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send_json(&router, post("/v1/images/generations", &image_body("x", 1))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, headers, body) = send(&router, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "janus_http_requests_total{route=\"/v1/models\",status=\"200\"} 1",
        "janus_http_requests_total{route=\"/health\",status=\"200\"} 1",
        "janus_http_requests_total{route=\"other\",status=\"404\"} 1",
        "janus_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "janus_http_requests_total{route=\"/v1/images/generations\",status=\"200\"} 1",
        "janus_jobs_total{kind=\"chat\",outcome=\"completed\"} 1",
        "janus_jobs_total{kind=\"image\",outcome=\"completed\"} 1",
        "janus_queue_depth 0",
        "janus_queue_capacity 16",
        "janus_completion_tokens_total 3",
        "janus_image_batches_total 1",
        "janus_images_total 1",
        "janus_image_steps_total 576",
        "janus_image_tokens_total 576",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    for gauge in [
        "janus_text_tokens_per_second",
        "janus_image_steps_per_second",
    ] {
        let v: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(gauge)?.trim().parse().ok())
            .unwrap();
        assert!(v > 0.0, "{gauge} {v}");
    }
    // The page is served at the root.
    let (status, headers, _) = send(&router, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

/// The model answers to its id, the id's last component and `janus` (any case), in
/// requests and in `GET /v1/models/{id}`; the answer always carries the served id.
#[tokio::test]
async fn the_model_answers_to_its_names() {
    let (_server, router) = server_with(
        TestModel::plain(),
        ServerOptions::new("fixtures/models/tiny-pro"),
    );
    for id in [
        "fixtures/models/tiny-pro",
        "fixtures%2Fmodels%2Ftiny-pro",
        "tiny-pro",
        "TINY-PRO",
        "janus",
    ] {
        let (status, v) = send_json(&router, get(&format!("/v1/models/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{id}: {v}");
        assert_eq!(v["id"], "fixtures/models/tiny-pro");
        assert_eq!(v["object"], "model");
        assert!(v["created"].as_u64().unwrap() > 0);
    }
    for name in [json!("Janus"), json!("tiny-pro"), json!(null)] {
        let mut body = chat_body(1);
        body["model"] = name.clone();
        let (status, v) = send_json(&router, post("/v1/chat/completions", &body)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {v}");
        assert_eq!(v["model"], "fixtures/models/tiny-pro");
    }
    let (status, v) = send_json(&router, get("/v1/models/models/tiny-pro")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // OpenAI's shape for a model it does not have.
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fixtures/models/tiny-pro"));
}

/// Asserts an OpenAI-shaped error with this status, param and code.
fn assert_error(status: StatusCode, v: &Value, want: StatusCode, param: Value, code: Value) {
    assert_eq!(status, want, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert_eq!(e["param"], param, "{v}");
    assert_eq!(e["code"], code, "{v}");
}

#[tokio::test]
async fn every_bad_request_gets_an_openai_error() {
    let (_server, router) = server();
    let chat = |content: Value| {
        post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": content}], "max_tokens": 2}),
        )
    };
    let image_part = |url: &str| json!([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]);
    let long = "word ".repeat(3000);
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let cases: Vec<(&str, Request<Body>, StatusCode, Value, Value)> = vec![
        (
            "bad JSON",
            Request::post("/v1/chat/completions")
                .body(Body::from("{not json"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            json!(null),
            json!("invalid_json"),
        ),
        (
            "missing messages",
            post("/v1/chat/completions", &json!({"model": "x"})),
            StatusCode::BAD_REQUEST,
            json!(null),
            json!("invalid_json"),
        ),
        (
            "chat n=2",
            post(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            ),
            StatusCode::BAD_REQUEST,
            json!("n"),
            json!(null),
        ),
        (
            "images n=17",
            post("/v1/images/generations", &json!({"prompt": "x", "n": 17})),
            StatusCode::BAD_REQUEST,
            json!("n"),
            json!(null),
        ),
        (
            "images n=0",
            post("/v1/images/generations", &json!({"prompt": "x", "n": 0})),
            StatusCode::BAD_REQUEST,
            json!("n"),
            json!(null),
        ),
        (
            "speculative window 0",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "speculative": 0}),
            ),
            StatusCode::BAD_REQUEST,
            json!("speculative"),
            json!(null),
        ),
        (
            "speculative window not a number",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "speculative": "fast"}),
            ),
            StatusCode::BAD_REQUEST,
            json!("speculative"),
            json!(null),
        ),
        (
            "unknown acceptance",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "speculative": 4, "accept": "lossy"}),
            ),
            StatusCode::BAD_REQUEST,
            json!("accept"),
            json!(null),
        ),
        (
            "bad size",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "size": "1024x1024"}),
            ),
            StatusCode::BAD_REQUEST,
            json!("size"),
            json!(null),
        ),
        (
            "bad response_format",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "response_format": "gif"}),
            ),
            StatusCode::BAD_REQUEST,
            json!("response_format"),
            json!(null),
        ),
        (
            "remote image URL",
            chat(image_part("https://example.com/cat.png")),
            StatusCode::BAD_REQUEST,
            json!("messages[0].content[0].image_url"),
            json!("remote_images_disabled"),
        ),
        (
            "bad base64",
            chat(image_part("data:image/png;base64,!!!not-base64!!!")),
            StatusCode::BAD_REQUEST,
            json!("messages[0].content[0].image_url"),
            json!("invalid_base64"),
        ),
        (
            "undecodable image",
            chat(image_part(&format!(
                "data:image/png;base64,{}",
                b64(b"this is not a PNG at all")
            ))),
            StatusCode::BAD_REQUEST,
            json!("messages[0].content[0].image_url"),
            json!("invalid_image"),
        ),
        (
            "too long chat prompt",
            chat(json!(long)),
            StatusCode::BAD_REQUEST,
            json!("messages"),
            json!("context_length_exceeded"),
        ),
        (
            "too long image prompt",
            post("/v1/images/generations", &json!({"prompt": long})),
            StatusCode::BAD_REQUEST,
            json!("prompt"),
            json!("context_length_exceeded"),
        ),
        (
            "max_tokens over the context",
            post(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}),
            ),
            StatusCode::BAD_REQUEST,
            json!("max_tokens"),
            json!("context_length_exceeded"),
        ),
        (
            "unknown role",
            post(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "tool", "content": "hi"}]}),
            ),
            StatusCode::BAD_REQUEST,
            json!("messages[0].role"),
            json!(null),
        ),
        (
            "placeholder count",
            chat(json!("<image_placeholder> what is this?")),
            StatusCode::BAD_REQUEST,
            json!(null),
            json!(null),
        ),
        (
            "unknown route",
            get("/v1/completions"),
            StatusCode::NOT_FOUND,
            json!(null),
            json!("not_found"),
        ),
        (
            "wrong method",
            get("/v1/chat/completions"),
            StatusCode::METHOD_NOT_ALLOWED,
            json!(null),
            json!("method_not_allowed"),
        ),
        (
            "chat with a model not served",
            post(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            StatusCode::NOT_FOUND,
            json!("model"),
            json!("model_not_found"),
        ),
        (
            "images with a model not served",
            post(
                "/v1/images/generations",
                &json!({"model": "dall-e-3", "prompt": "x"}),
            ),
            StatusCode::NOT_FOUND,
            json!("model"),
            json!("model_not_found"),
        ),
        (
            "partial_images without stream",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "partial_images": 1}),
            ),
            StatusCode::BAD_REQUEST,
            json!("partial_images"),
            json!(null),
        ),
        (
            "too many partial_images",
            post(
                "/v1/images/generations",
                &json!({"prompt": "x", "partial_images": 4, "stream": true}),
            ),
            StatusCode::BAD_REQUEST,
            json!("partial_images"),
            json!(null),
        ),
        (
            "a model not served",
            get("/v1/models/gpt-4o"),
            StatusCode::NOT_FOUND,
            json!(null),
            json!("model_not_found"),
        ),
    ];
    for (what, req, status, param, code) in cases {
        let (got, v) = send_json(&router, req).await;
        eprintln!("{what}: {v}");
        assert_error(got, &v, status, param, code);
    }
    // Nothing reached the model.
    assert_eq!(
        metric(&router, "janus_completion_tokens_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let mut opts = ServerOptions::new("tiny-pro");
    opts.max_body_bytes = 1000;
    let (_server, router) = server_with(TestModel::plain(), opts);
    let body = json!({"prompt": "x".repeat(2000)});
    let (status, v) = send_json(&router, post("/v1/images/generations", &body)).await;
    assert_error(
        status,
        &v,
        StatusCode::PAYLOAD_TOO_LARGE,
        json!(null),
        json!("payload_too_large"),
    );
}

#[tokio::test]
async fn api_key_is_required_when_set() {
    let mut opts = ServerOptions::new("tiny-pro");
    opts.api_key = Some("sekrit".into());
    let (_server, router) = server_with(TestModel::plain(), opts);
    let with = |auth: Option<&str>| {
        let mut b = Request::get("/v1/models");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::empty()).unwrap()
    };
    let (status, v) = send_json(&router, with(None)).await;
    assert_error(
        status,
        &v,
        StatusCode::UNAUTHORIZED,
        json!(null),
        json!("invalid_api_key"),
    );
    let (status, v) = send_json(&router, with(Some("Bearer wrong"))).await;
    assert_error(
        status,
        &v,
        StatusCode::UNAUTHORIZED,
        json!(null),
        json!("invalid_api_key"),
    );
    let (status, _) = send_json(&router, with(Some("Bearer sekrit"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = send_json(&router, post("/v1/chat/completions", &chat_body(2))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _, _) = send(&router, get("/metrics")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health and the page stay open.
    let (status, _) = send_json(&router, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&router, get("/")).await;
    assert_eq!(status, StatusCode::OK);
}

/// A test model whose jobs wait at a closed gate.
fn gated() -> (TestModel, Arc<Gate>) {
    let gate = Gate::closed();
    let model = TestModel {
        gate: Some(gate.clone()),
        ..TestModel::plain()
    };
    (model, gate)
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() {
    let (model, gate) = gated();
    let mut opts = ServerOptions::new("tiny-pro");
    opts.max_queue = 1;
    let (_server, router) = server_with(model, opts);
    // The first job runs (held at the gate), the second waits, the third is refused.
    let first = tokio::spawn(send_json_owned(router.clone(), chat_body(2)));
    wait_until("the first job to start", || gate.entered() == 1).await;
    let second = tokio::spawn(send_json_owned(router.clone(), chat_body(2)));
    wait_for_metric(&router, "janus_queue_depth", |v| v == 1.0).await;
    let (status, v) = send_json(&router, post("/v1/chat/completions", &chat_body(2))).await;
    assert_error(
        status,
        &v,
        StatusCode::TOO_MANY_REQUESTS,
        json!(null),
        json!("queue_full"),
    );
    let (status, v) = send_json(&router, post("/v1/images/generations", &image_body("x", 1))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    gate.open();
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(second.await.unwrap().0, StatusCode::OK);
}

async fn send_json_owned(router: axum::Router, body: Value) -> (StatusCode, Value) {
    let uri = if body.get("messages").is_some() {
        "/v1/chat/completions"
    } else {
        "/v1/images/generations"
    };
    send_json(&router, post(uri, &body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_image_requests_run_as_one_batch_with_the_same_results() {
    let (model, gate) = gated();
    let (_server, router) = server_with(model, ServerOptions::new("tiny-pro"));
    // The first request holds the model; two more (different prompt lengths, P = 2 and 1)
    // wait and then run together.
    let first = tokio::spawn(send_json_owned(router.clone(), image_body("a cat", 1)));
    wait_until("the first job to start", || gate.entered() == 1).await;
    let long = "A small wooden boat on a calm lake at sunrise, mist over the water";
    let a = tokio::spawn(send_json_owned(router.clone(), image_body(long, 2)));
    let b = tokio::spawn(send_json_owned(router.clone(), image_body("red", 1)));
    wait_for_metric(&router, "janus_queue_depth", |v| v == 2.0).await;
    gate.open();
    let (sa, va) = a.await.unwrap();
    let (sb, vb) = b.await.unwrap();
    assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{va} {vb}");
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(
        metric(&router, "janus_image_batches_total").await,
        Some(2.0)
    );
    assert_eq!(metric(&router, "janus_images_total").await, Some(4.0));
    for (v, prompt, n) in [(&va, long, 2), (&vb, "red", 1)] {
        let want = reference_images(prompt, n, 3);
        let got: Vec<image::RgbImage> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| decode_b64_png(d["b64_json"].as_str().unwrap()))
            .collect();
        assert_eq!(got.len(), n);
        assert!(
            got == want,
            "batched images for {prompt:?} differ from alone"
        );
    }
}

/// The model thread goes on while images decode: with the first request's VQ decoding
/// held, a chat is answered and a second image request is sampled; both image requests
/// then get their images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_does_not_hold_up_the_model_thread() {
    let gate = Gate::closed();
    let model = TestModel {
        decode_gate: Some(gate.clone()),
        ..TestModel::plain()
    };
    let (_server, router) = server_with(model, ServerOptions::new("tiny-pro"));
    let first = tokio::spawn(send_json_owned(router.clone(), image_body("a cat", 1)));
    wait_until("the first decode to start", || gate.entered() == 1).await;
    let (status, v) = send_json(&router, post("/v1/chat/completions", &chat_body(2))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let second = tokio::spawn(send_json_owned(router.clone(), image_body("a dog", 2)));
    wait_for_metric(&router, "janus_decode_queue_images", |v| v == 2.0).await;
    assert_eq!(
        metric(&router, "janus_image_batches_total").await,
        Some(2.0)
    );
    assert!(
        !first.is_finished(),
        "the first request ended before its decode"
    );
    gate.open();
    let (s1, v1) = first.await.unwrap();
    let (s2, v2) = second.await.unwrap();
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{v1} {v2}");
    assert_eq!(v2["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        metric(&router, "janus_vq_decoded_images_total").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&router, "janus_decode_queue_images").await,
        Some(0.0)
    );
}

/// A test model slow enough (2 ms a token or step) for a client to leave mid-job.
fn slow() -> TestModel {
    TestModel {
        delay: Duration::from_millis(2),
        ..TestModel::plain()
    }
}

#[tokio::test]
async fn dropping_a_chat_stream_cancels_the_job() {
    let (_server, router) = server_with(slow(), ServerOptions::new("tiny-pro"));
    let body = json!({
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 1500,
        "stream": true,
    });
    let resp = router
        .clone()
        .oneshot(post("/v1/chat/completions", &body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The role chunk, then at least one text chunk.
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    wait_for_metric(
        &router,
        "janus_jobs_total{kind=\"chat\",outcome=\"cancelled\"}",
        |v| v == 1.0,
    )
    .await;
    let tokens = metric(&router, "janus_completion_tokens_total")
        .await
        .unwrap();
    assert!(tokens < 1500.0, "{tokens} tokens generated");
}

#[tokio::test]
async fn dropping_a_pending_request_cancels_the_job() {
    let (_server, router) = server_with(slow(), ServerOptions::new("tiny-pro"));
    let req = post("/v1/images/generations", &image_body("a slow boat", 1));
    let res = tokio::time::timeout(Duration::from_millis(300), router.clone().oneshot(req)).await;
    assert!(res.is_err(), "the request should still be running");
    wait_for_metric(
        &router,
        "janus_jobs_total{kind=\"image\",outcome=\"cancelled\"}",
        |v| v == 1.0,
    )
    .await;
    let codes = metric(&router, "janus_image_tokens_total").await.unwrap();
    assert!(codes < 576.0, "{codes} codes drawn");
}

#[tokio::test]
async fn dropping_an_image_stream_cancels_the_job() {
    let (_server, router) = server_with(slow(), ServerOptions::new("tiny-pro"));
    let mut body = image_body("a slow train", 1);
    body["stream"] = json!(true);
    let resp = router
        .clone()
        .oneshot(post("/v1/images/generations", &body))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.contains("\"progress\""), "{text}");
    drop(body);
    wait_for_metric(
        &router,
        "janus_jobs_total{kind=\"image\",outcome=\"cancelled\"}",
        |v| v == 1.0,
    )
    .await;
    let steps = metric(&router, "janus_image_steps_total").await.unwrap();
    assert!(steps < 576.0, "{steps} steps run");
}

/// Serves `body` once, as an HTTP response, on a loopback port; returns its URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    format!("http://{addr}/wide.png")
}

#[tokio::test]
async fn remote_images_are_fetched_when_allowed() {
    let mut opts = ServerOptions::new("tiny-pro");
    opts.allow_remote_images = true;
    let (_server, router) = server_with(TestModel::plain(), opts);
    let url = serve_once(std::fs::read(fixtures().join("images/wide.png")).unwrap());
    let mut body = chat_body(8);
    body["messages"][0]["content"][0]["image_url"]["url"] = json!(url);
    let (status, v) = send_json(&router, post("/v1/chat/completions", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let want = reference_answer(8);
    assert_eq!(v["choices"][0]["message"]["content"], want.text.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);

    // A URL that cannot be fetched is the request's fault.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/x.png", closed.local_addr().unwrap());
    drop(closed);
    body["messages"][0]["content"][0]["image_url"]["url"] = json!(dead);
    let (status, v) = send_json(&router, post("/v1/chat/completions", &body)).await;
    assert_error(
        status,
        &v,
        StatusCode::BAD_REQUEST,
        json!("messages[0].content[0].image_url"),
        json!("image_fetch_failed"),
    );
}
