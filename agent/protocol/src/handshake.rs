//! The version handshake: the first frame each way on every connection.
//!
//! Its format never changes with the protocol version, so both sides can always
//! read it: the client sends `Hello` with every version it speaks, the server
//! answers `Welcome` with the highest version both speak, or `Rejected` (naming
//! both sides' versions) and closes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::frame::{read_frame, write_message, FrameError};
use crate::message::{error_for_frame, ErrorCode};

/// A handshake frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Handshake {
    /// Client to server: the versions the client speaks, and who it is.
    Hello {
        versions: Vec<u32>,
        #[serde(default)]
        software: String,
    },
    /// Server to client: the version chosen for this connection.
    Welcome {
        version: u32,
        #[serde(default)]
        software: String,
    },
    /// Server to client: no connection; the server closes after sending it.
    Rejected {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        offered: Vec<u32>,
        #[serde(default)]
        supported: Vec<u32>,
    },
}

impl Handshake {
    fn kind(&self) -> &'static str {
        match self {
            Handshake::Hello { .. } => "hello",
            Handshake::Welcome { .. } => "welcome",
            Handshake::Rejected { .. } => "rejected",
        }
    }
}

/// A failed handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake failed: {0}")]
    Frame(#[from] FrameError),
    /// Server side: the client speaks no version this side does.
    #[error("no common protocol version: peer offers {offered:?}, this side speaks {supported:?}")]
    NoCommonVersion {
        offered: Vec<u32>,
        supported: Vec<u32>,
    },
    /// Client side: the server refused the connection.
    #[error("agent rejected the handshake ({code:?}): {message} (offered {offered:?}, agent speaks {supported:?})")]
    Rejected {
        code: ErrorCode,
        message: String,
        offered: Vec<u32>,
        supported: Vec<u32>,
    },
    /// A well-formed handshake frame of the wrong kind.
    #[error("handshake failed: expected a {expected} frame, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    /// Client side: the server chose a version the client did not offer.
    #[error("agent chose protocol version {chosen}, which was not offered ({offered:?})")]
    BogusVersion { chosen: u32, offered: Vec<u32> },
}

/// What a successful handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub version: u32,
    /// The peer's self-description (informational, untrusted).
    pub peer_software: String,
}

/// The highest version in both lists.
pub fn choose_version(offered: &[u32], supported: &[u32]) -> Option<u32> {
    offered
        .iter()
        .filter(|v| supported.contains(v))
        .max()
        .copied()
}

/// Client side: sends `Hello`, reads the answer.
pub fn client_handshake<S: Read + Write + ?Sized>(
    stream: &mut S,
    offered: &[u32],
    software: &str,
    max_frame: u32,
) -> Result<Agreement, HandshakeError> {
    let hello = Handshake::Hello {
        versions: offered.to_vec(),
        software: software.to_owned(),
    };
    write_message(stream, &hello, "hello", max_frame)?;
    let body = read_frame(stream, max_frame)?;
    let answer: Handshake = crate::frame::decode_body(&body, "handshake answer")?;
    match answer {
        Handshake::Welcome { version, software } => {
            if offered.contains(&version) {
                Ok(Agreement {
                    version,
                    peer_software: software,
                })
            } else {
                Err(HandshakeError::BogusVersion {
                    chosen: version,
                    offered: offered.to_vec(),
                })
            }
        }
        Handshake::Rejected {
            code,
            message,
            offered,
            supported,
        } => Err(HandshakeError::Rejected {
            code,
            message,
            offered,
            supported,
        }),
        other @ Handshake::Hello { .. } => Err(HandshakeError::Unexpected {
            expected: "welcome or rejected",
            got: other.kind(),
        }),
    }
}

/// Server side: reads `Hello`, answers `Welcome` or `Rejected`. On error the
/// rejection has been sent (best effort) and the caller should close.
pub fn server_handshake<S: Read + Write + ?Sized>(
    stream: &mut S,
    supported: &[u32],
    software: &str,
    max_frame: u32,
) -> Result<Agreement, HandshakeError> {
    let reject = |stream: &mut S, code, message: String, offered: Vec<u32>| {
        let frame = Handshake::Rejected {
            code,
            message,
            offered,
            supported: supported.to_vec(),
        };
        // Best effort: the peer may already be gone, and we close anyway.
        let _ = write_message(stream, &frame, "rejection", max_frame);
    };
    let hello = match read_frame(stream, max_frame)
        .and_then(|body| crate::frame::decode_body::<Handshake>(&body, "hello"))
    {
        Ok(h) => h,
        Err(err) => {
            if !matches!(err, FrameError::Closed) {
                let e = error_for_frame(&err);
                reject(stream, e.code, e.message, Vec::new());
            }
            return Err(err.into());
        }
    };
    let (offered, peer_software) = match hello {
        Handshake::Hello { versions, software } => (versions, software),
        other => {
            let err = HandshakeError::Unexpected {
                expected: "hello",
                got: other.kind(),
            };
            reject(
                stream,
                ErrorCode::MalformedFrame,
                err.to_string(),
                Vec::new(),
            );
            return Err(err);
        }
    };
    let Some(version) = choose_version(&offered, supported) else {
        let err = HandshakeError::NoCommonVersion {
            offered: offered.clone(),
            supported: supported.to_vec(),
        };
        reject(
            stream,
            ErrorCode::UnsupportedVersion,
            err.to_string(),
            offered,
        );
        return Err(err);
    };
    let welcome = Handshake::Welcome {
        version,
        software: software.to_owned(),
    };
    write_message(stream, &welcome, "welcome", max_frame)?;
    Ok(Agreement {
        version,
        peer_software,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, MAX_FRAME_LEN};
    use crate::test_util::{frames_of, Duplex};

    #[test]
    fn version_choice() {
        assert_eq!(choose_version(&[1, 2, 3], &[1, 2]), Some(2));
        assert_eq!(choose_version(&[3], &[1, 2]), None);
        assert_eq!(choose_version(&[], &[1]), None);
    }

    #[test]
    fn server_accepts_common_version() {
        let hello = Handshake::Hello {
            versions: vec![1, 7],
            software: "runv test".into(),
        };
        let mut s = Duplex::new(encode_frame(&hello, "hello", MAX_FRAME_LEN).unwrap());
        let a = server_handshake(&mut s, &[1], "agent", MAX_FRAME_LEN).unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(a.peer_software, "runv test");
        let out: Vec<Handshake> = frames_of(&s.output);
        assert_eq!(
            out,
            vec![Handshake::Welcome {
                version: 1,
                software: "agent".into()
            }]
        );
    }

    #[test]
    fn unknown_version_is_rejected_naming_both() {
        let hello = Handshake::Hello {
            versions: vec![2, 3],
            software: String::new(),
        };
        let mut s = Duplex::new(encode_frame(&hello, "hello", MAX_FRAME_LEN).unwrap());
        let err = server_handshake(&mut s, &[1], "agent", MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, HandshakeError::NoCommonVersion { .. }));
        let out: Vec<Handshake> = frames_of(&s.output);
        match &out[..] {
            [Handshake::Rejected {
                code: ErrorCode::UnsupportedVersion,
                message,
                offered,
                supported,
            }] => {
                assert_eq!(offered, &[2, 3]);
                assert_eq!(supported, &[1]);
                assert!(
                    message.contains("[2, 3]") && message.contains("[1]"),
                    "{message}"
                );
            }
            other => panic!("expected one rejection, got {other:?}"),
        }

        // The client turns that rejection into a typed error naming both sides.
        let mut c = Duplex::new(s.output.clone());
        let err = client_handshake(&mut c, &[2, 3], "runv", MAX_FRAME_LEN).unwrap_err();
        match err {
            HandshakeError::Rejected {
                code: ErrorCode::UnsupportedVersion,
                offered,
                supported,
                ..
            } => {
                assert_eq!(offered, vec![2, 3]);
                assert_eq!(supported, vec![1]);
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn garbage_hello_gets_a_rejection() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"hello");
        let mut s = Duplex::new(bytes);
        let err = server_handshake(&mut s, &[1], "agent", MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::Frame(FrameError::Json { .. })
        ));
        let out: Vec<Handshake> = frames_of(&s.output);
        assert!(matches!(
            &out[..],
            [Handshake::Rejected {
                code: ErrorCode::MalformedFrame,
                ..
            }]
        ));
    }

    #[test]
    fn oversized_hello_gets_a_rejection() {
        let mut s = Duplex::new(u32::MAX.to_be_bytes().to_vec());
        let err = server_handshake(&mut s, &[1], "agent", MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::Frame(FrameError::TooLarge { .. })
        ));
        let out: Vec<Handshake> = frames_of(&s.output);
        assert!(matches!(
            &out[..],
            [Handshake::Rejected {
                code: ErrorCode::FrameTooLarge,
                ..
            }]
        ));
    }

    #[test]
    fn client_refuses_a_version_it_did_not_offer() {
        let welcome = Handshake::Welcome {
            version: 9,
            software: String::new(),
        };
        let mut c = Duplex::new(encode_frame(&welcome, "w", MAX_FRAME_LEN).unwrap());
        let err = client_handshake(&mut c, &[1], "runv", MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::BogusVersion { chosen: 9, .. }
        ));
    }

    #[test]
    fn request_instead_of_hello_is_rejected() {
        let body = br#"{"id":1,"request":{"type":"ping"}}"#;
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        let mut s = Duplex::new(bytes);
        let err = server_handshake(&mut s, &[1], "agent", MAX_FRAME_LEN).unwrap_err();
        // Not a handshake frame at all: a JSON data error.
        assert!(matches!(
            err,
            HandshakeError::Frame(FrameError::Json { .. })
        ));
        assert_eq!(frames_of::<Handshake>(&s.output).len(), 1);
    }
}
