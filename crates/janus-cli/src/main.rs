//! `janus`: chat about images and generate images with DeepSeek Janus / Janus-Pro.

mod args;
mod cmd;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "janus",
    version,
    about = "DeepSeek Janus / Janus-Pro: understand and generate images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// CPU threads to use (default: all cores, shared by the ranks mpirun starts on one
    /// machine).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer a question about zero or more images.
    Understand(cmd::understand::UnderstandArgs),
    /// Generate images from a text prompt.
    Generate(cmd::generate::GenerateArgs),
    /// Talk with the model in the terminal (multi-turn, images with /image).
    Chat(cmd::chat::ChatArgs),
    /// The VQ image tokenizer on its own: image to codes and codes to image.
    #[command(subcommand)]
    Vq(cmd::vq::VqCommand),
    /// Describe a checkpoint: layout, files, dimensions, parameters, dtypes, tasks.
    Info(cmd::info::InfoArgs),
    /// Write a safetensors copy of a checkpoint for faster memory-mapped loading.
    Convert(cmd::convert::ConvertArgs),
    /// Serve the model over HTTP: an OpenAI-compatible API and a web page.
    Serve(cmd::serve::ServeArgs),
    /// Time the standard workloads stage by stage (vision, prefill, decode, t2i, VQ).
    Bench(cmd::bench::BenchArgs),
    /// Train one stage of the Janus / Janus-Pro recipes (resumable); `train plot` draws
    /// a run's curves.
    Train(Box<cmd::train::TrainArgs>),
    /// Training data: check a manifest, VQ-encode its images ahead of time.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JANUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Ranks that mpirun / srun start on one machine share its cores.
    let launch = janus::dist::Launch::from_env();
    if let Err(e) = args::set_threads(cli.threads.or(launch.default_threads())) {
        return report(e);
    }
    // Only rank 0 of a data-parallel job reports progress.
    let progress = progress::Progress::new(cli.quiet || launch.rank > 0);
    let result = match cli.command {
        Command::Understand(a) => cmd::understand::run(a, &progress),
        Command::Generate(a) => cmd::generate::run(a, &progress),
        Command::Chat(a) => cmd::chat::run(a, &progress),
        Command::Vq(c) => cmd::vq::run(c, &progress),
        Command::Info(a) => cmd::info::run(a, &progress),
        Command::Convert(a) => cmd::convert::run(a, &progress),
        Command::Serve(a) => cmd::serve::run(a, &progress),
        Command::Bench(a) => cmd::bench::run(a, &progress),
        Command::Train(a) => cmd::train::run(*a, &progress),
        Command::Data(c) => cmd::data::run(c, &progress),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`janus info | head -1`) makes
/// `println!` panic. Restore the default action: the process ends quietly, as `cat` does.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints one line: the chain of causes, without a backtrace.
fn report(e: anyhow::Error) -> ExitCode {
    let mut msg = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        // Errors that print their source (the library's `path: io error`) would repeat it.
        if msg.ends_with(&cause) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&cause);
    }
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}
