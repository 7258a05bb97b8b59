//! Data-parallel `janus train` under Open MPI's `mpirun` on this machine: one rank is the
//! plain run bit for bit, two ranks take the same optimiser steps as one process with the
//! same batch (up to the order of f32 sums), a killed rank stops the job and leaves the
//! last checkpoint intact, and a two-rank run resumes on one rank.
//!
//! Needs the `mpi` feature (`cargo test --features janus-cli/mpi`, as CI runs) and
//! `mpirun`; built without the feature, the tests are listed as ignored with that reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Says why the tests cannot run here, if they cannot.
fn skipped(test: &str) -> bool {
    if !cfg!(feature = "mpi") {
        eprintln!(
            "SKIPPED {test}: janus-cli was built without the `mpi` feature (run \
             `cargo test --features janus-cli/mpi` with Open MPI installed)"
        );
        return true;
    }
    let found = Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // Built with MPI means Open MPI is installed: a missing mpirun is a broken setup, not
    // a reason to skip.
    assert!(
        found,
        "the mpi feature is on but mpirun is not on PATH (Debian: openmpi-bin)"
    );
    false
}

/// `mpirun -np N janus ARGS`, one thread per rank, allowed as root (CI's user).
fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string()])
        .arg(env!("CARGO_BIN_EXE_janus"))
        .args(["-q", "--threads", "1"])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Containers forbid the cross-memory attach Open MPI's shared memory tries first.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c
}

fn run_ok(mut c: Command) -> Output {
    let out = c.output().expect("mpirun starts");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `train` arguments over the fixture data: 6 samples a step, 2 of each kind.
fn train_args(out: &Path, cache: &Path, steps: u64) -> Vec<String> {
    let data = fixtures().join("train/data.json");
    [
        "train",
        "--recipe",
        "janus-pro/stage2",
        "--model",
        &model("tiny-pro"),
        "--data",
        &data.display().to_string(),
        "--vq-cache",
        &cache.display().to_string(),
        "--batch-size",
        "6",
        "--ratio",
        "1:1:1",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "0",
        "--steps",
        &steps.to_string(),
        "--save-every",
        "1",
        "--out",
        &out.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Continues `run` to `steps` in one plain process.
fn resume_alone(run: &Path, steps: u64) {
    let (run, steps) = (run.display().to_string(), steps.to_string());
    plain(&["train", "--resume", &run, "--steps", &steps].map(String::from));
}

/// The plain single-process run.
fn plain(args: &[String]) -> Output {
    let mut a = vec!["-q", "--threads", "1"];
    a.extend(strs(args));
    let out = janus(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every f32 tensor of a checkpoint's weights, by name.
fn weights(step_dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(step_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let v = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Two runs' weights agree as the same optimisation summed in another order does: all
/// but a few values (gradients that are rounding noise around zero, which AdamW turns
/// into updates of up to its learning rate) within 1e-6, none further apart than the
/// runs' total update bound (lr per step, each).
fn assert_same_optimisation(a: &Path, b: &Path, lr: f64, steps: u64) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    let (mut total, mut off, mut worst) = (0usize, 0usize, 0f64);
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            let d = (f64::from(*x) - f64::from(*y)).abs();
            total += 1;
            off += usize::from(d > 1e-6);
            worst = worst.max(d);
        }
    }
    let frac = off as f64 / total as f64;
    assert!(
        frac < 1e-3 && worst <= 2.0 * lr * steps as f64,
        "{} vs {}: {off} of {total} values differ by more than 1e-6, worst {worst:e}",
        a.display(),
        b.display()
    );
}

fn close(a: &serde_json::Value, b: &serde_json::Value, key: &str) {
    let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
    assert!(
        (x - y).abs() <= 1e-6 * x.abs().max(1.0),
        "{key}: {x} vs {y} (step {})",
        a["step"]
    );
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs the mpi feature: cargo test --features janus-cli/mpi (Open MPI installed)"
)]
fn one_rank_is_the_plain_run_and_two_ranks_take_the_same_steps() {
    if skipped("one_rank_is_the_plain_run_and_two_ranks_take_the_same_steps") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = |n: &str| tmp.path().join(n);
    plain(&train_args(&dir("plain"), &cache, 3));
    run_ok(mpirun(1, &strs(&train_args(&dir("np1"), &cache, 3))));
    let out = run_ok(mpirun(2, &strs(&train_args(&dir("np2"), &cache, 3))));
    // Only rank 0 prints the final checkpoint.
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.trim().ends_with("step-3"), "{printed}");

    for file in ["model.safetensors", "trainer/optimizer.safetensors"] {
        let a = std::fs::read(dir("plain").join("step-3").join(file)).unwrap();
        let b = std::fs::read(dir("np1").join("step-3").join(file)).unwrap();
        assert!(a == b, "mpirun -np 1 changed {file}");
    }

    // Loss and gradient norm are of the whole batch: a rank that took the whole batch, or
    // none of it, or whose gradients were not summed, would change them.
    let (m1, m2) = (metrics(&dir("plain")), metrics(&dir("np2")));
    assert_eq!(m1.len(), 3);
    assert_eq!(m2.len(), 3, "rank 0 alone writes metrics");
    for (a, b) in m1.iter().zip(&m2) {
        for key in [
            "loss",
            "loss_understanding",
            "loss_text",
            "loss_t2i",
            "grad_norm",
        ] {
            close(a, b, key);
        }
        assert_eq!(a["tokens"], b["tokens"]);
        assert_eq!(a["samples"], b["samples"]);
    }
    assert_same_optimisation(
        &dir("plain").join("step-3"),
        &dir("np2").join("step-3"),
        1e-3,
        3,
    );
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs the mpi feature: cargo test --features janus-cli/mpi (Open MPI installed)"
)]
fn a_two_rank_run_resumes_on_one_rank() {
    if skipped("a_two_rank_run_resumes_on_one_rank") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let two = tmp.path().join("two");
    run_ok(mpirun(2, &strs(&train_args(&two, &cache, 2))));
    // The same run stopped after step 1, then continued by one process.
    let one = tmp.path().join("one");
    copy_dir(&two, &one);
    std::fs::remove_dir_all(one.join("step-2")).unwrap();
    resume_alone(&one, 2);
    let (m2, m1) = (metrics(&two), metrics(&one));
    assert_eq!(m1.len(), 2);
    close(&m2[1], &m1[1], "loss");
    close(&m2[1], &m1[1], "grad_norm");
    assert_same_optimisation(&two.join("step-2"), &one.join("step-2"), 1e-3, 1);
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs the mpi feature: cargo test --features janus-cli/mpi (Open MPI installed)"
)]
fn a_killed_rank_stops_the_job_and_keeps_the_last_checkpoint() {
    if skipped("a_killed_rank_stops_the_job_and_keeps_the_last_checkpoint") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut job = Job(mpirun(
        2,
        &strs(&train_args(&run, &tmp.path().join("cache"), 100_000)),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("step-2").is_dir() {
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rank1 = rank_pid(job.0.id(), 1).expect("rank 1 is a child of mpirun");
    // SAFETY: kill(2) on a process this test started (through mpirun).
    assert_eq!(unsafe { libc::kill(rank1, libc::SIGKILL) }, 0);
    let status = wait_exit(&mut job.0, Duration::from_secs(60), "mpirun after a kill");
    let mut stderr = String::new();
    std::io::Read::read_to_string(job.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the job went on without rank 1");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "mpirun does not name the lost rank: {stderr}"
    );

    // The latest checkpoint loads and the run continues from it on one process.
    let last = janus::train::checkpoint::list(&run).unwrap();
    let (step, _) = last.last().cloned().unwrap();
    assert!(step >= 2);
    resume_alone(&run, step + 1);
    assert!(run.join(format!("step-{}", step + 1)).is_dir());
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs the mpi feature: cargo test --features janus-cli/mpi (Open MPI installed)"
)]
fn sigusr1_stops_every_rank_after_the_same_step_with_a_checkpoint() {
    if skipped("sigusr1_stops_every_rank_after_the_same_step_with_a_checkpoint") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut args = train_args(&run, &tmp.path().join("cache"), 100_000);
    // No periodic checkpoints: the one at the end comes from the stop.
    let at = args.iter().position(|a| a == "--save-every").unwrap();
    args[at + 1] = "0".into();
    let mut job = Job(mpirun(2, &strs(&args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let steps_done =
        || std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
    while steps_done() < 2 {
        assert!(Instant::now() < deadline, "no step within 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    // mpirun passes SIGUSR1 on to every rank.
    // SAFETY: kill(2) on the mpirun this test started.
    assert_eq!(unsafe { libc::kill(job.0.id() as i32, libc::SIGUSR1) }, 0);
    let status = wait_exit(&mut job.0, Duration::from_secs(60), "mpirun after SIGUSR1");
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(job.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(job.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    let steps = metrics(&run).len() as u64;
    let ckpts = janus::train::checkpoint::list(&run).unwrap();
    assert_eq!(ckpts.len(), 1, "{ckpts:?}");
    assert_eq!(ckpts[0].0, steps, "the checkpoint is of the last step");
    assert!(out.trim().ends_with(&format!("step-{steps}")), "{out}");
}

/// An `mpirun` job the test started: stopped with SIGTERM (which mpirun passes on to its
/// ranks) if the test fails before it ends.
struct Job(std::process::Child);

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on the mpirun this test started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            // No panic here (this may run while a failed test unwinds).
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The child of `mpirun` (pid `parent`) that is rank `rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<i32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4 (after the parenthesised name) is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst: PathBuf = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
