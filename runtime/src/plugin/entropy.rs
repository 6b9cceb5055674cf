//! The randomness a plugin sees through `wasi:random`: deterministic per call, so a
//! plugin's answer stays a pure function of its request.
//!
//! Denying `wasi:random` would break ordinary plugins (Rust std imports
//! `wasi:random/insecure-seed` for every `HashMap`), and real entropy would make two
//! identical requests disagree. So every export call keys a ChaCha20 generator with the
//! sha256 of the export's name and its input (the request JSON), and all three interfaces
//! read from it: `random` and `insecure` on streams 0 and 1, `insecure-seed` the first
//! 128 bits of stream 2. The same request gives the same bytes on every appliance of a
//! version; a different request gives unrelated ones. A hash-map seed derived from the
//! request also keeps flooding hard: colliding keys change the request, hence the seed.
//!
//! This deliberately departs from the WASI note that deterministic hosts omit
//! `get-random-bytes`: a preprocessing plugin has no business making secrets, and one
//! using a crate that asks for random bytes (ids, shuffles) still loads and stays pure.
//!
//! It owns nothing else: clocks, files and sockets are [`super::sandbox`]'s.

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};

/// Most bytes one `get-random-bytes` call may ask for. Generating them is host work that
/// burns no fuel, so it is bounded per call; a key or a nonce is 32 bytes.
pub(super) const MAX_RANDOM_BYTES: u64 = 1024;

const SECURE_STREAM: u64 = 0;
const INSECURE_STREAM: u64 = 1;
const SEED_STREAM: u64 = 2;

/// The generators of the current call, keyed on first use: most calls never ask, and
/// hashing a large request costs more than copying it.
pub(super) struct Entropy {
    input: Vec<u8>,
    streams: Option<Streams>,
}

struct Streams {
    secure: ChaCha20Rng,
    insecure: ChaCha20Rng,
    seed: (u64, u64),
}

impl Entropy {
    pub(super) fn new() -> Self {
        Self { input: Vec::new(), streams: None }
    }

    /// Keys what the next call draws to `export` and `input`.
    pub(super) fn rekey(&mut self, export: &str, input: &[u8]) {
        self.input.clear();
        // The name's length first, so no export/input split reads like another.
        self.input.extend_from_slice(&(export.len() as u64).to_le_bytes());
        self.input.extend_from_slice(export.as_bytes());
        self.input.extend_from_slice(input);
        self.streams = None;
    }

    fn streams(&mut self) -> &mut Streams {
        let input = &self.input;
        self.streams.get_or_insert_with(|| {
            let key: [u8; 32] = Sha256::digest(input).into();
            let stream = |id| {
                let mut rng = ChaCha20Rng::from_seed(key);
                rng.set_stream(id);
                rng
            };
            let mut seed = stream(SEED_STREAM);
            Streams {
                secure: stream(SECURE_STREAM),
                insecure: stream(INSECURE_STREAM),
                seed: (seed.next_u64(), seed.next_u64()),
            }
        })
    }
}

fn bytes(rng: &mut ChaCha20Rng, len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("the plugin asked for {len} random bytes in one call; the limit is {MAX_RANDOM_BYTES}");
    }
    let mut bytes = vec![0; len as usize];
    rng.fill_bytes(&mut bytes);
    Ok(bytes)
}

impl random::Host for Entropy {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        bytes(&mut self.streams().secure, len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.streams().secure.next_u64())
    }
}

impl insecure::Host for Entropy {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        bytes(&mut self.streams().insecure, len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.streams().insecure.next_u64())
    }
}

impl insecure_seed::Host for Entropy {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok(self.streams().seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use random::Host as _;

    fn draw(export: &str, input: &[u8]) -> (u64, Vec<u8>, u64, (u64, u64)) {
        let mut entropy = Entropy::new();
        entropy.rekey(export, input);
        let secure = entropy.get_random_u64().unwrap();
        let bytes = entropy.get_random_bytes(16).unwrap();
        let insecure = insecure::Host::get_insecure_random_u64(&mut entropy).unwrap();
        (secure, bytes, insecure, insecure_seed::Host::insecure_seed(&mut entropy).unwrap())
    }

    #[test]
    fn the_same_call_draws_the_same_values() {
        assert_eq!(draw("preprocess", b"{\"a\": 1}"), draw("preprocess", b"{\"a\": 1}"));
    }

    #[test]
    fn another_input_or_export_draws_other_values() {
        let first = draw("preprocess", b"{\"a\": 1}");
        assert_ne!(first, draw("preprocess", b"{\"a\": 2}"));
        assert_ne!(first, draw("postprocess", b"{\"a\": 1}"));
        // The length prefix keeps the export/input boundary in the key.
        assert_ne!(draw("pre", b"process"), draw("preprocess", b""));
    }

    #[test]
    fn the_streams_are_distinct() {
        let (secure, _, insecure, (seed, _)) = draw("preprocess", b"{}");
        assert_ne!(secure, insecure);
        assert_ne!(secure, seed);
    }

    #[test]
    fn rekeying_restarts_the_streams() {
        let mut entropy = Entropy::new();
        entropy.rekey("preprocess", b"{}");
        let first = entropy.get_random_u64().unwrap();
        assert_ne!(entropy.get_random_u64().unwrap(), first, "a stream moves on within a call");
        entropy.rekey("preprocess", b"{}");
        assert_eq!(entropy.get_random_u64().unwrap(), first);
    }

    #[test]
    fn large_requests_for_bytes_are_refused() {
        let mut entropy = Entropy::new();
        assert_eq!(entropy.get_random_bytes(MAX_RANDOM_BYTES).unwrap().len(), 1024);
        let error = entropy.get_random_bytes(MAX_RANDOM_BYTES + 1).unwrap_err();
        assert!(error.to_string().contains("1025 random bytes"), "{error}");
        assert!(insecure::Host::get_insecure_random_bytes(&mut entropy, u64::MAX).is_err());
    }
}
