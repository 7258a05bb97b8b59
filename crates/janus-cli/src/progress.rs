//! Progress on stderr: indicatif bars on a terminal, plain lines otherwise, nothing with
//! `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown for one command run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    /// Redrawn bars (stderr is a terminal).
    Bars,
    /// One line per milestone (stderr is a file or pipe).
    Lines,
}

/// Progress reporting for one command run.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// `quiet` silences everything; otherwise bars when stderr is a terminal, plain lines
    /// when it is not.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Self { mode }
    }

    /// Whether output is silenced.
    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// Whether bars are redrawn in place (stderr is a terminal).
    pub fn is_terminal(&self) -> bool {
        self.mode == Mode::Bars
    }

    /// Starts an indeterminate task (loading, prefill).
    pub fn spinner(&self, msg: &str) -> Bar {
        let bar = match self.mode {
            Mode::Bars => {
                let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_message(msg.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                Some(pb)
            }
            Mode::Lines => {
                eprintln!("{msg} ...");
                None
            }
            Mode::Quiet => None,
        };
        Bar::new(self.mode, bar, msg, 0, Unit::Steps)
    }

    /// A bar over `total` steps (image-generation steps, tokens) with rate and ETA.
    pub fn steps(&self, label: &str, total: u64) -> Bar {
        self.bar(label, total, Unit::Steps)
    }

    /// A bar over `total` bytes (downloads, conversions) with throughput and ETA.
    pub fn bytes(&self, label: &str, total: u64) -> Bar {
        self.bar(label, total, Unit::Bytes)
    }

    fn bar(&self, label: &str, total: u64, unit: Unit) -> Bar {
        let pb = (self.mode == Mode::Bars).then(|| {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = match unit {
                Unit::Steps => "{msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
                Unit::Bytes => {
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})"
                }
            };
            pb.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_message(label.to_string());
            pb
        });
        Bar::new(self.mode, pb, label, total, unit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Steps,
    Bytes,
}

/// One task's progress. Finishing (or dropping) it clears the bar.
#[derive(Debug)]
pub struct Bar {
    mode: Mode,
    pb: Option<ProgressBar>,
    label: String,
    total: u64,
    unit: Unit,
    started: Instant,
    pos: u64,
    /// Next position (in tenths of `total`) at which plain-line mode prints.
    next_tenth: u64,
}

impl Bar {
    fn new(mode: Mode, pb: Option<ProgressBar>, label: &str, total: u64, unit: Unit) -> Self {
        Self {
            mode,
            pb,
            label: label.to_string(),
            total,
            unit,
            started: Instant::now(),
            pos: 0,
            next_tenth: 1,
        }
    }

    /// Sets the absolute position.
    pub fn set(&mut self, pos: u64) {
        self.pos = pos;
        if let Some(pb) = &self.pb {
            pb.set_position(pos);
        }
        if self.mode == Mode::Lines && self.total > 0 {
            // One line per 10% in logs.
            if pos * 10 >= self.next_tenth * self.total {
                self.next_tenth = pos * 10 / self.total + 1;
                eprintln!("{}", self.line(pos));
            }
        }
    }

    fn line(&self, pos: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        match self.unit {
            Unit::Steps => format!(
                "{}: {pos}/{} ({:.1}/s)",
                self.label,
                self.total,
                pos as f64 / secs
            ),
            Unit::Bytes => format!(
                "{}: {}/{} ({}/s)",
                self.label,
                HumanBytes(pos),
                HumanBytes(self.total),
                HumanBytes((pos as f64 / secs) as u64)
            ),
        }
    }

    /// Replaces the text shown before the bar (terminal only).
    pub fn set_message(&self, msg: String) {
        if let Some(pb) = &self.pb {
            pb.set_message(msg);
        }
    }

    /// Marks the task done and clears the bar.
    pub fn finish(self) {}
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(pb) = self.pb.take() {
            pb.finish_and_clear();
        }
    }
}
