//! Host side: a blocking client over any `Read + Write` stream.
//!
//! Replies are untrusted: a reply with the wrong id or a kind that does not answer
//! the request is an error, never a panic. After any failure that may leave the
//! stream mid-frame (I/O error, time limit, bad frame) the client refuses further
//! calls with [`ClientError::Broken`]; open a new connection.

use std::io::{Read, Write};
use std::time::Duration;

use crate::frame::{read_frame, write_message, FrameError, MAX_FRAME_LEN};
use crate::handshake::{client_handshake, HandshakeError};
use crate::message::{
    decode_response, ErrorResponse, Request, RequestFrame, Response, ResponseFrame,
};
use crate::timeout::{Deadline, SetTimeout};
use crate::SUPPORTED_VERSIONS;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("{request}: {source}")]
    Frame {
        request: &'static str,
        #[source]
        source: FrameError,
    },
    #[error("{request}: no complete answer within {limit:?}")]
    TimedOut {
        request: &'static str,
        limit: Duration,
    },
    /// The agent answered with an error.
    #[error("{request} failed in the agent: {error}")]
    Agent {
        request: &'static str,
        #[source]
        error: ErrorResponse,
    },
    /// The agent could not read the request frame at all (error answer without
    /// id); it closes the connection.
    #[error("{request}: agent could not read the request and closed the connection: {error}")]
    Unreadable {
        request: &'static str,
        #[source]
        error: ErrorResponse,
    },
    #[error("{request}: answer carries id {got:?}, expected {expected}")]
    UnexpectedId {
        request: &'static str,
        expected: u64,
        got: Option<u64>,
    },
    #[error("{request}: agent answered {got}, expected {expected}")]
    UnexpectedResponse {
        request: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("connection unusable after an earlier failure: {reason}")]
    Broken { reason: String },
}

/// A connection to an agent, after the handshake.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    version: u32,
    peer_software: String,
    next_id: u64,
    max_frame: u32,
    broken: Option<String>,
}

impl<S: Read + Write> Client<S> {
    /// Performs the handshake, offering every version this crate speaks.
    pub fn connect(mut stream: S, software: &str) -> Result<Self, ClientError> {
        let agreed = client_handshake(&mut stream, SUPPORTED_VERSIONS, software, MAX_FRAME_LEN)?;
        Ok(Client {
            stream,
            version: agreed.version,
            peer_software: agreed.peer_software,
            next_id: 1,
            max_frame: MAX_FRAME_LEN,
            broken: None,
        })
    }

    /// The protocol version agreed at connect.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The agent's self-description from the handshake (untrusted).
    pub fn peer_software(&self) -> &str {
        &self.peer_software
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Sends a request without waiting (pipelining); returns its id.
    pub fn send(&mut self, request: &Request) -> Result<u64, ClientError> {
        self.check()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let result = send_on(&mut self.stream, id, request, self.max_frame);
        self.note(result).map(|()| id)
    }

    /// Reads the next answer, whichever request it answers.
    pub fn recv(&mut self) -> Result<ResponseFrame, ClientError> {
        self.check()?;
        let result = recv_on(&mut self.stream, "response", self.max_frame);
        self.note(result)
    }

    /// Sends `request` and waits for its answer (lock-step: no other request may
    /// be outstanding). An `Error` answer becomes [`ClientError::Agent`].
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.check()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let result = exchange(&mut self.stream, id, request, self.max_frame);
        self.note(result)
    }

    fn check(&self) -> Result<(), ClientError> {
        match &self.broken {
            Some(reason) => Err(ClientError::Broken {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the connection broken after errors that may leave it mid-frame.
    fn note<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result {
            let fatal = match e {
                ClientError::Frame { source, .. } => !source.stream_in_sync(),
                ClientError::TimedOut { .. }
                | ClientError::UnexpectedId { .. }
                | ClientError::Unreadable { .. }
                | ClientError::Handshake(_) => true,
                ClientError::Agent { .. }
                | ClientError::UnexpectedResponse { .. }
                | ClientError::Broken { .. } => false,
            };
            if fatal {
                self.broken = Some(e.to_string());
            }
        }
        result
    }
}

impl<S: Read + Write + SetTimeout> Client<S> {
    /// [`Client::connect`] with the handshake bounded by `limit`.
    pub fn connect_timeout(
        mut stream: S,
        software: &str,
        limit: Duration,
    ) -> Result<Self, ClientError> {
        let agreed = {
            let mut bounded = Deadline::new(&mut stream, limit);
            client_handshake(&mut bounded, SUPPORTED_VERSIONS, software, MAX_FRAME_LEN)?
        };
        Ok(Client {
            stream,
            version: agreed.version,
            peer_software: agreed.peer_software,
            next_id: 1,
            max_frame: MAX_FRAME_LEN,
            broken: None,
        })
    }

    /// [`Client::call`], with the whole exchange bounded by `limit`.
    pub fn call_timeout(
        &mut self,
        request: &Request,
        limit: Duration,
    ) -> Result<Response, ClientError> {
        self.check()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let max = self.max_frame;
        let result = {
            let mut bounded = Deadline::new(&mut self.stream, limit);
            exchange(&mut bounded, id, request, max)
        };
        let result = result.map_err(|e| match e {
            ClientError::Frame {
                request,
                source: FrameError::TimedOut { .. },
            } => ClientError::TimedOut { request, limit },
            other => other,
        });
        self.note(result)
    }
}

fn send_on<I: Write + ?Sized>(
    io: &mut I,
    id: u64,
    request: &Request,
    max: u32,
) -> Result<(), ClientError> {
    let frame = RequestFrame {
        id,
        request: request.clone(),
    };
    write_message(io, &frame, "request frame", max).map_err(|source| ClientError::Frame {
        request: request.kind(),
        source,
    })
}

fn recv_on<I: Read + ?Sized>(
    io: &mut I,
    request: &'static str,
    max: u32,
) -> Result<ResponseFrame, ClientError> {
    read_frame(io, max)
        .and_then(|body| decode_response(&body))
        .map_err(|source| ClientError::Frame { request, source })
}

/// One lock-step call on `io`.
fn exchange<I: Read + Write + ?Sized>(
    io: &mut I,
    id: u64,
    request: &Request,
    max: u32,
) -> Result<Response, ClientError> {
    let kind = request.kind();
    send_on(io, id, request, max)?;
    let answer = recv_on(io, kind, max)?;
    if answer.id != Some(id) {
        // An error frame without id answers a request the agent could not read:
        // report the agent's reason rather than the id mismatch.
        if let (None, Response::Error(error)) = (answer.id, &answer.response) {
            return Err(ClientError::Unreadable {
                request: kind,
                error: error.clone(),
            });
        }
        return Err(ClientError::UnexpectedId {
            request: kind,
            expected: id,
            got: answer.id,
        });
    }
    match answer.response {
        Response::Error(error) => Err(ClientError::Agent {
            request: kind,
            error,
        }),
        response if request.accepts(&response) => Ok(response),
        response => Err(ClientError::UnexpectedResponse {
            request: kind,
            expected: request.expected_response(),
            got: response.kind(),
        }),
    }
}
