//! `janus --model owner/name` end to end: downloads from a stub hub on 127.0.0.1 into a
//! temporary Hugging Face cache, then offline runs from the cache alone.
//!
//! Every run gets its environment on its `Command` (HF_* variables from the test's own
//! environment are removed), so tests run in parallel without racing.

#[path = "../../janus/tests/support/stub_hub.rs"]
mod stub_hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use stub_hub::{dead_endpoint, StubHub, StubRepo};

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

/// `janus args` with `HF_HOME` in `home` (cache in `home/hub`, no token file) and `env`.
fn janus(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_janus"));
    for var in [
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", home).envs(env.iter().copied());
    cmd.args(args).output().expect("running janus")
}

fn understand(home: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut args = vec![
        "understand",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    janus(home, env, &args)
}

fn json_of(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "janus failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("no output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The one-line error of a failed run.
fn error_of(out: &Output) -> String {
    assert!(!out.status.success(), "janus succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    lines[0].to_string()
}

#[test]
fn downloads_by_repo_id_then_runs_offline() {
    let repo = "test-org/tiny-pro";
    let mut hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-pro"))]);
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let online = [("HF_ENDPOINT", endpoint.as_str())];

    let out = understand(home.path(), &online, &["--model", repo]);
    let first = json_of(&out);
    // One progress line set per downloaded file (stderr is not a terminal here).
    let stderr = String::from_utf8_lossy(&out.stderr);
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(
            stderr.contains(&format!("downloading {file}: ")),
            "{file}: {stderr}"
        );
    }
    let snapshot = home
        .path()
        .join("hub/models--test-org--tiny-pro/snapshots")
        .join(SHA);
    assert!(snapshot.join("model-00002-of-00002.safetensors").is_file());

    // Same answer from a local directory.
    let local = understand(
        home.path(),
        &[],
        &["--model", fixture("tiny-pro").to_str().unwrap()],
    );
    assert_eq!(json_of(&local)["token_ids"], first["token_ids"]);

    // Cached: nothing downloaded again, quietly.
    let out = understand(home.path(), &online, &["--model", repo, "--quiet"]);
    assert_eq!(json_of(&out)["token_ids"], first["token_ids"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server is gone: HF_HUB_OFFLINE=1, --offline and a pinned commit all work.
    hub.stop();
    let offline = [("HF_ENDPOINT", endpoint.as_str()), ("HF_HUB_OFFLINE", "1")];
    for (env, extra) in [
        (&offline[..], vec!["--model", repo]),
        (&online[..], vec!["--model", repo, "--offline"]),
        (
            &online[..],
            vec!["--model", repo, "--offline", "--revision", SHA],
        ),
    ] {
        let out = understand(home.path(), env, &extra);
        assert_eq!(json_of(&out)["token_ids"], first["token_ids"], "{extra:?}");
    }
}

#[test]
fn hf_hub_cache_beats_hf_home() {
    let repo = "test-org/tiny-janus";
    let hub = StubHub::start(vec![StubRepo::from_dir(repo, SHA, &fixture("tiny-janus"))]);
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", cache.path().to_str().unwrap()),
    ];
    json_of(&understand(home.path(), &env, &["--model", repo, "-q"]));
    assert!(cache
        .path()
        .join("models--test-org--tiny-janus/snapshots")
        .join(SHA)
        .join("pytorch_model.bin")
        .is_file());
    assert!(!home.path().join("hub").exists());
}

#[test]
fn offline_without_the_cache_names_the_default_model() {
    let home = tempfile::tempdir().unwrap();
    let out = understand(home.path(), &[("HF_HUB_OFFLINE", "1")], &[]);
    assert_eq!(
        error_of(&out),
        format!(
            "error: deepseek-ai/Janus-Pro-1B is not in the Hugging Face cache at {} (offline mode): run once without HF_HUB_OFFLINE=1 or --offline to download it, or pass --model with a local directory",
            home.path().join("hub").display()
        )
    );
}

#[test]
fn token_from_hf_token_is_sent_as_bearer() {
    let repo = "test-org/private";
    let hub = StubHub::start(vec![
        StubRepo::from_dir(repo, SHA, &fixture("tiny-janus")).with_token("hf_cli_secret")
    ]);
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let msg = error_of(&understand(home.path(), &env, &["--model", repo]));
    assert!(
        msg.contains("401 Unauthorized") && msg.contains("HF_TOKEN"),
        "{msg}"
    );

    let before = hub.seen().len();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_TOKEN", "hf_cli_secret"),
    ];
    json_of(&understand(home.path(), &env, &["--model", repo, "-q"]));
    let seen = &hub.seen()[before..];
    assert!(!seen.is_empty());
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer hf_cli_secret")));

    // The token file `huggingface-cli login` writes works too.
    let home2 = tempfile::tempdir().unwrap();
    std::fs::write(home2.path().join("token"), "hf_cli_secret\n").unwrap();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    json_of(&understand(home2.path(), &env, &["--model", repo, "-q"]));
}

#[test]
fn hub_errors_are_one_line() {
    let hub = StubHub::start(vec![]);
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let env = [("HF_ENDPOINT", endpoint.as_str())];
    let msg = error_of(&understand(
        home.path(),
        &env,
        &["--model", "no-org/nothing"],
    ));
    assert!(
        msg.contains("no-org/nothing: no such model repository")
            && msg.contains(&format!(
                "{endpoint}/api/models/no-org/nothing/revision/main"
            )),
        "{msg}"
    );

    let dead = dead_endpoint();
    let env = [("HF_ENDPOINT", dead.as_str())];
    let msg = error_of(&understand(home.path(), &env, &["--model", "o/m"]));
    assert!(
        msg.starts_with(&format!("error: cannot reach {dead}/api/models/o/m")),
        "{msg}"
    );

    let msg = error_of(&understand(home.path(), &env, &["--model", "Janus-Pro-1B"]));
    assert!(
        msg.contains("expected an existing directory or owner/name"),
        "{msg}"
    );
    let msg = error_of(&understand(
        home.path(),
        &env,
        &["--model", "./no/such/dir"],
    ));
    assert_eq!(msg, "error: model directory ./no/such/dir does not exist");
}
