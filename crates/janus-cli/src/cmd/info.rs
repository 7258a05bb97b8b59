//! `janus info`.

use anyhow::{bail, Result};
use clap::Args;

use crate::progress::Progress;

/// Arguments of `janus info`.
#[derive(Args, Debug)]
pub struct InfoArgs {}

/// Runs `janus info`.
pub fn run(_a: InfoArgs, _progress: &Progress) -> Result<()> {
    bail!("janus info is not implemented yet")
}
