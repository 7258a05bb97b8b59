//! Reading the user's lines (a line editor on a terminal, plain lines otherwise) and
//! Ctrl-C.

use std::io::{BufRead, StdinLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustyline::config::{Behavior, Config};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

/// What reading the next line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// Ctrl-C at the prompt (line editor only).
    Interrupted,
    /// Ctrl-D or the end of stdin.
    Eof,
}

/// The source of the user's lines.
pub enum LineReader {
    /// Stdin is a terminal: line editing and history. The editor talks to `/dev/tty`
    /// so that stdout carries only answers.
    Editor(Box<DefaultEditor>),
    /// Stdin is a file or a pipe: one line at a time, no prompt (scripts).
    Plain(StdinLock<'static>),
}

impl LineReader {
    /// A line editor when `interactive`, plain stdin lines otherwise.
    pub fn new(interactive: bool) -> Result<Self> {
        if !interactive {
            return Ok(LineReader::Plain(std::io::stdin().lock()));
        }
        let config = Config::builder()
            .behavior(Behavior::PreferTerm)
            .auto_add_history(true)
            .max_history_size(1000)
            .context("configuring the line editor")?
            .build();
        let editor = DefaultEditor::with_config(config).context("starting the line editor")?;
        Ok(LineReader::Editor(Box::new(editor)))
    }

    /// Reads the next line, showing `prompt` when editing.
    pub fn read(&mut self, prompt: &str) -> Result<Input> {
        match self {
            LineReader::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Input::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
                Err(ReadlineError::Eof) => Ok(Input::Eof),
                Err(e) => Err(e).context("reading the terminal"),
            },
            LineReader::Plain(stdin) => {
                let mut buf = Vec::new();
                let n = stdin.read_until(b'\n', &mut buf).context("reading stdin")?;
                if n == 0 {
                    return Ok(Input::Eof);
                }
                if buf.ends_with(b"\n") {
                    buf.pop();
                    if buf.ends_with(b"\r") {
                        buf.pop();
                    }
                }
                // Invalid UTF-8 is a typing accident, not a reason to end the session.
                Ok(Input::Line(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
    }
}

/// How close two Ctrl-Cs at the prompt must be to end the program.
pub const DOUBLE_PRESS: Duration = Duration::from_secs(2);

/// What Ctrl-C at the prompt prints.
pub const PROMPT_HINT: &str = "(Ctrl-C again to leave, or Ctrl-D / /quit)";

/// Ctrl-C state shared by the signal handler and the chat loop.
///
/// During an answer Ctrl-C only raises a flag that the streaming callback reads; away
/// from an answer it is a "Ctrl-C at the prompt": the first prints a hint, a second one
/// within [`DOUBLE_PRESS`] ends the program.
#[derive(Debug, Default)]
pub struct Interrupts {
    answering: AtomicBool,
    stop: AtomicBool,
    last_at_prompt: Mutex<Option<Instant>>,
}

impl Interrupts {
    /// Installs the SIGINT handler. Ending the program from the handler only happens
    /// between answers, when the line editor has given the terminal back (during
    /// `readline` the editor turns Ctrl-C into [`Input::Interrupted`] itself).
    pub fn install() -> Result<Arc<Self>> {
        let state = Arc::new(Self::default());
        let handler_state = Arc::clone(&state);
        ctrlc::set_handler(move || {
            if handler_state.answering.load(Ordering::SeqCst) {
                handler_state.stop.store(true, Ordering::SeqCst);
            } else if handler_state.at_prompt() {
                eprintln!();
                std::process::exit(0);
            } else {
                eprintln!("\n{PROMPT_HINT}");
            }
        })
        .context("installing the Ctrl-C handler")?;
        Ok(state)
    }

    /// An answer starts: Ctrl-C now stops it.
    pub fn begin_answer(&self) {
        self.stop.store(false, Ordering::SeqCst);
        self.answering.store(true, Ordering::SeqCst);
    }

    /// Whether Ctrl-C asked to stop the current answer.
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The answer is over; returns whether Ctrl-C stopped it.
    pub fn end_answer(&self) -> bool {
        self.answering.store(false, Ordering::SeqCst);
        self.stop.swap(false, Ordering::SeqCst)
    }

    /// The user entered a line: an earlier Ctrl-C at the prompt no longer counts.
    pub fn line_entered(&self) {
        *self
            .last_at_prompt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// Records a Ctrl-C away from an answer; true when it is the second within
    /// [`DOUBLE_PRESS`], i.e. the user wants to leave.
    pub fn at_prompt(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last_at_prompt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let again = last.is_some_and(|t| now.duration_since(t) <= DOUBLE_PRESS);
        *last = Some(now);
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_ctrl_c_at_the_prompt_leaves() {
        let s = Interrupts::default();
        assert!(!s.at_prompt());
        assert!(s.at_prompt());
        s.line_entered();
        assert!(!s.at_prompt());
    }

    #[test]
    fn stop_flag_is_per_answer() {
        let s = Interrupts::default();
        s.begin_answer();
        assert!(!s.should_stop());
        s.stop.store(true, Ordering::SeqCst);
        assert!(s.should_stop());
        assert!(s.end_answer());
        s.begin_answer();
        assert!(!s.should_stop());
        assert!(!s.end_answer());
    }
}
