//! `janus chat`.

use anyhow::{bail, Result};
use clap::Args;

use crate::progress::Progress;

/// Arguments of `janus chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {}

/// Runs `janus chat`.
pub fn run(_a: ChatArgs, _progress: &Progress) -> Result<()> {
    bail!("janus chat is not implemented yet")
}
