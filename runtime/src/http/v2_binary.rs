//! Triton's binary tensor data extension of the Open Inference Protocol over HTTP, as
//! `tritonclient.http` speaks it by default.
//!
//! A request in this framing is a JSON inference request followed by raw tensor bytes; the
//! `Inference-Header-Content-Length` header gives the JSON part's length. Each input whose
//! `parameters.binary_data_size` is set takes that many bytes of the rest, in input order:
//! elements little-endian, row-major, without padding; a BYTES element is a 4-byte
//! little-endian length followed by that many bytes. The sizes must add up to exactly the
//! rest of the body. A response with binary outputs is framed the same way: its JSON (each
//! binary output with `parameters.binary_data_size` and no `data`), then the outputs' bytes
//! in the order the JSON lists them.
//!
//! This module only splits the body and hands each input its bytes; the bytes' layout is
//! the protocol's, shared with gRPC ([`crate::oip`]), and [`super::v2`] reads the JSON part
//! and decides which inputs and outputs are binary. Nothing here trusts a size it is given:
//! every length is checked against what is there before it is used.

use crate::oip::TensorFault;

/// The header that gives the length in bytes of the JSON part of a body in this framing.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Why a body in the binary framing, or one input's binary data, is refused. Each message
/// names the input at fault (where one is) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("the Inference-Header-Content-Length header must be a whole number of bytes, not {0}")]
    HeaderLengthNotANumber(String),
    #[error("the Inference-Header-Content-Length header says the JSON part is {header} bytes, but the body is {body}")]
    HeaderBeyondBody { header: u64, body: usize },
    #[error(
        "input `{input}` has parameters.binary_data_size, but the request has no Inference-Header-Content-Length \
         header, so no binary data"
    )]
    NoBinaryPart { input: String },
    #[error("input `{input}` has both `data` and parameters.binary_data_size; give one or the other")]
    DataAndBinary { input: String },
    #[error("input `{input}` has neither `data` nor parameters.binary_data_size")]
    NoData { input: String },
    #[error(
        "input `{input}` has binary_data_size {declared} from byte {offset} of the binary data, but the binary \
         data ends after {available} bytes"
    )]
    Truncated { input: String, declared: u64, offset: usize, available: usize },
    #[error(
        "the binary data after the JSON part is {available} bytes, but the inputs' binary_data_size add up to \
         {claimed}"
    )]
    Unclaimed { available: usize, claimed: usize },
    /// A rule of the tensors themselves, whichever way they came.
    #[error(transparent)]
    Tensor(#[from] TensorFault),
}

impl BinaryError {
    /// Whether the client is at fault (the protocol's 400); otherwise the server is (500).
    pub fn is_client_error(&self) -> bool {
        match self {
            Self::Tensor(fault) => fault.is_client_error(),
            _ => true,
        }
    }
}

/// Splits a request body into its JSON part and its binary data by the value of the
/// `Inference-Header-Content-Length` header (`None`: no header, the whole body is JSON).
pub fn split<'a>(body: &'a [u8], header_length: Option<&[u8]>) -> Result<(&'a [u8], &'a [u8]), BinaryError> {
    let Some(value) = header_length else {
        return Ok((body, &[]));
    };
    let text = String::from_utf8_lossy(value);
    let length: u64 =
        text.trim().parse().map_err(|_| BinaryError::HeaderLengthNotANumber(super::error::echo(&text)))?;
    let too_long = || BinaryError::HeaderBeyondBody { header: length, body: body.len() };
    let at = usize::try_from(length).map_err(|_| too_long())?;
    if at > body.len() {
        return Err(too_long());
    }
    Ok(body.split_at(at))
}

/// The binary data of a request, handed out input by input in the order the inputs come.
#[derive(Debug)]
pub struct BinaryData<'a> {
    rest: &'a [u8],
    /// Bytes handed out so far.
    offset: usize,
    /// Whether the request had the header at all (a body may be all JSON and still have it).
    framed: bool,
}

impl<'a> BinaryData<'a> {
    /// The binary part from [`split`]; `framed` says whether the header was there.
    pub fn new(binary: &'a [u8], framed: bool) -> Self {
        Self { rest: binary, offset: 0, framed }
    }

    /// The next `declared` bytes, for `input`.
    pub fn take(&mut self, input: &str, declared: u64) -> Result<&'a [u8], BinaryError> {
        if !self.framed {
            return Err(BinaryError::NoBinaryPart { input: input.to_owned() });
        }
        let truncated = || BinaryError::Truncated {
            input: input.to_owned(),
            declared,
            offset: self.offset,
            available: self.offset + self.rest.len(),
        };
        let length = usize::try_from(declared).map_err(|_| truncated())?;
        if length > self.rest.len() {
            return Err(truncated());
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        self.offset += length;
        Ok(taken)
    }

    /// Checks that the inputs claimed every byte.
    pub fn finish(self) -> Result<(), BinaryError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(BinaryError::Unclaimed { available: self.offset + self.rest.len(), claimed: self.offset })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_length_splits_json_from_binary_data() {
        let body = b"{\"inputs\": []}\x01\x02";
        assert_eq!(split(body, Some(b"14")), Ok((&body[..14], &body[14..])));
        assert_eq!(split(body, Some(b" 16 ")), Ok((&body[..], &[][..])), "the whole body, padded value");
        assert_eq!(split(body, Some(b"0")), Ok((&[][..], &body[..])));
        assert_eq!(split(body, None), Ok((&body[..], &[][..])), "no header: all JSON");
    }

    #[test]
    fn a_header_length_that_is_not_a_size_within_the_body_is_refused() {
        let body = b"{}";
        assert_eq!(split(body, Some(b"3")), Err(BinaryError::HeaderBeyondBody { header: 3, body: 2 }));
        assert_eq!(
            split(body, Some(b"18446744073709551615")),
            Err(BinaryError::HeaderBeyondBody { header: u64::MAX, body: 2 })
        );
        for value in [&b""[..], b"-1", b"1.5", b"0x10", b"18446744073709551616", b"\xff\xfe", b"2 2"] {
            assert!(matches!(split(body, Some(value)), Err(BinaryError::HeaderLengthNotANumber(_))), "{value:?}");
        }
        let long = vec![b'9'; 500];
        let message = split(body, Some(&long)).unwrap_err().to_string();
        assert!(message.len() < 200, "an outside value is echoed cut short: {message}");
    }

    #[test]
    fn inputs_take_their_bytes_in_order_and_must_claim_them_all() {
        let data = [1u8, 2, 3, 4, 5, 6];
        let mut binary = BinaryData::new(&data, true);
        assert_eq!(binary.take("a", 2), Ok(&data[..2]));
        assert_eq!(binary.take("b", 0), Ok(&[][..]));
        assert_eq!(binary.take("c", 3), Ok(&data[2..5]));
        assert_eq!(binary.finish(), Err(BinaryError::Unclaimed { available: 6, claimed: 5 }));

        let mut exact = BinaryData::new(&data, true);
        assert!(exact.take("a", 6).is_ok());
        assert_eq!(exact.finish(), Ok(()));
    }

    #[test]
    fn a_size_past_the_end_is_truncation_whatever_its_magnitude() {
        let data = [0u8; 8];
        for declared in [9, u64::from(u32::MAX), u64::MAX, u64::MAX - 3] {
            let mut binary = BinaryData::new(&data, true);
            binary.take("a", 4).unwrap();
            assert_eq!(
                binary.take("b", declared),
                Err(BinaryError::Truncated { input: "b".into(), declared, offset: 4, available: 8 }),
            );
        }
        let mut unframed = BinaryData::new(&[], false);
        assert_eq!(unframed.take("x", 0), Err(BinaryError::NoBinaryPart { input: "x".into() }));
    }
}
