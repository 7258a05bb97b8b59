//! `janus vq encode|decode`.

use anyhow::{bail, Result};
use clap::Subcommand;

use crate::progress::Progress;

/// The VQ subcommands.
#[derive(Subcommand, Debug)]
pub enum VqCommand {}

/// Runs a `janus vq` subcommand.
pub fn run(_c: VqCommand, _progress: &Progress) -> Result<()> {
    bail!("janus vq is not implemented yet")
}
