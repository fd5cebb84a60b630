//! The secret that authenticates a process's stdio streams.
//!
//! The agent connects to the host (CID 2) at each stdio port of [`StdioPorts`] and
//! runv-shim relays what arrives there. The ports are predictable, and any process in
//! the guest that can open an `AF_VSOCK` socket can connect to them too, so a hostile
//! container could take an `exec`'s stream before the agent does and read, fake or break
//! its stdio. The host therefore puts a random [`StdioToken`] in [`StdioPorts`] (the
//! request travels over the agent's own connection, which no container process can read),
//! the agent writes it as the first [`TOKEN_LEN`] bytes of every stdio stream, and the shim
//! relays a stream only after it read exactly that preamble; every other connection is
//! dropped. The token is never on a command line: runv hands it to the shim through the
//! environment ([`TOKEN_ENV`]), readable by root alone.
//!
//! [`StdioPorts`]: crate::StdioPorts

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The preamble's length: the raw token bytes.
pub const TOKEN_LEN: usize = 32; // 64 hex digits (TokenError::Malformed says so)

/// The environment variable through which runv passes a process's token to its shim
/// (hex, as on the wire).
pub const TOKEN_ENV: &str = "RUNV_STDIO_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading {TOKEN_LEN} random bytes from /dev/urandom: {0}")]
    Random(io::Error),
    #[error("a stdio token is 64 hex digits, not {0:?}")]
    Malformed(String),
}

/// 32 random bytes. Copied by value; its Debug form never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StdioToken([u8; TOKEN_LEN]);

impl StdioToken {
    /// A fresh token from the kernel's CSPRNG.
    pub fn random() -> Result<Self, TokenError> {
        let mut b = [0u8; TOKEN_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(TokenError::Random)?;
        Ok(StdioToken(b))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Result<Self, TokenError> {
        let bad = || TokenError::Malformed(s.chars().take(80).collect());
        if s.len() != TOKEN_LEN * 2 || !s.is_ascii() {
            return Err(bad());
        }
        let mut b = [0u8; TOKEN_LEN];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(StdioToken(b))
    }

    /// The agent's side: the preamble, first on a freshly connected stream.
    pub fn write_preamble(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.0)?;
        w.flush()
    }

    /// The shim's side: reads exactly [`TOKEN_LEN`] bytes (the caller bounds the time
    /// with a read timeout) and tells whether they are this token. The comparison takes
    /// the same time whatever the bytes. A stream that ends early is an error.
    pub fn read_preamble(&self, r: &mut impl Read) -> io::Result<bool> {
        let mut got = [0u8; TOKEN_LEN];
        r.read_exact(&mut got)?;
        Ok(got
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0)
    }
}

impl fmt::Debug for StdioToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StdioToken(..)")
    }
}

impl Serialize for StdioToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for StdioToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StdioToken::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_round_trip_through_hex_and_json() {
        let a = StdioToken::random().unwrap();
        let b = StdioToken::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(StdioToken::from_hex(&a.to_hex()).unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{}\"", a.to_hex()));
        assert_eq!(serde_json::from_str::<StdioToken>(&json).unwrap(), a);
        assert_eq!(
            format!("{a:?}"),
            "StdioToken(..)",
            "Debug never shows the secret"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_naming_the_input() {
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
            &"é".repeat(32),
        ] {
            let e = StdioToken::from_hex(bad).unwrap_err();
            assert!(e.to_string().contains("64 hex digits"), "{e}");
        }
        assert!(serde_json::from_str::<StdioToken>("\"abc\"").is_err());
    }

    #[test]
    fn the_preamble_is_checked_byte_for_byte() {
        let t = StdioToken::random().unwrap();
        let mut wire = Vec::new();
        t.write_preamble(&mut wire).unwrap();
        wire.extend_from_slice(b"payload");
        let mut r = &wire[..];
        assert!(t.read_preamble(&mut r).unwrap());
        assert_eq!(r, b"payload", "only the preamble is consumed");
        for i in [0, 17, TOKEN_LEN - 1] {
            let mut forged = wire.clone();
            forged[i] ^= 1;
            assert!(
                !t.read_preamble(&mut &forged[..]).unwrap(),
                "byte {i} flipped"
            );
        }
        let other = StdioToken::random().unwrap();
        assert!(!other.read_preamble(&mut &wire[..]).unwrap());
        // Short: an error, never a match.
        assert!(t.read_preamble(&mut &wire[..TOKEN_LEN - 1]).is_err());
    }
}
