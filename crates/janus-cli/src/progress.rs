//! Progress on stderr.

/// Progress reporting for one command run.
#[derive(Debug, Clone)]
pub struct Progress {
    quiet: bool,
}

/// An indeterminate task in progress.
#[derive(Debug)]
pub struct Spinner {
    quiet: bool,
}

impl Spinner {
    /// Marks the task done.
    pub fn finish(self) {
        let _ = self.quiet;
    }
}

impl Progress {
    /// `quiet` silences everything.
    pub fn new(quiet: bool) -> Self {
        Self { quiet }
    }

    /// Whether output is silenced.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Starts an indeterminate task.
    pub fn spinner(&self, _msg: &str) -> Spinner {
        Spinner { quiet: self.quiet }
    }

    /// A step counter line (`label done/total`).
    pub fn step(&self, label: &str, done: usize, total: usize) {
        if !self.quiet && (done % 48 == 0 || done == total) {
            eprintln!("{label} {done}/{total}");
        }
    }
}
