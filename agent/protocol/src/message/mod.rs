//! The messages exchanged after the handshake, and their envelopes.
//!
//! A request travels as `{"id": 7, "request": {"type": "state", ...}}` and its
//! answer as `{"id": 7, "response": {"type": "state", ...}}`. The id is chosen by
//! the client; the server copies it, so a client may pipeline requests and match
//! answers that come back out of order. An answer to a frame whose id could not be
//! read carries `"id": null`.

mod network;
mod request;
mod response;

#[cfg(test)]
pub(crate) mod tests;

pub use network::{
    format_mac, parse_mac, DnsRelay, IpNet, NetInterface, NetNeighbor, NetRoute, NetworkConfig,
};
pub use request::{DnsConfig, Request, StdioPorts};
pub use response::{
    ContainerInfo, ContainerStats, ContainerStatus, CpuStats, ErrorCode, ErrorResponse, ExitStatus,
    MemoryStats, PidsStats, ProcessInfo, Response,
};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use crate::frame::FrameError;

/// A request and the id its answer will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

/// An answer. `id` is the request's, or `None` when the request frame was too
/// broken to read an id from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    #[serde(default)]
    pub id: Option<u64>,
    pub response: Response,
}

/// Why a request frame body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RequestDecodeError {
    /// Not JSON at all: the peer is confused, answer and close.
    #[error(transparent)]
    Malformed(FrameError),
    /// Valid JSON, but not a request this side understands (unknown `type`,
    /// missing or ill-typed fields). The stream is still in sync: answer with
    /// `error` under `id` and carry on.
    #[error("{}", .error.message)]
    Invalid {
        id: Option<u64>,
        error: ErrorResponse,
    },
}

/// Only the id of a request frame, to answer requests that failed to decode.
#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

/// Only the request kind, to tell an unknown kind from a bad field.
#[derive(Deserialize)]
struct KindOnly {
    request: TypeOnly,
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

/// Decodes a request frame body, classifying failures as fatal or answerable.
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, RequestDecodeError> {
    let err = match serde_json::from_slice::<RequestFrame>(body) {
        Ok(frame) => return Ok(frame),
        Err(err) => err,
    };
    match err.classify() {
        Category::Data => {
            // A data error may be reported before a later syntax error (trailing
            // garbage): only well-formed JSON is answerable.
            if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(body) {
                return Err(RequestDecodeError::Malformed(FrameError::json(
                    "request frame",
                    syntax,
                )));
            }
        }
        Category::Io | Category::Syntax | Category::Eof => {
            return Err(RequestDecodeError::Malformed(FrameError::json(
                "request frame",
                err,
            )));
        }
    }
    let id = serde_json::from_slice::<IdOnly>(body).ok().map(|f| f.id);
    let kind = serde_json::from_slice::<KindOnly>(body)
        .ok()
        .map(|k| k.request.kind);
    let error = match kind {
        Some(kind) if !Request::KINDS.contains(&kind.as_str()) => ErrorResponse::field(
            ErrorCode::UnknownRequest,
            "request.type",
            format!(
                "unknown request type {kind:?} (this agent speaks: {})",
                Request::KINDS.join(", ")
            ),
        ),
        _ => embedded_field_error(body).unwrap_or_else(|| {
            ErrorResponse::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid request frame at line {} column {}: {err}",
                    err.line(),
                    err.column()
                ),
            )
        }),
    };
    Err(RequestDecodeError::Invalid { id, error })
}

/// For a bad OCI value inside `request.spec` or `request.process` (an unknown
/// namespace type, seccomp action, ...): the error naming the field's path, e.g.
/// `spec.linux.namespaces[0].type`. serde loses the path inside the internally
/// tagged `Request`, so the embedded object is decoded again on its own.
fn embedded_field_error(body: &[u8]) -> Option<ErrorResponse> {
    #[derive(Deserialize)]
    struct Embedded {
        request: EmbeddedRequest,
    }
    #[derive(Deserialize)]
    struct EmbeddedRequest {
        spec: Option<serde_json::Value>,
        process: Option<serde_json::Value>,
    }
    let e: Embedded = serde_json::from_slice(body).ok()?;
    let (name, err) = match (e.request.spec, e.request.process) {
        (Some(v), _) => (
            "spec",
            serde_path_to_error::deserialize::<_, oci_spec::runtime::Spec>(&v).err()?,
        ),
        (None, Some(v)) => (
            "process",
            serde_path_to_error::deserialize::<_, oci_spec::runtime::Process>(&v).err()?,
        ),
        _ => return None,
    };
    let path = err.path().to_string();
    let field = if path == "." {
        name.to_string()
    } else {
        format!("{name}.{path}")
    };
    Some(ErrorResponse::field(
        ErrorCode::InvalidArgument,
        field.clone(),
        format!("{field}: {}", err.inner()),
    ))
}

/// Decodes a response frame body (host side; the body is untrusted).
pub fn decode_response(body: &[u8]) -> Result<ResponseFrame, FrameError> {
    crate::frame::decode_body(body, "response frame")
}

/// The error answer for a frame-level failure on the server side.
pub fn error_for_frame(err: &FrameError) -> ErrorResponse {
    let code = match err {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Closed
        | FrameError::TruncatedHeader { .. }
        | FrameError::Empty
        | FrameError::Truncated { .. }
        | FrameError::Json { .. } => ErrorCode::MalformedFrame,
        FrameError::TimedOut { .. } | FrameError::Io { .. } | FrameError::Encode { .. } => {
            ErrorCode::Internal
        }
    };
    ErrorResponse::new(code, err.to_string())
}
