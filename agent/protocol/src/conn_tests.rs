//! Client and server together, over socket pairs and in-memory streams.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::{encode_frame, FrameError, MAX_FRAME_LEN};
use crate::handshake::{Handshake, HandshakeError};
use crate::message::{ErrorCode, ExitStatus, Request, RequestFrame, Response, ResponseFrame};
use crate::server::{Server, ServerError};
use crate::test_util::{frames_of, raw_frame, Duplex};
use crate::{Client, ClientError, SUPPORTED_VERSIONS};

fn hello() -> Vec<u8> {
    let h = Handshake::Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        software: "test".into(),
    };
    encode_frame(&h, "hello", MAX_FRAME_LEN).unwrap()
}

fn request(id: u64, request: Request) -> Vec<u8> {
    encode_frame(&RequestFrame { id, request }, "request", MAX_FRAME_LEN).unwrap()
}

/// Runs a server over `input` (after a valid hello) and returns what it wrote
/// after the welcome, plus the requests it handed out and how it ended.
fn serve(
    input: &[u8],
) -> (
    Vec<ResponseFrame>,
    Vec<RequestFrame>,
    Result<(), ServerError>,
) {
    let mut bytes = hello();
    bytes.extend_from_slice(input);
    let mut server = Server::accept(Duplex::new(bytes), SUPPORTED_VERSIONS, "agent").unwrap();
    let mut handed = Vec::new();
    let end = loop {
        match server.next_request() {
            Ok(Some(frame)) => {
                server.respond(frame.id, &Response::Ok).unwrap();
                handed.push(frame);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let out = server.into_inner().output;
    // Skip the welcome.
    let welcome_len = 4 + u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    (frames_of(&out[welcome_len..]), handed, end)
}

fn only_error(frames: &[ResponseFrame]) -> (&Option<u64>, ErrorCode, &str) {
    match frames {
        [ResponseFrame {
            id,
            response: Response::Error(e),
        }] => (id, e.code, e.message.as_str()),
        other => panic!("expected one error answer, got {other:?}"),
    }
}

#[test]
fn client_and_server_over_a_socket_pair() {
    let (a, b) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || {
        let mut server = Server::accept(b, SUPPORTED_VERSIONS, "agent").unwrap();
        while let Some(frame) = server.next_request().unwrap() {
            let answer = match &frame.request {
                Request::WaitProcess { .. } => Response::Exited {
                    status: ExitStatus::Code(7),
                },
                Request::State { .. } => Response::Ok, // wrong kind on purpose
                Request::StartContainer { .. } => {
                    Response::error(ErrorCode::NotFound, "no container \"nope\"")
                }
                _ => Response::Ok,
            };
            server.respond(frame.id, &answer).unwrap();
        }
    });
    let mut client = Client::connect_timeout(a, "runv", Duration::from_secs(10)).unwrap();
    assert_eq!(client.version(), 1);
    assert_eq!(client.peer_software(), "agent");
    assert_eq!(client.call(&Request::Ping).unwrap(), Response::Ok);
    let wait = Request::WaitProcess {
        container_id: "c1".into(),
        exec_id: None,
        kill_on_close: false,
    };
    assert_eq!(
        client.call_timeout(&wait, Duration::from_secs(10)).unwrap(),
        Response::Exited {
            status: ExitStatus::Code(7)
        }
    );
    match client.call(&Request::StartContainer {
        container_id: "nope".into(),
    }) {
        Err(ClientError::Agent { request, error }) => {
            assert_eq!(request, "start_container");
            assert_eq!(error.code, ErrorCode::NotFound);
        }
        other => panic!("expected Agent error, got {other:?}"),
    }
    match client.call(&Request::State {
        container_id: "c1".into(),
    }) {
        Err(ClientError::UnexpectedResponse { expected, got, .. }) => {
            assert_eq!((expected, got), ("state", "ok"));
        }
        other => panic!("expected UnexpectedResponse, got {other:?}"),
    }
    // Neither error broke the connection.
    assert_eq!(client.call(&Request::Ping).unwrap(), Response::Ok);
    drop(client);
    agent.join().unwrap();
}

#[test]
fn pipelined_answers_may_come_out_of_order() {
    let (a, b) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || {
        let mut server = Server::accept(b, SUPPORTED_VERSIONS, "agent").unwrap();
        let first = server.next_request().unwrap().unwrap();
        let second = server.next_request().unwrap().unwrap();
        server
            .respond(second.id, &Response::Started { pid: 9 })
            .unwrap();
        server.respond(first.id, &Response::Ok).unwrap();
    });
    let mut client = Client::connect(a, "runv").unwrap();
    let id1 = client.send(&Request::Ping).unwrap();
    let id2 = client
        .send(&Request::State {
            container_id: "c".into(),
        })
        .unwrap();
    assert_ne!(id1, id2);
    let r1 = client.recv().unwrap();
    let r2 = client.recv().unwrap();
    assert_eq!(r1.id, Some(id2));
    assert_eq!(r2.id, Some(id1));
    agent.join().unwrap();
}

#[test]
fn silent_agent_times_out_and_breaks_the_client() {
    let (a, b) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || {
        let mut server = Server::accept(b, SUPPORTED_VERSIONS, "agent").unwrap();
        // Read the request, never answer; wait for the client to hang up.
        let _ = server.next_request();
        let _ = server.next_request();
    });
    let mut client = Client::connect(a, "runv").unwrap();
    let start = Instant::now();
    match client.call_timeout(&Request::Ping, Duration::from_millis(100)) {
        Err(ClientError::TimedOut { request, limit }) => {
            assert_eq!(request, "ping");
            assert_eq!(limit, Duration::from_millis(100));
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        client.call(&Request::Ping),
        Err(ClientError::Broken { .. })
    ));
    drop(client);
    agent.join().unwrap();
}

#[test]
fn untrusted_answer_with_wrong_id_is_an_error() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || {
        let welcome = Handshake::Welcome {
            version: 1,
            software: String::new(),
        };
        let _ = crate::frame::read_frame(&mut b, MAX_FRAME_LEN);
        b.write_all(&encode_frame(&welcome, "w", MAX_FRAME_LEN).unwrap())
            .unwrap();
        let _ = crate::frame::read_frame(&mut b, MAX_FRAME_LEN);
        let bogus = ResponseFrame {
            id: Some(999),
            response: Response::Ok,
        };
        b.write_all(&encode_frame(&bogus, "r", MAX_FRAME_LEN).unwrap())
            .unwrap();
        // Then garbage, which the client must not choke on either.
        b.write_all(&raw_frame(b"\x00garbage")).unwrap();
    });
    let mut client = Client::connect(a, "runv").unwrap();
    assert!(matches!(
        client.call(&Request::Ping),
        Err(ClientError::UnexpectedId {
            expected: 1,
            got: Some(999),
            ..
        })
    ));
    agent.join().unwrap();
}

#[test]
fn client_reports_oversized_and_garbage_answers() {
    let welcome = encode_frame(
        &Handshake::Welcome {
            version: 1,
            software: String::new(),
        },
        "w",
        MAX_FRAME_LEN,
    )
    .unwrap();
    let mut input = welcome.clone();
    input.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut client = Client::connect(Duplex::new(input), "runv").unwrap();
    assert!(matches!(
        client.call(&Request::Ping),
        Err(ClientError::Frame {
            source: FrameError::TooLarge { .. },
            ..
        })
    ));
    let mut input = welcome;
    input.extend_from_slice(&raw_frame(b"{\"id\":1,\"response\":{\"type\":\"ok\""));
    let mut client = Client::connect(Duplex::new(input), "runv").unwrap();
    assert!(matches!(
        client.call(&Request::Ping),
        Err(ClientError::Frame {
            source: FrameError::Json { .. },
            ..
        })
    ));
}

#[test]
fn client_gets_typed_error_on_version_rejection() {
    let rejected = Handshake::Rejected {
        code: ErrorCode::UnsupportedVersion,
        message: "no common protocol version".into(),
        offered: vec![1],
        supported: vec![2],
    };
    let input = encode_frame(&rejected, "r", MAX_FRAME_LEN).unwrap();
    match Client::connect(Duplex::new(input), "runv") {
        Err(ClientError::Handshake(HandshakeError::Rejected {
            offered, supported, ..
        })) => {
            assert_eq!((offered, supported), (vec![1], vec![2]));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn server_answers_oversized_frame_then_closes() {
    let (out, handed, end) = serve(&(MAX_FRAME_LEN + 1).to_be_bytes());
    let (id, code, message) = only_error(&out);
    assert_eq!((*id, code), (None, ErrorCode::FrameTooLarge));
    assert!(
        message.contains(&(MAX_FRAME_LEN + 1).to_string()),
        "{message}"
    );
    assert!(handed.is_empty());
    assert!(matches!(
        end,
        Err(ServerError::Peer(FrameError::TooLarge { .. }))
    ));
}

type FrameCheck = fn(&FrameError) -> bool;

#[test]
fn server_answers_zero_length_truncated_and_garbage_frames() {
    let mut truncated = raw_frame(br#"{"id":1,"request":{"type":"ping"}}"#);
    truncated.truncate(10);
    let cases: [(&[u8], FrameCheck); 4] = [
        (&[0, 0, 0, 0], |e| matches!(e, FrameError::Empty)),
        (&truncated, |e| matches!(e, FrameError::Truncated { .. })),
        (&[0, 0], |e| {
            matches!(e, FrameError::TruncatedHeader { got: 2 })
        }),
        (&raw_frame(b"{{{{"), |e| {
            matches!(e, FrameError::Json { .. })
        }),
    ];
    for (input, expected) in cases {
        let (out, handed, end) = serve(input);
        let (id, code, _) = only_error(&out);
        assert_eq!((*id, code), (None, ErrorCode::MalformedFrame), "{input:?}");
        assert!(handed.is_empty());
        match end {
            Err(ServerError::Peer(e)) => assert!(expected(&e), "{input:?}: {e}"),
            other => panic!("{input:?}: expected Peer error, got {other:?}"),
        }
    }
}

#[test]
fn server_answers_unknown_kind_and_keeps_serving() {
    let mut input = raw_frame(br#"{"id": 5, "request": {"type": "teleport"}}"#);
    input.extend_from_slice(&request(6, Request::Ping));
    let (out, handed, end) = serve(&input);
    assert!(end.is_ok());
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].id, 6);
    assert_eq!(out.len(), 2);
    match &out[0] {
        ResponseFrame {
            id: Some(5),
            response: Response::Error(e),
        } => {
            assert_eq!(e.code, ErrorCode::UnknownRequest);
            assert!(e.message.contains("teleport"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        out[1],
        ResponseFrame {
            id: Some(6),
            response: Response::Ok
        }
    );
}

#[test]
fn oversized_answer_is_replaced_by_an_error() {
    let mut out = Vec::new();
    let big = Response::Processes {
        pids: vec![u32::MAX; 1000],
        processes: vec![],
    };
    crate::server::write_response(&mut out, Some(3), &big, 1024).unwrap();
    let frames: Vec<ResponseFrame> = frames_of(&out);
    let (id, code, message) = only_error(&frames);
    assert_eq!((*id, code), (Some(3), ErrorCode::Internal));
    assert!(message.contains("processes answer"), "{message}");
}

#[test]
fn error_without_id_breaks_the_client() {
    let mut input = encode_frame(
        &Handshake::Welcome {
            version: 1,
            software: String::new(),
        },
        "w",
        MAX_FRAME_LEN,
    )
    .unwrap();
    let answer = ResponseFrame {
        id: None,
        response: Response::error(ErrorCode::MalformedFrame, "zero-length frame"),
    };
    input.extend_from_slice(&encode_frame(&answer, "r", MAX_FRAME_LEN).unwrap());
    let mut client = Client::connect(Duplex::new(input), "runv").unwrap();
    match client.call(&Request::Ping) {
        Err(ClientError::Unreadable { request, error }) => {
            assert_eq!((request, error.code), ("ping", ErrorCode::MalformedFrame));
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert!(matches!(
        client.call(&Request::Ping),
        Err(ClientError::Broken { .. })
    ));
}
