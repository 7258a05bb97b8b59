//! `janus serve` as a process: it prints its address, answers plain HTTP clients, and on
//! SIGTERM stops cleanly (exit 0) and removes its image directory.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn serve_answers_over_http_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["-q", "serve", "--port", "0", "--dtype", "f32"])
        .args(["--public-url", "https://janus.example.org/j/", "--model"])
        .arg(model("tiny-pro"))
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running janus serve");
    let mut server = Running(child);
    let stdout = server.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let Some(Ok(first)) = lines.next() else {
        let mut err = String::new();
        let _ = server.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("janus serve printed no address: {err}");
    };
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let dirs = entries(tmp.path());
    assert!(
        dirs.len() == 1 && dirs[0].starts_with("janus-serve-"),
        "{dirs:?}"
    );

    let health: Value = ureq::get(&format!("{base}/health"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["status"], "ok");

    let chat: Value = ureq::post(&format!("{base}/v1/chat/completions"))
        .send_json(json!({
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 4,
        }))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(chat["object"], "chat.completion");
    assert!(chat["usage"]["completion_tokens"].as_u64().unwrap() <= 4);

    let images: Value = ureq::post(&format!("{base}/v1/images/generations"))
        .send_json(json!({"prompt": "a red apple", "response_format": "url", "seed": 1}))
        .unwrap()
        .into_json()
        .unwrap();
    // File URLs carry the public address; the path is served here.
    let url = images["data"][0]["url"].as_str().unwrap();
    let path = url.strip_prefix("https://janus.example.org/j").unwrap();
    assert!(path.starts_with("/v1/files/images/"), "{url}");
    assert!(images["seed"] == 1, "{images}");
    let png = ureq::get(&format!("{base}{path}")).call().unwrap();
    assert_eq!(png.content_type(), "image/png");
    let mut bytes = Vec::new();
    png.into_reader().read_to_end(&mut bytes).unwrap();
    assert_eq!(
        image::load_from_memory(&bytes)
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (384, 384)
    );

    // Errors come back in the OpenAI shape.
    match ureq::post(&format!("{base}/v1/images/generations"))
        .send_json(json!({"prompt": "x", "size": "256x256"}))
    {
        Err(ureq::Error::Status(400, resp)) => {
            let v: Value = resp.into_json().unwrap();
            assert_eq!(v["error"]["param"], "size");
        }
        other => panic!("expected a 400, got {other:?}"),
    }

    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_exit(
        &mut server.0,
        Duration::from_secs(60),
        "janus serve after SIGTERM",
    );
    let mut err = String::new();
    let _ = server.0.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

#[test]
fn serve_refuses_a_bad_public_url() {
    for bad in ["janus.example.org", "ftp://x", "https://", "https://h/?q=1"] {
        let out = janus(&["serve", "--port", "0", "--public-url", bad]);
        assert_clean_error(&out, &["--public-url"]);
    }
}
