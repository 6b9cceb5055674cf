//! Tensor elements as raw bytes: little-endian, row-major, without padding; a BYTES element
//! is a 4-byte little-endian length and that many bytes. The same layout for Triton's
//! binary tensor data over HTTP and for `raw_input_contents` / `raw_output_contents` over
//! gRPC. Nothing here trusts a size it is given: every length is checked against what is
//! there before it is used.

use super::TensorFault;
use crate::tensor::TensorData;

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

/// Checks `declared`, the size of an input's raw bytes as the request gives it in `declared_in`
/// (`binary_data_size`, a `raw_input_contents` entry), against what its datatype and shape
/// take, where that is fixed (every type but BYTES).
pub fn check_size(
    input: &str,
    datatype: Datatype,
    shape: &[usize],
    declared: u64,
    declared_in: &'static str,
) -> Result<(), TensorFault> {
    let Some(width) = datatype.width() else {
        return Ok(());
    };
    let overflow = || TensorFault::Overflow { input: input.to_owned(), shape: shape.to_vec() };
    let expected = shape
        .iter()
        .try_fold(width, |bytes, &dim| bytes.checked_mul(dim))
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(overflow)?;
    if expected != declared {
        return Err(TensorFault::SizeMismatch {
            input: input.to_owned(),
            datatype: datatype.name(),
            shape: shape.to_vec(),
            expected,
            declared,
            declared_in,
        });
    }
    Ok(())
}

/// One input's binary data as host elements. `bytes` is exactly the input's share, its
/// size already checked by [`check_size`] for fixed-width types.
pub fn decode(input: &str, datatype: Datatype, shape: &[usize], bytes: &[u8]) -> Result<TensorData, TensorFault> {
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
fn strings(input: &str, shape: &[usize], mut bytes: &[u8]) -> Result<Vec<String>, TensorFault> {
    let elements = shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
        .ok_or_else(|| TensorFault::Overflow { input: input.to_owned(), shape: shape.to_vec() })?;
    let problem =
        |index: usize, problem: &'static str| TensorFault::BytesElement { input: input.to_owned(), index, problem };
    // Every element takes at least its 4-byte length: reserve no more than the data can hold.
    let mut values = Vec::with_capacity(elements.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let index = values.len();
        if index == elements {
            return Err(TensorFault::BytesTooMany {
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
        return Err(TensorFault::BytesTooFew {
            input: input.to_owned(),
            shape: shape.to_vec(),
            expected: elements,
            actual: values.len(),
        });
    }
    Ok(values)
}

/// Appends an output's elements to `into` in binary form; returns the bytes appended.
pub fn encode(output: &str, data: &TensorData, into: &mut Vec<u8>) -> Result<usize, TensorFault> {
    let start = into.len();
    match data {
        TensorData::Float32(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Float64(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Int64(values) => values.iter().for_each(|value| into.extend_from_slice(&value.to_le_bytes())),
        TensorData::Text(values) => {
            for value in values {
                let length = u32::try_from(value.len())
                    .map_err(|_| TensorFault::ElementTooLong { output: output.to_owned(), length: value.len() })?;
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

    /// Where the tests say a declared size came from.
    const SIZE: &str = "binary_data_size";

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
    fn a_declared_size_must_be_the_shapes_elements_times_the_width() {
        assert_eq!(check_size("x", Datatype::Fp32, &[2, 17], 136, SIZE), Ok(()));
        assert_eq!(check_size("x", Datatype::Int8, &[3], 3, SIZE), Ok(()));
        assert_eq!(check_size("x", Datatype::Fp64, &[0, 4], 0, SIZE), Ok(()));
        let error = check_size("features", Datatype::Fp32, &[2, 17], 132, SIZE).unwrap_err();
        assert_eq!(
            error.to_string(),
            "input `features` (FP32, shape [2, 17]) takes 136 bytes of binary data, but its binary_data_size is 132"
        );
        for shape in [vec![usize::MAX, 2], vec![1 << 40, 1 << 40], vec![usize::MAX / 4 + 1]] {
            assert!(
                matches!(check_size("x", Datatype::Fp32, &shape, 0, SIZE), Err(TensorFault::Overflow { .. })),
                "{shape:?}"
            );
        }
        // BYTES elements vary: their size is checked while decoding.
        assert_eq!(check_size("x", Datatype::Bytes, &[usize::MAX], 7, SIZE), Ok(()));
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
            Err(TensorFault::BytesTooFew { input: "colour".into(), shape: vec![4], expected: 4, actual: 3 })
        );
        assert_eq!(
            decode("colour", Datatype::Bytes, &[2], &data),
            Err(TensorFault::BytesTooMany { input: "colour".into(), shape: vec![2], expected: 2 })
        );
        let element = |index, problem| TensorFault::BytesElement { input: "colour".into(), index, problem };
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
        assert!(matches!(decode("colour", Datatype::Bytes, &[usize::MAX, 2], &[]), Err(TensorFault::Overflow { .. })));
        // A shape claiming many elements reserves no more than the data could hold.
        assert!(matches!(decode("colour", Datatype::Bytes, &[usize::MAX], &[]), Err(TensorFault::BytesTooFew { .. })));
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
