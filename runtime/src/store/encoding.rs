//! How a [`PredictionRecord`] is laid out on disk: the bytes of a `predictions` value, and nothing about
//! where they go.
//!
//! A value starts with one byte naming its format:
//! - `0x01`: a protobuf message ([`StoredPrediction`], encoded with prost). Protobuf because the record
//!   will grow: a field added later under a new tag is skipped by older readers and absent (default) in
//!   older records, with no migration. The key already holds the id, and the time is the id's own unless
//!   it differs, so neither is repeated; digests are their 32 bytes, not 64 hex characters.
//! - `{`: the JSON object every record was before format 1. Still read, never written.
//!
//! The JSON documents a record carries (the client's input, the outputs, the explanation) stay JSON text
//! inside the message: they are whatever shape the bundle gives them, and JSON is what they came as.

use prost::Message;
use uuid::Uuid;

use super::error::StoreError;
use super::record::{JsonText, PredictionRecord};
use super::time::time_of_id;

/// The first byte of a format-1 value.
const PROTOBUF_V1: u8 = 0x01;
/// The first byte of a value written before format 1.
const JSON: u8 = b'{';

/// Format 1. Tags are forever: never reuse or renumber one, only add.
#[derive(Clone, PartialEq, Message)]
struct StoredPrediction {
    /// Only when it is not the time in the id.
    #[prost(string, optional, tag = "1")]
    time: Option<String>,
    #[prost(string, tag = "2")]
    bundle: String,
    #[prost(string, tag = "3")]
    version: String,
    #[prost(bytes = "vec", tag = "4")]
    plugin_sha256: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    model_sha256: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    input_sha256: Vec<u8>,
    /// JSON text.
    #[prost(string, optional, tag = "7")]
    input: Option<String>,
    /// JSON text.
    #[prost(string, tag = "8")]
    outputs: String,
    #[prost(double, tag = "9")]
    latency_ms: f64,
    #[prost(string, optional, tag = "10")]
    token_id: Option<String>,
    #[prost(string, optional, tag = "11")]
    client_request_id: Option<String>,
    /// JSON text.
    #[prost(string, optional, tag = "12")]
    explanation: Option<String>,
}

/// The stored value of `record` (its key is the id's bytes).
pub(crate) fn encode(record: &PredictionRecord) -> Result<Vec<u8>, StoreError> {
    let invalid = |reason: String| StoreError::InvalidRecord { reason };
    let digest = |field: &str, hex_text: &str| {
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex_text, &mut bytes)
            .map(|()| bytes.to_vec())
            .map_err(|_| invalid(format!("{field} of prediction {} is not a hex SHA-256: {hex_text:?}", record.id)))
    };
    let json = |value: &serde_json::Value| value.to_string();
    let stored = StoredPrediction {
        time: (time_of_id(record.id).as_deref() != Some(record.time.as_str())).then(|| record.time.clone()),
        bundle: record.bundle.clone(),
        version: record.version.clone(),
        plugin_sha256: digest("plugin_sha256", &record.plugin_sha256)?,
        model_sha256: digest("model_sha256", &record.model_sha256)?,
        input_sha256: digest("input_sha256", &record.input_sha256)?,
        input: record.input.as_ref().map(|input| input.as_str().to_owned()),
        outputs: json(&record.outputs),
        latency_ms: record.latency_ms,
        token_id: record.token_id.clone(),
        client_request_id: record.client_request_id.clone(),
        explanation: record.explanation.as_ref().map(json),
    };
    let mut bytes = Vec::with_capacity(1 + stored.encoded_len());
    bytes.push(PROTOBUF_V1);
    stored.encode(&mut bytes).map_err(|error| invalid(error.to_string()))?;
    Ok(bytes)
}

/// The record stored under `key` as `bytes`, in whichever format it was written.
pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<PredictionRecord, StoreError> {
    let id = Uuid::from_slice(key).ok();
    let corrupt = |reason: String| {
        let id = id.map_or_else(|| format!("{key:02x?}"), |id| id.to_string());
        StoreError::Corrupt { what: format!("prediction {id}: {reason}") }
    };
    match bytes.first() {
        Some(&JSON) => serde_json::from_slice(bytes).map_err(|error| corrupt(error.to_string())),
        Some(&PROTOBUF_V1) => {
            let id = id.ok_or_else(|| corrupt("the key is not an id".to_owned()))?;
            let stored = StoredPrediction::decode(&bytes[1..]).map_err(|error| corrupt(error.to_string()))?;
            let json = |field: &str, text: &str| {
                serde_json::from_str(text).map_err(|error| corrupt(format!("{field} is not JSON: {error}")))
            };
            let digest = |field: &str, bytes: &[u8]| {
                if bytes.len() == 32 {
                    Ok(hex::encode(bytes))
                } else {
                    Err(corrupt(format!("{field} holds {} bytes, not 32", bytes.len())))
                }
            };
            Ok(PredictionRecord {
                id,
                time: match stored.time {
                    Some(time) => time,
                    None => time_of_id(id).ok_or_else(|| corrupt("the id is not a UUIDv7".to_owned()))?,
                },
                bundle: stored.bundle,
                version: stored.version,
                plugin_sha256: digest("plugin_sha256", &stored.plugin_sha256)?,
                model_sha256: digest("model_sha256", &stored.model_sha256)?,
                input_sha256: digest("input_sha256", &stored.input_sha256)?,
                input: stored
                    .input
                    .map(|text| JsonText::parse(text).map_err(|error| corrupt(format!("input is not JSON: {error}"))))
                    .transpose()?,
                outputs: json("outputs", &stored.outputs)?,
                latency_ms: stored.latency_ms,
                token_id: stored.token_id,
                client_request_id: stored.client_request_id,
                explanation: stored.explanation.as_deref().map(|text| json("explanation", text)).transpose()?,
            })
        }
        Some(other) => Err(corrupt(format!("unknown record format {other:#04x}"))),
        None => Err(corrupt("the value is empty".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> PredictionRecord {
        let id = Uuid::now_v7();
        PredictionRecord {
            id,
            time: time_of_id(id).unwrap(),
            bundle: "car-price".to_owned(),
            version: "1.2.0".to_owned(),
            plugin_sha256: "4c4da2591fc4f727bb1c547880a0924aa43636478fcca5479c4e62d41b999c92".to_owned(),
            model_sha256: "ed2233beec7654225956366b70f05e6613f50a01106df69314864dbdfadb9151".to_owned(),
            input_sha256: "00".repeat(32),
            input: Some(
                JsonText::parse(r#"{"make":"toyota","model":"corolla","year":2019,"mileage":42000}"#.to_owned())
                    .unwrap(),
            ),
            outputs: json!({"price": 14250.5}),
            latency_ms: 0.41,
            token_id: Some("186a4da43e30e4a3".to_owned()),
            client_request_id: None,
            explanation: Some(json!({"base": 12000.0, "contributions": [{"feature": "year", "value": 2250.5}]})),
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_smaller_than_its_json() {
        let record = record();
        let bytes = encode(&record).unwrap();
        assert_eq!(bytes[0], PROTOBUF_V1);
        assert_eq!(decode(record.id.as_bytes(), &bytes).unwrap(), record);
        let json = serde_json::to_vec(&record).unwrap();
        assert!(bytes.len() * 3 < json.len() * 2, "{} bytes against {} as JSON", bytes.len(), json.len());
    }

    #[test]
    fn an_input_is_kept_byte_for_byte_and_a_corrupt_one_is_named() {
        let mut record = record();
        let sent = "{ \"year\": 2019,\n  \"make\": \"toyota\" }";
        record.input = Some(JsonText::parse(sent.to_owned()).unwrap());
        let read = decode(record.id.as_bytes(), &encode(&record).unwrap()).unwrap();
        assert_eq!(read.input.as_ref().map(JsonText::as_str), Some(sent), "whitespace and key order kept");
        // Answered as the JSON it is, not as a string of it.
        let answered: serde_json::Value = serde_json::to_value(&read).unwrap();
        assert_eq!(answered["input"], json!({"year": 2019, "make": "toyota"}));

        let mut stored = StoredPrediction::decode(&encode(&record).unwrap()[1..]).unwrap();
        stored.input = Some("{\"year\": ".to_owned());
        let mut bytes = vec![PROTOBUF_V1];
        stored.encode(&mut bytes).unwrap();
        let error = decode(record.id.as_bytes(), &bytes).unwrap_err().to_string();
        assert!(error.contains("input is not JSON"), "{error}");
    }

    #[test]
    fn the_optional_fields_and_a_time_of_its_own_survive() {
        let mut record = record();
        record.input = None;
        record.token_id = None;
        record.explanation = None;
        record.client_request_id = Some("kiosk-7/42".to_owned());
        record.time = "2026-01-01T00:00:00.000Z".to_owned();
        let bytes = encode(&record).unwrap();
        assert_eq!(decode(record.id.as_bytes(), &bytes).unwrap(), record);
    }

    #[test]
    fn records_written_as_json_before_format_1_still_read() {
        let record = record();
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(decode(record.id.as_bytes(), &bytes).unwrap(), record);
    }

    #[test]
    fn a_digest_that_is_not_a_sha256_is_refused_when_written() {
        let mut record = record();
        record.model_sha256 = "not-hex".to_owned();
        let error = encode(&record).unwrap_err().to_string();
        assert!(error.contains("model_sha256") && error.contains("not-hex"), "{error}");
    }

    #[test]
    fn damaged_values_are_reported_as_corrupt_not_misread() {
        let record = record();
        let bytes = encode(&record).unwrap();
        let key = record.id.as_bytes();
        for (damaged, expected) in [
            (vec![], "empty"),
            (vec![0x02, 1, 2], "unknown record format 0x02"),
            (bytes[..bytes.len() / 2].to_vec(), "prediction"),
            ([&[PROTOBUF_V1, 0x22, 0x01, 0xff][..]].concat(), "32"),
        ] {
            let error = decode(key, &damaged).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
