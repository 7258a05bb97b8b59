//! Graceful shutdown on a real (ephemeral, loopback) port: running requests finish, or are
//! cancelled with 503 once the grace period is over; the image directory is removed.

mod support;

use std::io::Read;
use std::time::Duration;

use janus_server::{Server, ServerOptions};
use serde_json::{json, Value};
use support::*;

/// Starts `server` on 127.0.0.1:0; returns its base URL, a shutdown trigger and the
/// serving task.
async fn start(
    server: Server,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    (base, tx, task)
}

/// POSTs JSON with a blocking client; returns the status and the JSON answer.
fn post_blocking(url: String, body: Value) -> (u16, Value) {
    let resp = match ureq::post(&url).send_string(&body.to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_requests_finish_before_the_server_stops() {
    let (model, gate) = (TestModel::plain(), Gate::closed());
    let model = TestModel {
        gate: Some(gate.clone()),
        ..model
    };
    let server = Server::start(model, ServerOptions::new("tiny-pro")).unwrap();
    let dir = server.image_dir().to_path_buf();
    let (base, stop, task) = start(server).await;
    let url = format!("{base}/v1/chat/completions");
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    let running = tokio::task::spawn_blocking(move || post_blocking(url, body));
    while gate.entered() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections once shutting down.
    let health = format!("{base}/health");
    let refused = tokio::task::spawn_blocking(move || ureq::get(&health).call().is_err())
        .await
        .unwrap();
    assert!(refused, "a new request was accepted during shutdown");
    gate.open();
    let (status, v) = running.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    task.await.unwrap().unwrap();
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_still_running_after_the_grace_period_is_cancelled() {
    let model = TestModel {
        delay: Duration::from_millis(20),
        ..TestModel::plain()
    };
    let mut opts = ServerOptions::new("tiny-pro");
    opts.shutdown_grace = Duration::from_millis(200);
    let server = Server::start(model, opts).unwrap();
    let dir = server.image_dir().to_path_buf();
    let (base, stop, task) = start(server).await;
    let url = format!("{base}/v1/images/generations");
    // 576 steps at 20 ms each: far longer than the grace period.
    let running =
        tokio::task::spawn_blocking(move || post_blocking(url, json!({"prompt": "a long job"})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let (status, v) = running.await.unwrap();
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "shutting_down");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
    assert!(!dir.exists());
}
