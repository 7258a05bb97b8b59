//! The container's entrypoint (`deploy/entrypoint.sh`) as a process, as Kubernetes runs
//! it: configured from the environment, it answers `/health` only once the model has
//! loaded (the readiness probe), keeps the API key out of its command line, and on SIGTERM
//! lets a running request finish, refuses new connections and exits 0 (the drain).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn entrypoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/entrypoint.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url`: the status, or `None` when nothing listens.
fn status(url: &str) -> Option<u16> {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(s, _)) => Some(s),
        Err(_) => None,
    }
}

#[test]
fn the_entrypoint_is_ready_only_once_loaded_and_drains_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    // The model's tokenizer is a FIFO: loading blocks on it until the test writes it, so
    // the "still loading" window is as long as the test wants.
    let model = tmp.path().join("model");
    copy_model("tiny-pro", &model);
    let tokenizer = std::fs::read(model.join("tokenizer.json")).unwrap();
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let fifo = std::ffi::CString::new(model.join("tokenizer.json").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path the test owns.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let key = "entrypoint-test-key";
    let child = Command::new("sh")
        .arg(entrypoint())
        .args(["--threads", "1"])
        .env("JANUS_BIN", env!("CARGO_BIN_EXE_janus"))
        .env("JANUS_MODEL", &model)
        .env("JANUS_DTYPE", "f32")
        .env("JANUS_HOST", "127.0.0.1")
        .env("JANUS_PORT", port.to_string())
        .env("JANUS_SHUTDOWN_GRACE", "60")
        .env("JANUS_API_KEY", key)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    let pid = server.0.id();

    // Loading: the process lives, nothing answers the probe.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(
            status(&format!("{base}/health")),
            None,
            "ready before loading"
        );
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "exited while loading"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // exec: the entrypoint's pid is janus itself, and the key is not on its command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(" serve ") && !cmdline.contains(key),
        "{cmdline}"
    );

    std::fs::OpenOptions::new()
        .write(true)
        .open(model.join("tokenizer.json"))
        .and_then(|mut f| f.write_all(&tokenizer))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&format!("{base}/health")) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready a minute after loading"
        );
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "exited after loading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&format!("{base}/v1/models")), Some(401));

    // A generation still sampling when SIGTERM arrives completes. Streamed, so the test
    // knows the sampling loop is under way (its first progress event) before it signals.
    let url = format!("{base}/v1/images/generations");
    let auth = format!("Bearer {key}");
    let (started_tx, started) = std::sync::mpsc::channel();
    let request = std::thread::spawn(move || -> Result<(u64, Value), String> {
        let resp = ureq::post(&url)
            .set("Authorization", &auth)
            .timeout(Duration::from_secs(120))
            .send_json(json!({"prompt": "A red apple.", "n": 2, "seed": 7, "stream": true}))
            .map_err(|e| e.to_string())?;
        let mut total = 0;
        for line in std::io::BufRead::lines(std::io::BufReader::new(resp.into_reader())) {
            let line = line.map_err(|e| e.to_string())?;
            let Some(Ok(event)) = line
                .strip_prefix("data: ")
                .map(serde_json::from_str::<Value>)
            else {
                continue;
            };
            match event["type"].as_str() {
                Some("progress") => {
                    total = event["total"].as_u64().unwrap_or(0);
                    let _ = started_tx.send(event["step"].as_u64().unwrap_or(0));
                }
                Some("result") => return Ok((total, event)),
                _ => return Err(event.to_string()),
            }
        }
        Err("the stream ended without a result".into())
    });
    let step = started
        .recv_timeout(Duration::from_secs(60))
        .expect("the generation never started sampling");
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let (total, answer) = request
        .join()
        .unwrap()
        .expect("the running request completes");
    assert!(
        step < total,
        "signalled at step {step} of {total}: nothing left to drain"
    );
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(2), "{answer}");
    let exit = wait_exit(
        &mut server.0,
        Duration::from_secs(60),
        "janus after the drain",
    );
    let mut err = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(exit.success(), "exit {exit:?}: {err}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting connections"
    );
}

#[test]
fn the_entrypoint_refuses_a_missing_model_volume() {
    let out = Command::new("sh")
        .arg(entrypoint())
        .env("JANUS_BIN", env!("CARGO_BIN_EXE_janus"))
        .env("JANUS_MODEL", "/nonexistent/models/Janus-Pro-1B")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/models/Janus-Pro-1B") && err.contains("mount"),
        "{err}"
    );
}
