//! Signed requests: what is published on a deploy topic. Anyone who can publish on a
//! device's topic could otherwise roll back or remove its bundles, so every request
//! (deploy, rollback, remove alike) is signed by a fleet key the appliance trusts, with the
//! same ed25519 keys and `[trust] keys_dir` as bundles.
//!
//! The signature covers exact bytes, never re-serialized JSON: the envelope carries the
//! signed JSON as a string, and the appliance verifies those bytes before it parses them.
//!
//! ```json
//! {"signed": "{\"target\":\"forecourt/kiosk-1/deploy\",\"not_after\":1767225600,\"request\":{\"action\":\"rollback\",\"id\":\"0190…\",\"bundle\":\"car-price\"}}",
//!  "key_id": "0123456789abcdef", "signature": "<128 hex digits>"}
//! ```
//!
//! `target` is the topic the request must arrive on (a device's or a group's deploy topic)
//! and `not_after` the Unix time in seconds after which it is refused: a captured request
//! can be replayed neither to another device nor much later (and one replayed in time is
//! answered with its recorded outcome, not run again).
//!
//! This module owns the envelope's format, sealing and opening. It decides nothing about
//! deployments; [`super::deploy`] calls [`open`] before anything else of a request is used.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::messages::{DeploymentId, Reason, ReasonCode, Request, excerpt, readable_id};
use crate::bundle::TrustedKeys;
use crate::bundle::signature::PrivateKey;

/// The payload on a deploy topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The JSON of [`Terms`], as a string: the signature covers its exact UTF-8 bytes.
    pub signed: String,
    /// The signing key's id (16 hex digits, as `forecourt keygen` prints it).
    pub key_id: String,
    /// ed25519 over `signed`, 128 hex digits.
    pub signature: String,
}

/// What a signature covers: the request, where it may arrive and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// The exact topic the request must arrive on.
    pub target: String,
    /// Unix time (seconds) after which the request is refused.
    pub not_after: u64,
    pub request: Value,
}

/// Signs `request` for `target` until `not_after`; the payload to publish. The request is
/// any JSON (a test may sign hostile ones): what the appliance does with it is its own
/// checks' business, after the signature.
pub fn seal(request: &Value, target: &str, not_after: u64, key: &PrivateKey) -> Vec<u8> {
    let terms = Terms { target: target.to_owned(), not_after, request: request.clone() };
    let signed = serde_json::to_string(&terms).unwrap_or_default();
    let envelope = Envelope { signature: key.sign_hex(signed.as_bytes()), key_id: key.id().to_owned(), signed };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Why a request was not opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The id the request claims, when it is a valid id.
    pub claimed: Option<DeploymentId>,
    /// Whether the signature was good: only then may the claimed id be recorded as the
    /// request's, since an unsigned message could otherwise take a real request's id.
    pub authentic: bool,
    pub reason: Reason,
}

/// Checks the envelope that arrived on `topic` at Unix time `now`: a trusted key's good
/// signature, then the terms (target, expiry), then the request's own fields.
pub fn open(payload: &[u8], topic: &str, keys: Option<&TrustedKeys>, now: u64) -> Result<Request, Refusal> {
    let untrusted = |claimed: Option<DeploymentId>, message: String| Refusal {
        claimed,
        authentic: false,
        reason: Reason::new(ReasonCode::Untrusted, message),
    };
    let value: Value = serde_json::from_slice(payload).map_err(|error| Refusal {
        claimed: None,
        authentic: false,
        reason: Reason::new(ReasonCode::MalformedRequest, format!("not JSON: {error}")),
    })?;
    let envelope: Envelope = match serde_json::from_value(value.clone()) {
        Ok(envelope) => envelope,
        // A bare request: the shape of the old, unsigned wire format, or a forgery.
        Err(_) if value.get("action").is_some() => {
            return Err(untrusted(
                readable_id(&value),
                "the request is not signed; requests must come in a signed envelope ({signed, key_id, signature})"
                    .to_owned(),
            ));
        }
        Err(error) => {
            return Err(Refusal {
                claimed: None,
                authentic: false,
                reason: Reason::new(ReasonCode::MalformedRequest, format!("not a signed request: {error}")),
            });
        }
    };
    let terms: Option<Value> = serde_json::from_str(&envelope.signed).ok();
    let claimed = terms.as_ref().and_then(|terms| readable_id(terms.get("request")?));
    let keys = keys.ok_or_else(|| {
        untrusted(
            claimed.clone(),
            "this appliance has no trusted keys ([trust] keys_dir), so it accepts no requests".to_owned(),
        )
    })?;
    keys.verify_bytes(&envelope.key_id, envelope.signed.as_bytes(), &envelope.signature)
        .map_err(|refused| untrusted(claimed.clone(), format!("key {}: {refused}", excerpt(&envelope.key_id))))?;
    // Signed by a trusted key from here on: the claimed id is the request's own.
    let refuse = |code: ReasonCode, message: String| Refusal {
        claimed: claimed.clone(),
        authentic: true,
        reason: Reason::new(code, message),
    };
    let terms: Terms = serde_json::from_str(&envelope.signed)
        .map_err(|error| refuse(ReasonCode::MalformedRequest, format!("`signed`: {error}")))?;
    if terms.target != topic {
        return Err(refuse(
            ReasonCode::Untrusted,
            format!("the request is signed for {}, not for {topic}", excerpt(&terms.target)),
        ));
    }
    if now > terms.not_after {
        return Err(refuse(
            ReasonCode::Untrusted,
            format!("the request expired at {} (Unix time; now {now})", terms.not_after),
        ));
    }
    Request::from_value(&terms.request).map_err(|(_, reason)| refuse(reason.code, reason.message))
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bundle::signature::{PublicKey, keygen};

    const TOPIC: &str = "forecourt/kiosk-1/deploy";

    fn keys() -> (tempfile::TempDir, PrivateKey, TrustedKeys) {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(dir.path(), "fleet").unwrap();
        let private = PrivateKey::read(&generated.private).unwrap();
        let trusted = TrustedKeys::new([PublicKey::read(&generated.public).unwrap()]);
        (dir, private, trusted)
    }

    fn rollback() -> Value {
        json!({"action": "rollback", "id": "r1", "bundle": "car-price"})
    }

    #[test]
    fn a_sealed_request_opens_on_its_topic_in_time() {
        let (_dir, key, trusted) = keys();
        let payload = seal(&rollback(), TOPIC, 1_000, &key);
        let request = open(&payload, TOPIC, Some(&trusted), 1_000).unwrap();
        assert_eq!(request.id().as_str(), "r1");
    }

    #[test]
    fn unsigned_foreign_tampered_misdirected_and_expired_requests_are_untrusted() {
        let (_dir, key, trusted) = keys();
        let (_other_dir, stranger, _) = keys();
        let refused = |payload: &[u8], topic: &str, now: u64| open(payload, topic, Some(&trusted), now).unwrap_err();

        let bare = refused(rollback().to_string().as_bytes(), TOPIC, 0);
        assert_eq!((bare.reason.code, bare.authentic), (ReasonCode::Untrusted, false));
        assert_eq!(bare.claimed.unwrap().as_str(), "r1");

        let foreign = refused(&seal(&rollback(), TOPIC, 1_000, &stranger), TOPIC, 0);
        assert_eq!((foreign.reason.code, foreign.authentic), (ReasonCode::Untrusted, false));
        assert!(foreign.reason.message.contains("not trusted"), "{}", foreign.reason.message);

        let mut envelope: Envelope = serde_json::from_slice(&seal(&rollback(), TOPIC, 1_000, &key)).unwrap();
        envelope.signed = envelope.signed.replace("car-price", "iris");
        let tampered = refused(&serde_json::to_vec(&envelope).unwrap(), TOPIC, 0);
        assert_eq!((tampered.reason.code, tampered.authentic), (ReasonCode::Untrusted, false));

        let elsewhere = refused(&seal(&rollback(), "forecourt/kiosk-2/deploy", 1_000, &key), TOPIC, 0);
        assert_eq!((elsewhere.reason.code, elsewhere.authentic), (ReasonCode::Untrusted, true));
        assert!(elsewhere.reason.message.contains("kiosk-2"), "{}", elsewhere.reason.message);

        let expired = refused(&seal(&rollback(), TOPIC, 1_000, &key), TOPIC, 1_001);
        assert_eq!((expired.reason.code, expired.authentic), (ReasonCode::Untrusted, true));
        assert!(expired.reason.message.contains("expired"), "{}", expired.reason.message);

        let no_keys = open(&seal(&rollback(), TOPIC, 1_000, &key), TOPIC, None, 0).unwrap_err();
        assert_eq!(no_keys.reason.code, ReasonCode::Untrusted);
    }

    #[test]
    fn a_signed_request_with_a_hostile_field_is_malformed_and_answered_only_when_its_id_is_valid() {
        let (_dir, key, trusted) = keys();
        for id in ["..", ".", "../x", "a/b", "a\\b", "%2e%2e", "", "\u{0}", "é", &"x".repeat(65)] {
            let request = json!({"action": "remove", "id": id, "bundle": "car-price", "version": "1.0.0"});
            let refused = open(&seal(&request, TOPIC, 1_000, &key), TOPIC, Some(&trusted), 0).unwrap_err();
            assert_eq!((refused.reason.code, refused.claimed), (ReasonCode::MalformedRequest, None), "{id:?}");
            assert!(refused.reason.message.contains("id"), "{}", refused.reason.message);
        }
        for bundle in ["..", "../etc", "Car-Price", "a/b", ""] {
            let request = json!({"action": "rollback", "id": "r2", "bundle": bundle});
            let refused = open(&seal(&request, TOPIC, 1_000, &key), TOPIC, Some(&trusted), 0).unwrap_err();
            assert_eq!(refused.reason.code, ReasonCode::MalformedRequest, "{bundle:?}");
            assert_eq!(refused.claimed.unwrap().as_str(), "r2");
        }
        let garbage = open(br#"{"signed": 1"#, TOPIC, Some(&trusted), 0).unwrap_err();
        assert_eq!(garbage.reason.code, ReasonCode::MalformedRequest);
    }
}
