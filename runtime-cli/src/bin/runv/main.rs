//! `runv`: a runc-compatible OCI runtime whose containers each run in a KVM micro-VM.
//! See docs/runtime.md.

mod cli;
mod commands;

use std::sync::Arc;

use clap::Parser;
use runv_runtime::log::{format_line, now_rfc3339, Format, Sink};

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // runc exits 1 on incorrect usage; help and version are not errors.
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let format = match cli.global.log_format {
        cli::LogFormat::Text => Format::Text,
        cli::LogFormat::Json => Format::Json,
    };
    let sink = match Sink::open(cli.global.log.as_deref(), format) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let p = cli
                .global
                .log
                .as_deref()
                .unwrap_or(std::path::Path::new("-"));
            eprintln!("runv: opening log file {}: {e}", p.display());
            std::process::exit(1);
        }
    };
    runv_runtime::log::install(sink.clone(), cli.global.debug);
    match commands::dispatch(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = runv_runtime::log::error_text(&e);
            // As runc: with --log the line goes to the log and the bare message to
            // stderr; without, stderr gets the formatted line.
            if cli.global.log.is_some() {
                sink.write("error", &msg);
                eprintln!("{msg}");
            } else {
                eprintln!("{}", format_line(format, "error", &msg, &now_rfc3339()));
            }
            std::process::exit(1);
        }
    }
}
