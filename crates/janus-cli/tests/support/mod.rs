//! Helpers shared by the `janus` command's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A fixture model directory.
pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// A fixture model directory as an argument.
pub fn model(name: &str) -> String {
    model_dir(name).display().to_string()
}

/// A fixture image as an argument.
pub fn image(name: &str) -> String {
    fixtures().join("images").join(name).display().to_string()
}

/// Runs the `janus` binary (no backtraces requested, quiet progress).
pub fn janus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running janus")
}

/// Asserts success and returns stdout.
pub fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "janus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Asserts success and parses stdout as one JSON value.
pub fn json_of(out: &Output) -> Value {
    let stdout = stdout_of(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Asserts a failure: non-zero exit status, exactly one `error:` line on stderr naming
/// every needle, no panic and no backtrace. Returns the error line.
pub fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "backtrace: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    for n in needles {
        assert!(
            errors[0].contains(n),
            "error {:?} does not mention {n:?}",
            errors[0]
        );
    }
    errors[0].to_string()
}

/// Names in a directory (hidden ones included), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Copies a model directory's files (not subdirectories) into `dst`.
pub fn copy_model(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(model_dir(name)).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// A child process the test started: killed if the test fails before it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits up to `limit` for `child` to exit; fails the test naming `what` otherwise.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
