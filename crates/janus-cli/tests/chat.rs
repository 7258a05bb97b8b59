//! `janus chat` end to end on the tiny fixture model, driven through stdin as a script
//! would drive it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn model() -> String {
    fixtures().join("models/tiny-pro").display().to_string()
}

fn image(name: &str) -> String {
    fixtures().join("images").join(name).display().to_string()
}

fn janus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_janus"));
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// Runs `janus chat --model tiny-pro ARGS` with `script` on stdin.
fn chat(args: &[&str], script: &str) -> Output {
    let mut child = janus()
        .args(["chat", "--model", &model()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running janus chat");
    // The chat may stop reading (/quit) before the script ends: a broken pipe is fine.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes());
    child.wait_with_output().expect("waiting for janus chat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "janus chat failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let s =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {s}", path.display()))
}

fn contents(v: &Value) -> Vec<(String, String)> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `janus understand --json` for one message.
fn understand(prompt: &str, extra: &[&str]) -> Value {
    let out = janus()
        .args([
            "understand",
            "--model",
            &model(),
            "--prompt",
            prompt,
            "--json",
        ])
        .args(extra)
        .output()
        .expect("running janus understand");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("no output")).expect("understand JSON")
}

#[test]
fn scripted_session() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let after_reset = dir.path().join("reset.json");
    let script = format!(
        "hello there\n\
         /image {wide}\n\
         what is in the picture?\n\
         /save {saved}\n\
         /help\n\
         /reset\n\
         /save {after_reset}\n\
         hello there\n\
         /quit\n\
         this line is never read\n",
        wide = image("wide.png"),
        saved = saved.display(),
        after_reset = after_reset.display(),
    );
    let out = chat(&["--max-new-tokens", "16"], &script);
    assert_ok(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/image PATH"), "no /help text: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");

    let v = read_json(&saved);
    assert!(v["model"].as_str().unwrap().contains("tiny-pro"), "{v}");
    assert_eq!(v["system"], janus::processor::DEFAULT_SYSTEM_PROMPT);
    let turns = contents(&v);
    let roles: Vec<&str> = turns.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(turns[0].1, "hello there");
    assert_eq!(turns[2].1, "what is in the picture?");
    let images = &v["messages"][2]["images"];
    assert_eq!(images.as_array().unwrap().len(), 1, "{v}");
    let attached = Path::new(images[0].as_str().unwrap());
    assert!(attached.is_absolute());
    assert_eq!(
        std::fs::canonicalize(attached).unwrap(),
        std::fs::canonicalize(image("wide.png")).unwrap()
    );
    assert_eq!(v["messages"][0]["images"], serde_json::json!([]));

    assert!(contents(&read_json(&after_reset)).is_empty());

    // stdout is just the answers, one per line; after /reset the first question gets
    // the first answer again, and nothing after /quit is answered.
    let (a1, a2) = (&turns[1].1, &turns[3].1);
    assert_eq!(text(&out.stdout), format!("{a1}\n{a2}\n{a1}\n"));
}

#[test]
fn greedy_answer_equals_understand() {
    let prompt = "Describe this picture.";
    let reference = understand(
        prompt,
        &["--image", &image("wide.png"), "--max-new-tokens", "40"],
    );
    let out = chat(
        &["--image", &image("wide.png"), "--max-new-tokens", "40"],
        &format!("{prompt}\n"),
    );
    assert_ok(&out); // end of input ends the chat cleanly
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", reference["text"].as_str().unwrap())
    );
}

#[test]
fn later_turns_see_the_earlier_ones() {
    // The same second question gets different answers after different first turns,
    // and a different one again on its own: the whole conversation is the prompt.
    let dir = tempfile::tempdir().unwrap();
    let second_answer = |script: &str| {
        let saved = dir.path().join("chat.json");
        let out = chat(
            &["--max-new-tokens", "12"],
            &format!("{script}/save {}\n", saved.display()),
        );
        assert_ok(&out);
        contents(&read_json(&saved)).pop().unwrap().1
    };
    let a = second_answer("hello there\nand then?\n");
    let b = second_answer("good morning\nand then?\n");
    let alone = second_answer("and then?\n");
    assert!(a != b && a != alone && b != alone, "{a:?} {b:?} {alone:?}");
}

#[test]
fn bad_images_do_not_end_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let not_an_image = fixtures().join("models/tiny-pro/config.json");
    let script = format!(
        "/image /no/such/picture.png\n\
         /image {}\n\
         /frobnicate\n\
         hello there\n\
         /save {}\n",
        not_an_image.display(),
        saved.display()
    );
    let out = chat(&["--max-new-tokens", "8"], &script);
    assert_ok(&out);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("error:").count(), 3, "{stderr}");
    assert!(stderr.contains("/no/such/picture.png"), "{stderr}");
    let v = read_json(&saved);
    assert_eq!(contents(&v).len(), 2);
    assert_eq!(v["messages"][0]["images"], serde_json::json!([]));
}

#[test]
fn bad_command_line_image_is_an_error() {
    let out = chat(&["--image", "/no/such/picture.png"], "hello\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/no/such/picture.png"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1
    );
}

#[test]
fn save_failure_is_reported_and_the_chat_goes_on() {
    let out = chat(
        &["--max-new-tokens", "4"],
        "hello\n/save /no/such/dir/chat.json\nagain\n",
    );
    assert_ok(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("/no/such/dir"),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn context_overflow_is_reported_not_fatal() {
    // 4 images of 576 tokens do not fit the tiny model's 2048 positions.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("chat.json");
    let wide = image("wide.png");
    let script = format!(
        "/image {wide}\n/image {wide}\n/image {wide}\n/image {wide}\n\
         what are these?\n/save {}\n/reset\nhello there\n",
        saved.display()
    );
    let out = chat(&["--max-new-tokens", "8"], &script);
    assert_ok(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("context holds 2048") && stderr.contains("/reset"),
        "{stderr}"
    );
    // The message that did not fit is not kept; the chat answers the next one.
    assert!(contents(&read_json(&saved)).is_empty());
    assert_eq!(text(&out.stdout).lines().count(), 1);
}

/// Collects a pipe's bytes on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// Waits until `cond` holds for the collected bytes; panics after `secs` seconds.
fn wait_for(buf: &Arc<Mutex<Vec<u8>>>, what: &str, secs: u64, cond: impl Fn(&[u8]) -> bool) {
    let start = Instant::now();
    while !cond(&buf.lock().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; got: {}",
            text(&buf.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_exit(child: &mut Child, secs: u64) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("janus chat did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn sigint(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
}

struct Live {
    child: Child,
    stdin: ChildStdin,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn spawn_chat(args: &[&str]) -> Live {
    let mut child = janus()
        .args(["chat", "--model", &model()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running janus chat");
    let stdin = child.stdin.take().unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Live {
        child,
        stdin,
        stdout,
        stderr,
    }
}

fn has(needle: &'static str) -> impl Fn(&[u8]) -> bool {
    move |b| text(b).contains(needle)
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_answer_not_the_program() {
    // The tiny model answers in a few milliseconds and usually stops early, so the
    // answer to interrupt is sampled near-uniformly (temperature 50): its stop token is
    // then about 1 in 640 per step. Of a few seeds the one with the longest answer is
    // used; its run of hundreds of tokens leaves ample time for the signal.
    let prompt = "Tell me everything.";
    let sampling = |seed: u64| {
        vec![
            "--temperature".to_string(),
            "50".to_string(),
            "--seed".to_string(),
            seed.to_string(),
            "--max-new-tokens".to_string(),
            "2000".to_string(),
        ]
    };
    let (seed, full) = (0..12u64)
        .map(|seed| {
            let args = sampling(seed);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let v = understand(prompt, &args);
            (seed, v)
        })
        .max_by_key(|(_, v)| v["token_ids"].as_array().unwrap().len())
        .unwrap();
    let full_len = full["token_ids"].as_array().unwrap().len();
    assert!(
        full_len >= 200,
        "no seed gives a long answer (longest: {full_len} tokens)"
    );
    let full_text = full["text"].as_str().unwrap().to_string();

    let args = sampling(seed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut live = spawn_chat(&args);
    writeln!(live.stdin, "{prompt}").unwrap();
    live.stdin.flush().unwrap();
    wait_for(&live.stdout, "the answer to start", 60, |b| !b.is_empty());
    sigint(&live.child);
    wait_for(&live.stderr, "the stop notice", 60, has("[stopped"));

    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (dir.path().join("1.json"), dir.path().join("2.json"));
    write!(
        live.stdin,
        "/save {}\nhello there\n/save {}\n/quit\n",
        first.display(),
        last.display()
    )
    .unwrap();
    live.stdin.flush().unwrap();
    let status = wait_exit(&mut live.child, 120);
    let stderr = text(&live.stderr.lock().unwrap());
    assert!(status.success(), "janus chat failed ({status}): {stderr}");

    // The partial answer is kept: a proper prefix of the full one (its last character
    // may be an incomplete UTF-8 sequence that the full answer completes).
    let turns = contents(&read_json(&first));
    assert_eq!(turns.len(), 2, "{turns:?}");
    let partial = &turns[1].1;
    assert!(
        partial.len() < full_text.len(),
        "the answer was not cut short"
    );
    let mut stem = partial.clone();
    stem.pop();
    assert!(
        full_text.starts_with(&stem),
        "{partial:?} is not a prefix of {full_text:?}"
    );
    // ... and the chat went on to answer the next message.
    let turns = contents(&read_json(&last));
    assert_eq!(turns.len(), 4, "{turns:?}");
    assert_eq!(turns[2].1, "hello there");
    let stdout = text(&live.stdout.lock().unwrap());
    assert!(stdout.starts_with(&stem), "{stdout:?}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_twice_at_the_prompt_leaves() {
    let mut live = spawn_chat(&[]);
    // Once /help has been answered the chat is at its prompt, handler installed.
    writeln!(live.stdin, "/help").unwrap();
    live.stdin.flush().unwrap();
    wait_for(&live.stderr, "the help text", 60, has("/image PATH"));
    sigint(&live.child);
    wait_for(&live.stderr, "the hint", 60, has("Ctrl-C again"));
    assert!(
        live.child.try_wait().unwrap().is_none(),
        "one Ctrl-C ended the chat"
    );
    sigint(&live.child);
    let status = wait_exit(&mut live.child, 60);
    assert!(status.success(), "{status}");
}
