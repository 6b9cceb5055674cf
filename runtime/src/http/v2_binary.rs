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
//! This module only splits, checks and converts bytes; [`super::v2`] reads the JSON part
//! and decides which inputs and outputs are binary. Nothing here trusts a size it is given:
//! every length is checked against what is there before it is used.

use crate::tensor::TensorData;

/// The header that gives the length in bytes of the JSON part of a body in this framing.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The protocol's element types the host takes, and the width of each in binary data.
/// Integers of every width become the host's 64-bit integers, as they do from JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    /// The type the protocol names `name`; `None` for one the host does not take (BOOL,
    /// UINT64, FP16, BF16 and anything else).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "INT8" => Self::Int8,
            "INT16" => Self::Int16,
            "INT32" => Self::Int32,
            "INT64" => Self::Int64,
            "UINT8" => Self::Uint8,
            "UINT16" => Self::Uint16,
            "UINT32" => Self::Uint32,
            "FP32" => Self::Fp32,
            "FP64" => Self::Fp64,
            "BYTES" => Self::Bytes,
            _ => return None,
        })
    }

    /// The protocol's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    /// Bytes per element in binary data; `None` for BYTES, whose elements vary.
    pub fn width(self) -> Option<usize> {
        match self {
            Self::Int8 | Self::Uint8 => Some(1),
            Self::Int16 | Self::Uint16 => Some(2),
            Self::Int32 | Self::Uint32 | Self::Fp32 => Some(4),
            Self::Int64 | Self::Fp64 => Some(8),
            Self::Bytes => None,
        }
    }
}

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
        "input `{input}` ({datatype}, shape {shape:?}) takes {expected} bytes of binary data, but its \
         binary_data_size is {declared}"
    )]
    SizeMismatch { input: String, datatype: &'static str, shape: Vec<usize>, expected: u64, declared: u64 },
    #[error("input `{input}` has a shape {shape:?} too large to hold in memory")]
    Overflow { input: String, shape: Vec<usize> },
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
    #[error("input `{input}` (BYTES) element {index}: {problem}")]
    BytesElement { input: String, index: usize, problem: &'static str },
    #[error(
        "input `{input}` (BYTES) has {actual} elements in its binary data, but its shape {shape:?} holds {expected}"
    )]
    BytesTooFew { input: String, shape: Vec<usize>, expected: usize, actual: usize },
    #[error("input `{input}` (BYTES) has more elements in its binary data than its shape {shape:?} holds ({expected})")]
    BytesTooMany { input: String, shape: Vec<usize>, expected: usize },
    #[error("output `{output}` (BYTES) has an element of {length} bytes, more than a 4-byte length can give")]
    ElementTooLong { output: String, length: usize },
}

impl BinaryError {
    /// Whether the client is at fault (the protocol's 400); otherwise the server is (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::ElementTooLong { .. })
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

/// Checks `declared` (an input's binary_data_size) against what its datatype and shape
/// take, where that is fixed (every type but BYTES).
pub fn check_size(input: &str, datatype: Datatype, shape: &[usize], declared: u64) -> Result<(), BinaryError> {
    let Some(width) = datatype.width() else {
        return Ok(());
    };
    let overflow = || BinaryError::Overflow { input: input.to_owned(), shape: shape.to_vec() };
    let expected = shape
        .iter()
        .try_fold(width, |bytes, &dim| bytes.checked_mul(dim))
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(overflow)?;
    if expected != declared {
        return Err(BinaryError::SizeMismatch {
            input: input.to_owned(),
            datatype: datatype.name(),
            shape: shape.to_vec(),
            expected,
            declared,
        });
    }
    Ok(())
}

/// One input's binary data as host elements. `bytes` is exactly the input's share, its
/// size already checked by [`check_size`] for fixed-width types.
pub fn decode(input: &str, datatype: Datatype, shape: &[usize], bytes: &[u8]) -> Result<TensorData, BinaryError> {
    Ok(match datatype {
        Datatype::Fp32 => TensorData::Float32(fixed(bytes, f32::from_le_bytes)),
        Datatype::Fp64 => TensorData::Float64(fixed(bytes, f64::from_le_bytes)),
        Datatype::Int64 => TensorData::Int64(fixed(bytes, i64::from_le_bytes)),
        Datatype::Int32 => TensorData::Int64(fixed(bytes, |b| i64::from(i32::from_le_bytes(b)))),
        Datatype::Int16 => TensorData::Int64(fixed(bytes, |b| i64::from(i16::from_le_bytes(b)))),
        Datatype::Int8 => TensorData::Int64(fixed(bytes, |b| i64::from(i8::from_le_bytes(b)))),
        Datatype::Uint32 => TensorData::Int64(fixed(bytes, |b| i64::from(u32::from_le_bytes(b)))),
        Datatype::Uint16 => TensorData::Int64(fixed(bytes, |b| i64::from(u16::from_le_bytes(b)))),
        Datatype::Uint8 => TensorData::Int64(fixed(bytes, |b| i64::from(u8::from_le_bytes(b)))),
        Datatype::Bytes => TensorData::Text(strings(input, shape, bytes)?),
    })
}

/// Fixed-width little-endian elements; `bytes` is a whole number of them.
fn fixed<const N: usize, T>(bytes: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).filter_map(|chunk| <[u8; N]>::try_from(chunk).ok()).map(from).collect()
}

/// BYTES elements: each a 4-byte little-endian length, then that many bytes of UTF-8 (the
/// host's text tensors are strings); exactly as many as `shape` holds, filling `bytes`.
fn strings(input: &str, shape: &[usize], mut bytes: &[u8]) -> Result<Vec<String>, BinaryError> {
    let elements = shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
        .ok_or_else(|| BinaryError::Overflow { input: input.to_owned(), shape: shape.to_vec() })?;
    let problem =
        |index: usize, problem: &'static str| BinaryError::BytesElement { input: input.to_owned(), index, problem };
    // Every element takes at least its 4-byte length: reserve no more than the data can hold.
    let mut values = Vec::with_capacity(elements.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let index = values.len();
        if index == elements {
            return Err(BinaryError::BytesTooMany {
                input: input.to_owned(),
                shape: shape.to_vec(),
                expected: elements,
            });
        }
        let (length, rest) =
            bytes.split_first_chunk::<4>().ok_or_else(|| problem(index, "its 4-byte length is cut off"))?;
        let length = usize::try_from(u32::from_le_bytes(*length))
            .map_err(|_| problem(index, "its length runs past the input's binary data"))?;
        if length > rest.len() {
            return Err(problem(index, "its length runs past the input's binary data"));
        }
        let (value, rest) = rest.split_at(length);
        let value = std::str::from_utf8(value).map_err(|_| problem(index, "is not UTF-8 text"))?;
        values.push(value.to_owned());
        bytes = rest;
    }
    if values.len() != elements {
        return Err(BinaryError::BytesTooFew {
            input: input.to_owned(),
            shape: shape.to_vec(),
            expected: elements,
            actual: values.len(),
        });
    }
    Ok(values)
}

/// Appends an output's elements to `into` in binary form; returns the bytes appended.
pub fn encode(output: &str, data: &TensorData, into: &mut Vec<u8>) -> Result<usize, BinaryError> {
    let start = into.len();
    match data {
        TensorData::Float32(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Float64(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Int64(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Text(values) => {
            for value in values {
                let length = u32::try_from(value.len())
                    .map_err(|_| BinaryError::ElementTooLong { output: output.to_owned(), length: value.len() })?;
                into.extend_from_slice(&length.to_le_bytes());
                into.extend_from_slice(value.as_bytes());
            }
        }
    }
    Ok(into.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le_f32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|value| value.to_le_bytes()).collect()
    }

    fn bytes_elements(values: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in values {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

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

    #[test]
    fn a_declared_size_must_be_the_shapes_elements_times_the_width() {
        assert_eq!(check_size("x", Datatype::Fp32, &[2, 17], 136), Ok(()));
        assert_eq!(check_size("x", Datatype::Int8, &[3], 3), Ok(()));
        assert_eq!(check_size("x", Datatype::Fp64, &[0, 4], 0), Ok(()));
        let error = check_size("features", Datatype::Fp32, &[2, 17], 132).unwrap_err();
        assert_eq!(
            error.to_string(),
            "input `features` (FP32, shape [2, 17]) takes 136 bytes of binary data, but its binary_data_size is 132"
        );
        for shape in [vec![usize::MAX, 2], vec![1 << 40, 1 << 40], vec![usize::MAX / 4 + 1]] {
            assert!(
                matches!(check_size("x", Datatype::Fp32, &shape, 0), Err(BinaryError::Overflow { .. })),
                "{shape:?}"
            );
        }
        // BYTES elements vary: their size is checked while decoding.
        assert_eq!(check_size("x", Datatype::Bytes, &[usize::MAX], 7), Ok(()));
    }

    #[test]
    fn fixed_width_elements_decode_little_endian_and_widen_integers() {
        assert_eq!(decode("x", Datatype::Fp32, &[2], &le_f32(&[1.5, -2.0])), Ok(TensorData::Float32(vec![1.5, -2.0])));
        assert_eq!(decode("x", Datatype::Fp64, &[1], &0.25f64.to_le_bytes()), Ok(TensorData::Float64(vec![0.25])));
        assert_eq!(decode("x", Datatype::Int64, &[1], &(-7i64).to_le_bytes()), Ok(TensorData::Int64(vec![-7])));
        assert_eq!(decode("x", Datatype::Int32, &[1], &(-7i32).to_le_bytes()), Ok(TensorData::Int64(vec![-7])));
        assert_eq!(decode("x", Datatype::Int16, &[1], &[0xff, 0x7f]), Ok(TensorData::Int64(vec![32767])));
        assert_eq!(decode("x", Datatype::Int8, &[2], &[0xff, 0x01]), Ok(TensorData::Int64(vec![-1, 1])));
        assert_eq!(decode("x", Datatype::Uint8, &[1], &[0xff]), Ok(TensorData::Int64(vec![255])));
        assert_eq!(decode("x", Datatype::Uint16, &[1], &[0xff, 0xff]), Ok(TensorData::Int64(vec![65535])));
        assert_eq!(
            decode("x", Datatype::Uint32, &[1], &u32::MAX.to_le_bytes()),
            Ok(TensorData::Int64(vec![4294967295]))
        );
    }

    #[test]
    fn bytes_elements_are_length_prefixed_utf8_exactly_as_many_as_the_shape() {
        let data = bytes_elements(&[b"red", b"", "\u{e9}t\u{e9}".as_bytes()]);
        assert_eq!(
            decode("colour", Datatype::Bytes, &[3, 1], &data),
            Ok(TensorData::Text(vec!["red".into(), String::new(), "\u{e9}t\u{e9}".into()]))
        );
        assert_eq!(
            decode("colour", Datatype::Bytes, &[4], &data),
            Err(BinaryError::BytesTooFew { input: "colour".into(), shape: vec![4], expected: 4, actual: 3 })
        );
        assert_eq!(
            decode("colour", Datatype::Bytes, &[2], &data),
            Err(BinaryError::BytesTooMany { input: "colour".into(), shape: vec![2], expected: 2 })
        );
        let element = |index, problem| BinaryError::BytesElement { input: "colour".into(), index, problem };
        let cut_length = [&bytes_elements(&[b"red"])[..], &[1, 0]].concat();
        assert_eq!(
            decode("colour", Datatype::Bytes, &[2], &cut_length),
            Err(element(1, "its 4-byte length is cut off"))
        );
        let mut long = bytes_elements(&[b"red"]);
        long[0] = 4;
        assert_eq!(
            decode("colour", Datatype::Bytes, &[1], &long),
            Err(element(0, "its length runs past the input's binary data"))
        );
        let huge = [&u32::MAX.to_le_bytes()[..], b"abc"].concat();
        assert_eq!(
            decode("colour", Datatype::Bytes, &[1], &huge),
            Err(element(0, "its length runs past the input's binary data"))
        );
        assert_eq!(
            decode("colour", Datatype::Bytes, &[1], &bytes_elements(&[b"\xff\xfe"])),
            Err(element(0, "is not UTF-8 text"))
        );
        assert!(matches!(decode("colour", Datatype::Bytes, &[usize::MAX, 2], &[]), Err(BinaryError::Overflow { .. })));
        // A shape claiming many elements reserves no more than the data could hold.
        assert!(matches!(decode("colour", Datatype::Bytes, &[usize::MAX], &[]), Err(BinaryError::BytesTooFew { .. })));
    }

    #[test]
    fn outputs_encode_as_inputs_decode() {
        let mut out = Vec::new();
        assert_eq!(encode("p", &TensorData::Float32(vec![1.5, -2.0]), &mut out), Ok(8));
        assert_eq!(encode("l", &TensorData::Int64(vec![2]), &mut out), Ok(8));
        assert_eq!(encode("d", &TensorData::Float64(vec![0.5]), &mut out), Ok(8));
        assert_eq!(encode("t", &TensorData::Text(vec!["ab".into(), String::new()]), &mut out), Ok(10));
        assert_eq!(decode("p", Datatype::Fp32, &[2], &out[..8]), Ok(TensorData::Float32(vec![1.5, -2.0])));
        assert_eq!(decode("l", Datatype::Int64, &[1], &out[8..16]), Ok(TensorData::Int64(vec![2])));
        assert_eq!(decode("d", Datatype::Fp64, &[1], &out[16..24]), Ok(TensorData::Float64(vec![0.5])));
        assert_eq!(
            decode("t", Datatype::Bytes, &[2], &out[24..]),
            Ok(TensorData::Text(vec!["ab".into(), String::new()]))
        );
    }

    #[test]
    fn only_the_types_the_host_takes_parse() {
        for name in ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "FP32", "FP64", "BYTES"] {
            assert_eq!(Datatype::parse(name).map(Datatype::name), Some(name));
        }
        for name in ["BOOL", "UINT64", "FP16", "BF16", "fp32", "", "FP32 "] {
            assert_eq!(Datatype::parse(name), None, "{name}");
        }
    }
}
