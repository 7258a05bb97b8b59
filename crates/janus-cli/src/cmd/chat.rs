//! `janus chat`: a multi-turn conversation in the terminal.
//!
//! Answers stream to stdout; the prompt (on the terminal itself) and status lines (on
//! stderr) stay out of it, so `janus chat ... > answers.txt` or
//! `printf 'hi\n' | janus chat ...` give just the answers. Every turn re-runs the whole
//! conversation through [`Pipeline::understand`].

mod command;
mod conversation;
mod input;

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use janus::engine::Finish;
use janus::pipeline::{Pipeline, UnderstandOptions};
use janus::processor::{self, Message, DEFAULT_SYSTEM_PROMPT};

use self::command::{Command, HELP};
use self::conversation::{Attachment, Conversation};
use self::input::{Input, Interrupts, LineReader, PROMPT_HINT};
use crate::args::{DeviceArgs, ModelArgs};
use crate::cmd::understand::SamplingArgs;
use crate::progress::Progress;

/// Arguments of `janus chat`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// System prompt [default: the reference's understanding system prompt; "" for none].
    #[arg(long)]
    system: Option<String>,
    /// An image to attach to the first message (repeatable).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Runs `janus chat`.
pub fn run(a: ChatArgs, progress: &Progress) -> Result<()> {
    let sampling = a.sampling.params()?;
    // Images named on the command line are checked before the (slow) model load.
    let pending = a
        .images
        .iter()
        .map(|p| Attachment::load(p))
        .collect::<Result<Vec<_>>>()?;
    let system = a
        .system
        .clone()
        .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let pipe = a.model.load(progress, &a.device)?;
    let interactive = std::io::stdin().is_terminal();
    let mut reader = LineReader::new(interactive)?;
    // Installed after loading, so Ctrl-C during a long load still ends the program.
    let interrupts = Interrupts::install()?;
    let mut session = Session {
        opts: UnderstandOptions {
            sampling,
            max_new_tokens: a.max_new_tokens,
            system: (!system.is_empty()).then_some(system),
        },
        pipe,
        model_id: a.model.model_id(),
        conversation: Conversation::default(),
        pending,
        interrupts: Arc::clone(&interrupts),
        quiet: progress.is_quiet(),
        interactive,
    };
    if interactive {
        session.status(&format!(
            "chatting with {}: /help lists the commands, Ctrl-D leaves",
            session.model_id
        ));
        if !session.pending.is_empty() {
            session.status(&format!(
                "{} image(s) go with your first message",
                session.pending.len()
            ));
        }
    }
    loop {
        let prompt = match session.pending.len() {
            0 => "> ".to_string(),
            1 => "[1 image] > ".to_string(),
            n => format!("[{n} images] > "),
        };
        let line = match reader.read(&prompt)? {
            Input::Line(line) => line,
            Input::Eof => {
                if interactive {
                    eprintln!();
                }
                break;
            }
            Input::Interrupted => {
                if interrupts.at_prompt() {
                    break;
                }
                eprintln!("{PROMPT_HINT}");
                continue;
            }
        };
        interrupts.line_entered();
        match Command::parse(&line) {
            Ok(cmd) => {
                if session.handle(cmd)?.is_break() {
                    break;
                }
            }
            Err(msg) => error_line(&msg),
        }
    }
    Ok(())
}

/// A running chat.
struct Session {
    pipe: Pipeline,
    opts: UnderstandOptions,
    /// The model as the user named it, for `/save`.
    model_id: String,
    conversation: Conversation,
    /// Images attached for the next message.
    pending: Vec<Attachment>,
    interrupts: Arc<Interrupts>,
    quiet: bool,
    interactive: bool,
}

impl Session {
    /// Carries out one command. Only failures that end the session (stdout gone) are
    /// errors; anything wrong with the input is reported and the chat goes on.
    fn handle(&mut self, cmd: Command) -> Result<ControlFlow<()>> {
        match cmd {
            Command::Nothing => {}
            Command::Quit => return Ok(ControlFlow::Break(())),
            Command::Help => eprintln!("{HELP}"),
            Command::Reset => {
                self.conversation.clear();
                self.pending.clear();
                self.status("[new conversation]");
            }
            Command::Image(path) => match Attachment::load(&path) {
                Ok(att) => {
                    self.status(&format!(
                        "[attached {} to your next message]",
                        att.describe()
                    ));
                    self.pending.push(att);
                }
                Err(e) => error_line(&one_line(&e)),
            },
            Command::Save(path) => self.save(&path),
            Command::Say(text) => self.say(text)?,
        }
        Ok(ControlFlow::Continue(()))
    }

    fn save(&self, path: &Path) {
        match self
            .conversation
            .save(path, &self.model_id, self.opts.system.as_deref())
        {
            Ok(()) => self.status(&format!(
                "[saved {} messages to {}]",
                self.conversation.len(),
                path.display()
            )),
            Err(e) => error_line(&one_line(&e)),
        }
    }

    /// Sends `text` (with the attached images) and streams the answer to stdout.
    fn say(&mut self, text: String) -> Result<()> {
        let images = std::mem::take(&mut self.pending);
        self.conversation.push_user(text, images);
        let messages = self.conversation.messages();
        let max_pos = self.pipe.config().text.max_position_embeddings;
        let prompt_len = match self.prompt_len(&messages) {
            Ok(n) => n,
            Err(e) => {
                self.conversation.pop();
                error_line(&format!("{e}; the message was not sent"));
                return Ok(());
            }
        };
        if prompt_len >= max_pos {
            self.conversation.pop();
            let per_image = self.pipe.config().vision.num_image_tokens();
            let images = processor::images_in_order(&messages).count();
            let note = if images > 0 {
                format!(", {images} image(s) of {per_image} tokens each included")
            } else {
                String::new()
            };
            error_line(&format!(
                "the conversation would be {prompt_len} tokens long{note}, but the model's \
                 context holds {max_pos}; the message was not sent. /reset starts a new \
                 conversation"
            ));
            return Ok(());
        }
        let room = max_pos - prompt_len;
        if room < self.opts.max_new_tokens {
            self.status(&format!(
                "[only {room} tokens of context left: the answer may be cut short; /reset \
                 starts a new conversation]"
            ));
        }

        let mut stdout = std::io::stdout().lock();
        let mut write_err = None;
        let interrupts = Arc::clone(&self.interrupts);
        interrupts.begin_answer();
        let result = self.pipe.understand(&messages, &self.opts, |piece| {
            if let Err(e) = stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush())
            {
                write_err = Some(e);
                return ControlFlow::Break(());
            }
            if interrupts.should_stop() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        interrupts.end_answer();
        if let Some(e) = write_err {
            return Err(e).context("cannot write the answer to stdout");
        }
        writeln!(stdout)
            .and_then(|()| stdout.flush())
            .context("cannot write the answer to stdout")?;
        drop(stdout);
        match result {
            Ok(answer) => {
                let context_full = answer.finish == Finish::Length
                    && prompt_len + answer.token_ids.len() >= max_pos;
                self.conversation.push_assistant(answer.text);
                if answer.finish == Finish::Cancelled {
                    self.status("[stopped; the partial answer stays in the conversation]");
                }
                if context_full {
                    error_line(&format!(
                        "the conversation has filled the model's context ({max_pos} tokens) \
                         and the answer was cut off; /reset starts a new conversation"
                    ));
                }
            }
            Err(e) => {
                self.conversation.pop();
                error_line(&format!("{e}; the message was dropped"));
            }
        }
        if self.interactive {
            eprintln!();
        }
        Ok(())
    }

    /// Length in tokens (images expanded) of the prompt for `messages`.
    fn prompt_len(&self, messages: &[Message]) -> janus::Result<usize> {
        let prepared = processor::prepare_understanding(
            &self.pipe.tokenizer,
            messages,
            self.opts.system.as_deref(),
            self.pipe.config().vision.num_image_tokens(),
        )?;
        Ok(prepared.input_ids.len())
    }

    /// A status line on stderr, unless `--quiet`.
    fn status(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// An error that does not end the chat, on stderr.
fn error_line(msg: &str) {
    eprintln!("error: {msg}");
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
