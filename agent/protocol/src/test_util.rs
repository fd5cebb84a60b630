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

/// A Docker-generated config.json (docker run -v ... --device ..., Docker 24), shared
/// with runv's spec-rewrite tests (tests/data/).
pub const DOCKER_CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/docker-config.json"
));
