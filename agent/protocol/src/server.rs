//! Agent side: reading requests and writing answers over any `Read + Write`.
//!
//! [`Server`] is the simple single-threaded form: it does the handshake, answers
//! undecodable requests itself, and on a broken frame sends an error answer before
//! reporting the failure (the caller then closes). Agents that answer from several
//! threads use [`read_request`] and [`write_response`] on cloned stream halves.

use std::io::{Read, Write};

use crate::frame::{encode_frame, read_frame, write_encoded, FrameError, MAX_FRAME_LEN};
use crate::handshake::{server_handshake, HandshakeError};
use crate::message::{
    decode_request, error_for_frame, ErrorCode, ErrorResponse, RequestDecodeError, RequestFrame,
    Response, ResponseFrame,
};

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadRequestError {
    /// The stream is broken (oversized, empty, truncated or non-JSON frame, I/O
    /// error): answer with [`error_for_frame`] under id `None`, then close.
    #[error(transparent)]
    Frame(FrameError),
    /// A JSON frame that is not a valid request. The stream is in sync: answer
    /// `error` under `id` and read on.
    #[error("invalid request (id {id:?}): {}", .error.message)]
    Invalid {
        id: Option<u64>,
        error: ErrorResponse,
    },
}

/// Reads one request; `Ok(None)` when the peer closed at a frame boundary.
pub fn read_request<R: Read + ?Sized>(
    r: &mut R,
    max_frame: u32,
) -> Result<Option<RequestFrame>, ReadRequestError> {
    let body = match read_frame(r, max_frame) {
        Ok(body) => body,
        Err(FrameError::Closed) => return Ok(None),
        Err(e) => return Err(ReadRequestError::Frame(e)),
    };
    match decode_request(&body) {
        Ok(frame) => Ok(Some(frame)),
        Err(RequestDecodeError::Malformed(e)) => Err(ReadRequestError::Frame(e)),
        Err(RequestDecodeError::Invalid { id, error }) => {
            Err(ReadRequestError::Invalid { id, error })
        }
    }
}

/// Writes one answer. An answer too large for a frame is replaced by an `Error`
/// answer saying so, under the same id.
pub fn write_response<W: Write + ?Sized>(
    w: &mut W,
    id: Option<u64>,
    response: &Response,
    max_frame: u32,
) -> Result<(), FrameError> {
    let frame = ResponseFrame {
        id,
        response: response.clone(),
    };
    let bytes = match encode_frame(&frame, "response frame", max_frame) {
        Ok(bytes) => bytes,
        Err(FrameError::TooLarge { len, max }) => {
            let error = Response::error(
                ErrorCode::Internal,
                format!(
                    "{} answer of {len} bytes exceeds the frame limit of {max} bytes",
                    response.kind()
                ),
            );
            encode_frame(
                &ResponseFrame {
                    id,
                    response: error,
                },
                "response frame",
                max_frame,
            )?
        }
        Err(e) => return Err(e),
    };
    write_encoded(w, &bytes)
}

/// A server-side connection failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The peer sent a broken frame; an error answer was sent (best effort).
    #[error("closing connection: {0}")]
    Peer(FrameError),
    /// An answer could not be written.
    #[error("cannot answer: {0}")]
    Write(FrameError),
    /// `next_request` or `respond` after the connection was given up.
    #[error("connection already closed")]
    Closed,
}

/// One agent connection, after the handshake.
#[derive(Debug)]
pub struct Server<S> {
    stream: S,
    version: u32,
    peer_software: String,
    max_frame: u32,
    closed: bool,
}

impl<S: Read + Write> Server<S> {
    /// Runs the server side of the handshake. On failure a rejection has been
    /// sent and the stream should be dropped.
    pub fn accept(
        mut stream: S,
        supported: &[u32],
        software: &str,
    ) -> Result<Self, HandshakeError> {
        let agreed = server_handshake(&mut stream, supported, software, MAX_FRAME_LEN)?;
        Ok(Server {
            stream,
            version: agreed.version,
            peer_software: agreed.peer_software,
            max_frame: MAX_FRAME_LEN,
            closed: false,
        })
    }

    /// The protocol version agreed at connect.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The client's self-description from the handshake (informational).
    pub fn peer_software(&self) -> &str {
        &self.peer_software
    }

    /// The next valid request, or `Ok(None)` when the client hung up. Invalid
    /// requests are answered here and skipped. A broken frame is answered with an
    /// error under id `None` and ends the connection with [`ServerError::Peer`].
    pub fn next_request(&mut self) -> Result<Option<RequestFrame>, ServerError> {
        if self.closed {
            return Err(ServerError::Closed);
        }
        loop {
            match read_request(&mut self.stream, self.max_frame) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {
                    self.closed = true;
                    return Ok(None);
                }
                Err(ReadRequestError::Invalid { id, error }) => {
                    self.write(id, &Response::Error(error))?;
                }
                Err(ReadRequestError::Frame(e)) => {
                    self.closed = true;
                    let answer = Response::Error(error_for_frame(&e));
                    // Best effort: the peer may be gone; we close either way.
                    let _ = write_response(&mut self.stream, None, &answer, self.max_frame);
                    return Err(ServerError::Peer(e));
                }
            }
        }
    }

    /// Answers the request with id `id`.
    pub fn respond(&mut self, id: u64, response: &Response) -> Result<(), ServerError> {
        if self.closed {
            return Err(ServerError::Closed);
        }
        self.write(Some(id), response)
    }

    fn write(&mut self, id: Option<u64>, response: &Response) -> Result<(), ServerError> {
        write_response(&mut self.stream, id, response, self.max_frame).map_err(|e| {
            self.closed = true;
            ServerError::Write(e)
        })
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}
