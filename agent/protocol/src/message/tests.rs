use std::io::Cursor;

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde_json::json;

use super::*;
use crate::frame::{encode_frame, read_frame, MAX_FRAME_LEN};
use crate::share::ShareLocation;
use crate::test_util::DOCKER_CONFIG;

fn docker_spec() -> Spec {
    serde_json::from_str(DOCKER_CONFIG).unwrap()
}

fn stdio() -> StdioPorts {
    StdioPorts {
        stdin: Some(2000),
        stdout: Some(2001),
        stderr: None,
        token: Some(crate::StdioToken::random().unwrap()),
    }
}

/// One of every request kind.
pub(crate) fn all_requests() -> Vec<Request> {
    let spec = docker_spec();
    let process: Process = spec.process().clone().unwrap();
    let resources: LinuxResources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap();
    let c = || "c1".to_owned();
    vec![
        Request::Ping,
        Request::ConfigureNetwork {
            network: crate::NetworkConfig {
                interfaces: vec![crate::NetInterface {
                    name: "eth0".into(),
                    mac: "02:42:ac:11:00:02".into(),
                    mtu: 1400,
                    addresses: vec![
                        crate::IpNet::new("172.17.0.2".parse().unwrap(), 16).unwrap(),
                        crate::IpNet::new("fd00::2".parse().unwrap(), 64).unwrap(),
                    ],
                }],
                routes: vec![crate::NetRoute {
                    destination: crate::IpNet::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
                    gateway: Some("172.17.0.1".parse().unwrap()),
                    device: Some("eth0".into()),
                    source: None,
                    metric: Some(10),
                    on_link: false,
                }],
                neighbors: vec![crate::NetNeighbor {
                    address: "172.17.0.1".parse().unwrap(),
                    mac: "02:42:8e:00:00:01".into(),
                    device: "eth0".into(),
                }],
                dns_relay: Some(crate::DnsRelay {
                    address: "127.0.0.11".parse().unwrap(),
                    vsock_port: 53,
                }),
            },
        },
        Request::CreateSandbox {
            sandbox_id: "sb1".into(),
            hostname: "web-0".into(),
            dns: DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
            shares: vec!["runv".into()],
        },
        Request::CreateContainer {
            container_id: c(),
            spec: Box::new(spec.clone()),
            rootfs: ShareLocation::new("runv", "c1/rootfs").unwrap(),
            stdio: stdio(),
        },
        Request::StartContainer { container_id: c() },
        Request::ExecProcess {
            container_id: c(),
            exec_id: "e1".into(),
            process: Box::new(process),
            stdio: stdio(),
        },
        Request::SignalProcess {
            container_id: c(),
            exec_id: None,
            signal: 15,
            all: true,
        },
        Request::SignalProcess {
            container_id: c(),
            exec_id: Some("e1".into()),
            signal: 9,
            all: false,
        },
        Request::WaitProcess {
            container_id: c(),
            exec_id: Some("e1".into()),
            kill_on_close: true,
        },
        Request::State { container_id: c() },
        Request::ListProcesses { container_id: c() },
        Request::ResizeTty {
            container_id: c(),
            exec_id: None,
            rows: 50,
            cols: 200,
        },
        Request::CloseStdin {
            container_id: c(),
            exec_id: None,
        },
        Request::Stats { container_id: c() },
        Request::PauseContainer { container_id: c() },
        Request::ResumeContainer { container_id: c() },
        Request::UpdateContainer {
            container_id: c(),
            resources: Box::new(resources),
        },
        Request::DestroyContainer { container_id: c() },
        Request::Shutdown,
    ]
}

/// One of every response kind.
pub(crate) fn all_responses() -> Vec<Response> {
    vec![
        Response::Ok,
        Response::Created { pid: 42 },
        Response::Started { pid: 43 },
        Response::Exited {
            status: ExitStatus::Code(3),
        },
        Response::Exited {
            status: ExitStatus::Signal(9),
        },
        Response::State {
            state: ContainerInfo {
                id: "c1".into(),
                status: ContainerStatus::Paused,
                pid: Some(42),
                exit: None,
            },
        },
        Response::Processes {
            pids: vec![42, 43, 50],
            processes: vec![],
        },
        Response::Processes {
            pids: vec![42],
            processes: vec![ProcessInfo {
                pid: 42,
                ppid: 1,
                uid: 0,
                state: "S".into(),
                cpu_ticks: 7,
                cmd: "sleep 1000".into(),
            }],
        },
        Response::Stats {
            stats: ContainerStats {
                cpu: CpuStats {
                    usage_usec: 1_000,
                    user_usec: 600,
                    system_usec: 400,
                    nr_periods: 10,
                    nr_throttled: 2,
                    throttled_usec: 30,
                },
                memory: MemoryStats {
                    usage: 1 << 20,
                    max_usage: Some(2 << 20),
                    limit: Some(256 << 20),
                    swap_usage: 0,
                    anon: 1 << 19,
                    file: 1 << 19,
                    oom_kills: 1,
                },
                pids: PidsStats {
                    current: 3,
                    limit: Some(100),
                },
            },
        },
        Response::Error(ErrorResponse::field(
            ErrorCode::InvalidArgument,
            "process.cwd",
            "process.cwd \"/nonexistent\": no such directory in the rootfs",
        )),
    ]
}

#[test]
fn every_request_kind_round_trips_through_a_frame() {
    let requests = all_requests();
    let kinds: Vec<&str> = requests.iter().map(Request::kind).collect();
    for kind in Request::KINDS {
        assert!(kinds.contains(kind), "no test request of kind {kind}");
    }
    for (i, request) in requests.into_iter().enumerate() {
        let frame = RequestFrame {
            id: i as u64,
            request,
        };
        let bytes = encode_frame(&frame, "request", MAX_FRAME_LEN).unwrap();
        let body = read_frame(&mut Cursor::new(bytes), MAX_FRAME_LEN).unwrap();
        // The wire `type` is the kind name.
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["request"]["type"], frame.request.kind());
        let back = decode_request(&body).unwrap();
        assert_eq!(back, frame);
    }
}

#[test]
fn every_response_kind_round_trips_through_a_frame() {
    let mut kinds = Vec::new();
    for (i, response) in all_responses().into_iter().enumerate() {
        kinds.push(response.kind());
        let frame = ResponseFrame {
            id: Some(i as u64),
            response,
        };
        let bytes = encode_frame(&frame, "response", MAX_FRAME_LEN).unwrap();
        let body = read_frame(&mut Cursor::new(bytes), MAX_FRAME_LEN).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["response"]["type"], frame.response.kind());
        assert_eq!(decode_response(&body).unwrap(), frame);
    }
    for expected in all_requests().iter().map(Request::expected_response) {
        assert!(kinds.contains(&expected), "no test response {expected}");
    }
}

#[test]
fn docker_spec_survives_the_wire_unchanged() {
    let spec = docker_spec();
    let frame = RequestFrame {
        id: 1,
        request: Request::CreateContainer {
            container_id: "4f1c2d3e5a6b".into(),
            spec: Box::new(spec.clone()),
            rootfs: ShareLocation::new("runv", "4f1c2d3e5a6b/rootfs").unwrap(),
            stdio: StdioPorts::default(),
        },
    };
    let bytes = encode_frame(&frame, "request", MAX_FRAME_LEN).unwrap();
    let body = read_frame(&mut Cursor::new(bytes), MAX_FRAME_LEN).unwrap();
    let Request::CreateContainer { spec: back, .. } = decode_request(&body).unwrap().request else {
        panic!("wrong kind");
    };
    assert_eq!(*back, spec);
    // Every field Docker wrote is still there, with its value.
    let original: serde_json::Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
    let sent = serde_json::to_value(&*back).unwrap();
    assert_subset(&original, &sent, "spec");
}

/// Every key/value in `small` is in `big` (arrays compared element-wise).
fn assert_subset(small: &serde_json::Value, big: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (small, big) {
        (Value::Object(s), Value::Object(b)) => {
            for (k, v) in s {
                let bv = b.get(k).unwrap_or_else(|| panic!("{at}.{k} lost"));
                assert_subset(v, bv, &format!("{at}.{k}"));
            }
        }
        // oci-spec keeps capability sets as sets: order is not preserved.
        (Value::Array(s), Value::Array(b)) if at.contains(".capabilities.") => {
            let sorted = |v: &Vec<Value>| {
                let mut v: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                v.sort();
                v
            };
            assert_eq!(sorted(s), sorted(b), "{at}");
        }
        (Value::Array(s), Value::Array(b)) => {
            assert_eq!(s.len(), b.len(), "{at}: array length");
            for (i, (sv, bv)) in s.iter().zip(b).enumerate() {
                assert_subset(sv, bv, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(small, big, "{at}"),
    }
}

#[test]
fn wire_examples_match_the_docs() {
    let f = RequestFrame {
        id: 7,
        request: Request::SignalProcess {
            container_id: "c1".into(),
            exec_id: None,
            signal: 15,
            all: false,
        },
    };
    assert_eq!(
        serde_json::to_value(&f).unwrap(),
        json!({"id": 7, "request": {"type": "signal_process", "container_id": "c1", "signal": 15, "all": false}})
    );
    let r = ResponseFrame {
        id: Some(7),
        response: Response::Exited {
            status: ExitStatus::Signal(9),
        },
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"id": 7, "response": {"type": "exited", "status": {"signal": 9}}})
    );
    let e = Response::Error(ErrorResponse::new(
        ErrorCode::NotFound,
        "no container \"x\"",
    ));
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"type": "error", "code": "not_found", "message": "no container \"x\""})
    );
    assert_eq!(
        serde_json::to_value(Request::Shutdown).unwrap(),
        json!({"type": "shutdown"})
    );
}

#[test]
fn unknown_request_kind_is_answerable_with_its_id() {
    let body = br#"{"id": 12, "request": {"type": "frobnicate", "container_id": "c1"}}"#;
    match decode_request(body) {
        Err(RequestDecodeError::Invalid { id, error }) => {
            assert_eq!(id, Some(12));
            assert_eq!(error.code, ErrorCode::UnknownRequest);
            assert!(
                error.message.contains("\"frobnicate\""),
                "{}",
                error.message
            );
            assert_eq!(error.field.as_deref(), Some("request.type"));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn missing_or_ill_typed_fields_name_the_field() {
    let body = br#"{"id": 3, "request": {"type": "resize_tty", "container_id": "c1", "rows": 70000, "cols": 80}}"#;
    match decode_request(body) {
        Err(RequestDecodeError::Invalid { id, error }) => {
            assert_eq!(id, Some(3));
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains("70000"), "{}", error.message);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let body = br#"{"id": 4, "request": {"type": "state"}}"#;
    match decode_request(body) {
        Err(RequestDecodeError::Invalid { error, .. }) => {
            assert!(error.message.contains("container_id"), "{}", error.message);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // No usable id: still answerable, under id null.
    let body = br#"{"request": {"type": "ping"}}"#;
    assert!(matches!(
        decode_request(body),
        Err(RequestDecodeError::Invalid { id: None, .. })
    ));
}

#[test]
fn garbage_json_is_malformed_with_position() {
    for body in [
        &b"not json"[..],
        b"{\"id\": 1, \"request\": {",
        b"{} trailing",
        b"\xff\xfe",
    ] {
        match decode_request(body) {
            Err(RequestDecodeError::Malformed(FrameError::Json { line, column, .. })) => {
                assert!(line >= 1 && column >= 1, "{body:?}");
            }
            other => panic!("{body:?}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn unknown_error_codes_from_newer_agents_decode() {
    let r: Response =
        serde_json::from_str(r#"{"type":"error","code":"quota_exceeded","message":"m"}"#).unwrap();
    assert!(matches!(
        r,
        Response::Error(ErrorResponse {
            code: ErrorCode::Unknown,
            ..
        })
    ));
}

#[test]
fn request_accepts_only_matching_answers() {
    let wait = Request::WaitProcess {
        container_id: "c".into(),
        exec_id: None,
        kill_on_close: false,
    };
    assert!(wait.accepts(&Response::Exited {
        status: ExitStatus::Code(0)
    }));
    assert!(wait.accepts(&Response::error(ErrorCode::NotFound, "x")));
    assert!(!wait.accepts(&Response::Ok));
    assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    assert_eq!(ExitStatus::Code(3).shell_code(), 3);
}

/// Every ```json block of docs/agent-protocol.md is a valid frame or handshake,
/// and every request and answer kind has an example there.
#[test]
fn doc_examples_parse() {
    use crate::handshake::Handshake;
    let doc = include_str!("../../../../docs/agent-protocol.md");
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    let mut handshakes = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```json\n") {
        let block = &rest[start + 8..];
        let end = block.find("```").unwrap();
        let json = &block[..end];
        if let Ok(f) = serde_json::from_str::<RequestFrame>(json) {
            requests.push(f.request.kind());
        } else if let Ok(f) = serde_json::from_str::<ResponseFrame>(json) {
            responses.push(f.response.kind());
        } else if serde_json::from_str::<Handshake>(json).is_ok() {
            handshakes += 1;
        } else {
            let err = decode_request(json.as_bytes()).unwrap_err();
            panic!("doc example does not parse: {err}\n{json}");
        }
        rest = &block[end + 3..];
    }
    assert_eq!(handshakes, 3);
    for kind in Request::KINDS {
        assert!(requests.contains(kind), "no doc example for request {kind}");
    }
    for r in all_responses() {
        assert!(
            responses.contains(&r.kind()),
            "no doc example for {}",
            r.kind()
        );
    }
}

#[test]
fn a_bad_oci_value_is_answered_naming_its_field() {
    let mut spec = serde_json::to_value(docker_spec()).unwrap();
    spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "bogusns"}]);
    let body = json!({"id": 4, "request": {"type": "create_container", "container_id": "c1",
        "spec": spec, "rootfs": {"tag": "runv", "subpath": "c1/rootfs"}}});
    match decode_request(body.to_string().as_bytes()) {
        Err(RequestDecodeError::Invalid { id, error }) => {
            assert_eq!(id, Some(4));
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert_eq!(
                error.field.as_deref(),
                Some("spec.linux.namespaces[1].type")
            );
            assert!(error.message.contains("bogusns"), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
    let body = json!({"id": 5, "request": {"type": "exec_process", "container_id": "c1", "exec_id": "e",
        "process": {"cwd": "/", "user": {"uid": -1, "gid": 0}}}});
    match decode_request(body.to_string().as_bytes()) {
        Err(RequestDecodeError::Invalid { error, .. }) => {
            assert_eq!(error.field.as_deref(), Some("process.user.uid"));
            assert!(error.message.contains("-1"), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
}
