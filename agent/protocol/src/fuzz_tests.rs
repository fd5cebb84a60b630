//! Random and mutated input to every decoder: errors are fine, panics are not.

use std::io::Cursor;

use crate::frame::{encode_frame, read_frame, FrameError, MAX_FRAME_LEN};
use crate::handshake::{server_handshake, Handshake};
use crate::message::tests::{all_requests, all_responses};
use crate::message::{decode_request, decode_response, RequestFrame, ResponseFrame};
use crate::server::Server;
use crate::test_util::Duplex;
use crate::SUPPORTED_VERSIONS;

/// xorshift64*: small, deterministic, good enough to shake a decoder.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Decodes `input` every way the crate can, ignoring the results.
fn decode_every_way(input: &[u8]) {
    let mut c = Cursor::new(input);
    for _ in 0..4 {
        match read_frame(&mut c, 1 << 16) {
            Ok(body) => {
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
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let len = rng.below(256);
        let mut input = rng.bytes(len);
        // Half the time, a plausible small length prefix so bodies get parsed.
        if round % 2 == 0 && input.len() >= 4 {
            let body_len = (input.len() - 4) as u32;
            input[..4].copy_from_slice(&body_len.to_be_bytes());
        }
        decode_every_way(&input);
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for (i, request) in all_requests().into_iter().enumerate() {
        let f = RequestFrame {
            id: i as u64,
            request,
        };
        seeds.push(encode_frame(&f, "r", MAX_FRAME_LEN).unwrap());
    }
    for response in all_responses() {
        let f = ResponseFrame {
            id: Some(1),
            response,
        };
        seeds.push(encode_frame(&f, "r", MAX_FRAME_LEN).unwrap());
    }
    let hello = Handshake::Hello {
        versions: vec![1],
        software: "x".into(),
    };
    let hello = encode_frame(&hello, "h", MAX_FRAME_LEN).unwrap();
    for round in 0..1500 {
        let mut input = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(input.len());
            match rng.below(4) {
                0 => input[at] = rng.next() as u8,
                1 => input[at] ^= 1 << rng.below(8),
                2 => input.truncate(at.max(1)),
                _ => {
                    let n = rng.below(8) + 1;
                    let extra = rng.bytes(n);
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

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let mut body = br#"{"id":1,"request":{"type":"ping","x":"#.to_vec();
    body.extend(vec![b'['; 100_000]);
    let _ = decode_request(&body);
    let _ = decode_response(&body);
}
