//! `hyperctl pull [--insecure] [--platform OS/ARCH] NAME[:TAG|@DIGEST]`: fetch an image
//! from an OCI distribution registry into the store (runv-image's `registry::pull`), with
//! a live bar per layer on a terminal and plain lines otherwise. Ctrl-C (or SIGTERM) drops
//! the pull: the blobs it stored are removed again, partial downloads never were blobs.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runv_image::registry::{Progress, PullOptions, Pulled, RegistryError};
use runv_image::{Digest, Platform};

pub fn pull(root: &Path, name: &str, insecure: bool, platform: Option<&str>) -> Result<i32> {
    let platform = match platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::default(),
    };
    let opts = PullOptions { insecure, platform };
    let store = super::open_store(root)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime for the download")?;
    let mut progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    };
    let outcome = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        // Dropping the pull future on a signal drops its blob writers and its record of
        // created blobs, which remove what it had stored.
        anyhow::Ok(tokio::select! {
            r = runv_image::pull(&store, name, &opts, progress.as_mut()) => Outcome::Finished(r),
            _ = tokio::signal::ctrl_c() => Outcome::Signalled(130),
            _ = term.recv() => Outcome::Signalled(143),
        })
    })?;
    drop(progress);
    match outcome {
        Outcome::Finished(Ok(pulled)) => {
            println!("Pulled {}, digest {}", pulled.name, pulled.digest);
            Ok(0)
        }
        Outcome::Finished(Err(e)) => {
            if let RegistryError::Extract { .. } = e {
                // Layers extracted before the bad one stay cached until collected.
                if let Err(gc) = store.gc() {
                    tracing::warn!(error = %gc, "could not collect the layers of a rejected image");
                }
            }
            // Most errors name the image already; the others get it in front.
            let text = e.to_string();
            let e = anyhow::Error::new(e);
            if text.contains(name)
                || name
                    .parse::<runv_image::reference::Reference>()
                    .is_ok_and(|r| text.contains(&r.name()))
            {
                Err(e)
            } else {
                Err(e.context(format!("pull {name}")))
            }
        }
        Outcome::Signalled(code) => {
            eprintln!("hyperctl: pull {name} interrupted; nothing of it was kept");
            Ok(code)
        }
    }
}

/// How the pull ended.
enum Outcome {
    Finished(Result<Pulled, RegistryError>),
    /// Interrupted; the exit code (128 + signal).
    Signalled(i32),
}

/// The first 12 hex digits, as docker shows layers.
fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

/// Plain lines on stderr, for logs and pipes.
struct Lines;

impl Lines {
    fn line(&self, text: String) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}

impl Progress for Lines {
    fn exists(&mut self, d: &Digest, _size: u64) {
        self.line(format!("{}: already exists", short(d)));
    }
    fn start(&mut self, d: &Digest, size: u64) {
        self.line(format!("{}: downloading {size} bytes", short(d)));
    }
    fn advance(&mut self, _d: &Digest, _done: u64) {}
    fn done(&mut self, d: &Digest) {
        self.line(format!("{}: done", short(d)));
    }
}

/// One live line per layer on a terminal (stderr).
struct Bars {
    multi: MultiProgress,
    bars: Vec<(Digest, ProgressBar)>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Vec::new(),
        }
    }

    fn bar(&mut self, d: &Digest) -> ProgressBar {
        if let Some((_, b)) = self.bars.iter().find(|(x, _)| x == d) {
            return b.clone();
        }
        // Styled before it is added, so that indicatif's default bar is never drawn.
        let b = self.multi.add(
            ProgressBar::new(0)
                .with_style(text_style())
                .with_prefix(short(d)),
        );
        self.bars.push((d.clone(), b.clone()));
        b
    }
}

fn text_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").expect("static template")
}

impl Progress for Bars {
    fn layers(&mut self, layers: &[(Digest, u64)]) {
        for (d, _) in layers {
            let b = self.bar(d);
            b.set_style(text_style());
            b.set_message("waiting");
        }
    }
    fn exists(&mut self, d: &Digest, _size: u64) {
        let b = self.bar(d);
        b.set_style(text_style());
        b.finish_with_message("already exists");
    }
    fn start(&mut self, d: &Digest, size: u64) {
        let b = self.bar(d);
        b.set_length(size);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix}: downloading [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(200));
    }
    fn advance(&mut self, d: &Digest, done: u64) {
        self.bar(d).set_position(done);
    }
    fn done(&mut self, d: &Digest) {
        let b = self.bar(d);
        let size = b.length().unwrap_or(0);
        b.set_style(text_style());
        b.finish_with_message(format!("done ({size} bytes)"));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        // A failed or interrupted pull leaves its bars as they were, not spinning.
        for (_, b) in &self.bars {
            if !b.is_finished() {
                b.abandon();
            }
        }
        // indicatif leaves the cursor at the end of the last bar's line.
        if !self.bars.is_empty() && !self.multi.is_hidden() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests() {
        let d = Digest::of(b"abc");
        assert_eq!(short(&d), "ba7816bf8f01");
    }

    #[test]
    fn bad_platform_is_refused_before_anything() {
        let dir = tempfile::tempdir().unwrap();
        let err = pull(dir.path(), "busybox", false, Some("linux")).unwrap_err();
        assert!(err.to_string().contains("\"linux\""), "{err}");
        assert!(!dir.path().join("images").exists());
    }

    #[test]
    fn bad_name_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = pull(dir.path(), "Bad/Name", true, None).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("\"Bad/Name\""), "{text}");
        let blobs = std::fs::read_dir(dir.path().join("images/blobs/sha256")).unwrap();
        assert_eq!(blobs.count(), 0);
    }
}
