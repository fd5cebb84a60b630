//! Random and mutated input to every decoder: errors are fine, panics are not.

use std::io::Cursor;

use crate::frame::{encode_frame, read_frame, FrameError, MAX_FRAME_LEN};
use crate::handshake::{server_handshake, Handshake};
use crate::message::tests::{all_requests, all_responses};
use crate::message::{
    decode_request, decode_response, RequestDecodeError, RequestFrame, ResponseFrame,
};
use crate::server::Server;
use crate::test_util::Duplex;
use crate::SUPPORTED_VERSIONS;

/// Names the seed and round of the case being decoded when it panics, so that a failure
/// can be replayed (`fastrand::Rng::with_seed(seed)`, then skip to the round).
struct Case {
    seed: u64,
    round: usize,
}

impl Drop for Case {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing input: seed {:#x}, round {}", self.seed, self.round);
        }
    }
}

fn bytes(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    rng.fill(&mut v);
    v
}

/// Decodes `input` every way the crate can, ignoring the results; returns how many
/// frame bodies reached the message decoders.
fn decode_every_way(input: &[u8]) -> usize {
    let mut bodies = 0;
    let mut c = Cursor::new(input);
    for _ in 0..4 {
        match read_frame(&mut c, 1 << 16) {
            Ok(body) => {
                bodies += 1;
                let _ = decode_request(&body);
                let _ = decode_response(&body);
                let _ = serde_json::from_slice::<Handshake>(&body);
            }
            Err(FrameError::Closed) => break,
            Err(_) => {}
        }
    }
    let _ = decode_request(input);
    let _ = decode_response(input);
    let _ = server_handshake(&mut Duplex::new(input.to_vec()), &[1], "a", 1 << 16);
    if let Ok(mut server) = Server::accept(Duplex::new(input.to_vec()), SUPPORTED_VERSIONS, "a") {
        for _ in 0..8 {
            if !matches!(server.next_request(), Ok(Some(_))) {
                break;
            }
        }
    }
    bodies
}

#[test]
fn random_bytes_never_panic() {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut bodies = 0;
    for round in 0..3000 {
        let _case = Case { seed: SEED, round };
        let len = rng.usize(..256);
        let mut input = bytes(&mut rng, len);
        // Half the time, a plausible small length prefix so bodies get parsed.
        if round % 2 == 0 && input.len() >= 4 {
            let body_len = (input.len() - 4) as u32;
            input[..4].copy_from_slice(&body_len.to_be_bytes());
        }
        bodies += decode_every_way(&input);
    }
    // Not only the framing was shaken: the length-prefixed half reached the decoders.
    assert!(
        bodies >= 1000,
        "seed {SEED:#x}: only {bodies} bodies decoded"
    );
}

#[test]
fn mutated_valid_frames_never_panic() {
    const SEED: u64 = 0xdead_beef_cafe_f00d;
    let mut rng = fastrand::Rng::with_seed(SEED);
    // The mutations start from frames that decode.
    let mut valid: Vec<Vec<u8>> = Vec::new();
    for (i, request) in all_requests().into_iter().enumerate() {
        let f = RequestFrame {
            id: i as u64,
            request,
        };
        let frame = encode_frame(&f, "r", MAX_FRAME_LEN).unwrap();
        assert!(decode_request(&frame[4..]).is_ok(), "{f:?}");
        valid.push(frame);
    }
    for response in all_responses() {
        let f = ResponseFrame {
            id: Some(1),
            response,
        };
        let frame = encode_frame(&f, "r", MAX_FRAME_LEN).unwrap();
        assert!(decode_response(&frame[4..]).is_ok(), "{f:?}");
        valid.push(frame);
    }
    let hello = Handshake::Hello {
        versions: vec![1],
        software: "x".into(),
    };
    let hello = encode_frame(&hello, "h", MAX_FRAME_LEN).unwrap();
    for round in 0..1500 {
        let _case = Case { seed: SEED, round };
        let mut input = valid[round % valid.len()].clone();
        for _ in 0..=rng.usize(..4) {
            let at = rng.usize(..input.len());
            match rng.usize(..4) {
                0 => input[at] = rng.u8(..),
                1 => input[at] ^= 1 << rng.u32(..8),
                2 => input.truncate(at.max(1)),
                _ => {
                    let n = rng.usize(1..=8);
                    let extra = bytes(&mut rng, n);
                    input.splice(at..at, extra);
                }
            }
        }
        decode_every_way(&input);
        let mut with_hello = hello.clone();
        with_hello.extend_from_slice(&input);
        decode_every_way(&with_hello);
    }
}

/// `{"id":1,"<field>":{"type":"<kind>","x":[[[...]]]}}`, 100 000 lists deep, well-formed.
fn deeply_nested(field: &str, kind: &str) -> Vec<u8> {
    let mut body = format!(r#"{{"id":1,"{field}":{{"type":"{kind}","x":"#).into_bytes();
    body.extend(vec![b'['; 100_000]);
    body.extend(vec![b']'; 100_000]);
    body.extend(b"}}");
    body
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    // serde_json's recursion limit (128) stops the parse of the well-formed but deep
    // value: a malformed frame, not an answerable request and not a crash.
    match decode_request(&deeply_nested("request", "ping")) {
        Err(RequestDecodeError::Malformed(FrameError::Json { source, .. })) => {
            assert!(source.to_string().contains("recursion limit"), "{source}")
        }
        other => panic!("deeply nested request: {other:?}"),
    }
    match decode_response(&deeply_nested("response", "ok")) {
        Err(FrameError::Json { source, .. }) => {
            assert!(source.to_string().contains("recursion limit"), "{source}")
        }
        other => panic!("deeply nested response: {other:?}"),
    }
}
