//! `janus convert`.

use anyhow::{bail, Result};
use clap::Args;

use crate::progress::Progress;

/// Arguments of `janus convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {}

/// Runs `janus convert`.
pub fn run(_a: ConvertArgs, _progress: &Progress) -> Result<()> {
    bail!("janus convert is not implemented yet")
}
