//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod data;
pub mod generate;
pub mod info;
pub mod serve;
pub mod train;
pub mod understand;
pub mod vq;
