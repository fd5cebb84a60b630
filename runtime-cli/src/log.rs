//! runc's logging: `--log FILE` and `--log-format text|json`.
//!
//! JSON lines are `{"level":"error","msg":"...","time":"<RFC 3339>"}` (containerd's
//! runc shim reads the last error line of the file); text lines are logrus's
//! `time="..." level=error msg="..."`. Every line written to the file is in the chosen
//! format, nothing else, so a JSON reader never meets a foreign line.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// One log line in `format`, without the newline.
pub fn format_line(format: Format, level: &str, msg: &str, time: &str) -> String {
    match format {
        Format::Json => serde_json::json!({"level": level, "msg": msg, "time": time}).to_string(),
        Format::Text => {
            let quoted = serde_json::Value::String(msg.to_owned()).to_string();
            format!("time=\"{time}\" level={level} msg={quoted}")
        }
    }
}

/// Now, RFC 3339 in UTC with seconds (logrus's default).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Where log lines go.
pub struct Sink {
    format: Format,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Sink {
    /// The log file (appended), or stderr.
    pub fn open(path: Option<&Path>, format: Format) -> std::io::Result<Sink> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Ok(Sink {
            format,
            out: Mutex::new(out),
        })
    }

    pub fn write(&self, level: &str, msg: &str) {
        let line = format_line(self.format, level, msg, &now_rfc3339());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

struct SinkLayer {
    sink: std::sync::Arc<Sink>,
    max: Level,
}

#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let name = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        self.sink.write(name, v.0.trim_start());
    }
}

/// Installs the global subscriber writing to `sink`: warnings and errors, and with
/// `debug` everything down to debug.
pub fn install(sink: std::sync::Arc<Sink>, debug: bool) {
    let max = if debug { Level::DEBUG } else { Level::WARN };
    let subscriber = tracing_subscriber::registry().with(SinkLayer { sink, max });
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Opens a log file for appending, creating it (used by the shim for its own file).
pub fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// An error and its causes as one line, "a: b: c", leaving out a cause whose text the
/// line already holds (the protocol's errors repeat their source in their own text).
/// What runv and hyperctl print for a failed command.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_not_repeated() {
        let e = anyhow::anyhow!("inner")
            .context("outer: inner")
            .context("top");
        assert_eq!(super::error_text(&e), "top: outer: inner");
        let e = anyhow::anyhow!("root cause").context("reading x");
        assert_eq!(super::error_text(&e), "reading x: root cause");
    }

    use super::*;

    #[test]
    fn json_and_text_lines() {
        let t = "2026-01-02T03:04:05Z";
        assert_eq!(
            format_line(Format::Json, "error", "container \"x\" does not exist", t),
            r#"{"level":"error","msg":"container \"x\" does not exist","time":"2026-01-02T03:04:05Z"}"#
        );
        assert_eq!(
            format_line(Format::Text, "error", "container does not exist", t),
            r#"time="2026-01-02T03:04:05Z" level=error msg="container does not exist""#
        );
        let now = now_rfc3339();
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
    }

    #[test]
    fn sink_appends_json_lines_to_a_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log.json");
        let s = Sink::open(Some(&p), Format::Json).unwrap();
        s.write("warning", "first");
        s.write("error", "second");
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["level"], "error");
        assert_eq!(lines[1]["msg"], "second");
    }
}
