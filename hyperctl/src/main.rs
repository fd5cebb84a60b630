//! `hyperctl`: run container images in KVM micro-VMs with one command, no daemon.
//! Images go into a content-addressed store (runv-image), containers run through
//! `runv run`. See docs/hyperctl.md.

mod cli;
mod commands;
mod containers;
mod runv;
mod signals;
mod tty;

use clap::Parser;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // docker exits 125 when hyperctl itself fails, leaving 1..124 to the container.
            std::process::exit(if e.use_stderr() { 125 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYPERCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::dispatch(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hyperctl: {}", runv_runtime::log::error_text(&e));
            std::process::exit(125);
        }
    }
}
