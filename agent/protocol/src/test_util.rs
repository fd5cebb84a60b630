//! Test helpers: an in-memory stream and frame splitting.

use std::io::{self, Cursor, Read, Write};

use serde::de::DeserializeOwned;

use crate::frame::{read_frame, FrameError, MAX_FRAME_LEN};

/// Reads from a fixed input, records everything written.
#[derive(Debug)]
pub struct Duplex {
    pub input: Cursor<Vec<u8>>,
    pub output: Vec<u8>,
}

impl Duplex {
    pub fn new(input: Vec<u8>) -> Self {
        Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits `bytes` into frames and decodes each as `T`; panics on anything else.
pub fn frames_of<T: DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    let mut c = Cursor::new(bytes);
    let mut out = Vec::new();
    loop {
        match read_frame(&mut c, MAX_FRAME_LEN) {
            Ok(body) => out.push(serde_json::from_slice(&body).unwrap()),
            Err(FrameError::Closed) => return out,
            Err(e) => panic!("bad frame in output: {e}"),
        }
    }
}

/// A raw frame around `body`.
pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A Docker-generated config.json (docker run -v ... --device ..., Docker 24),
/// trimmed of nothing that matters for the rewrite.
pub const DOCKER_CONFIG: &str = include_str!("testdata/docker-config.json");

/// A containerd CRI app-container config.json (joins the pod's namespaces).
pub const CRI_CONFIG: &str = include_str!("testdata/cri-config.json");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "runv-agent-protocol-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Creates `rel` (and its parents) as a directory.
    pub fn dir(&self, rel: &str) -> std::path::PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Creates `rel` (and its parents) as a file holding `content`.
    pub fn file(&self, rel: &str, content: &str) -> std::path::PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
