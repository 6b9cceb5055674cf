//! A deployment message on a device's deploy topic: opened as it arrives (envelope,
//! signature, terms, request); the same bytes as the request a trusted key signed, which
//! must be judged as the request parser judges it; and an accepted request must read back
//! the same after the fleet manager serializes it.

#![no_main]

use forecourt::fleet::messages::Request;
use forecourt::fuzzing;
use libfuzzer_sys::fuzz_target;

/// A fixed "now", so that a run is reproducible.
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::fleet_open(data, NOW);
    let parsed = Request::parse(data).map_err(|(_, reason)| reason);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let opened = fuzzing::fleet_open(&fuzzing::fleet_seal(&value, NOW + 60), NOW);
        match (&parsed, &opened) {
            (Ok(parsed), Ok(opened)) => assert_eq!(parsed, opened),
            (Err(parsed), Err(refusal)) => {
                assert!(refusal.authentic, "a request signed by a trusted key is authentic: {refusal:?}");
                assert_eq!(parsed.code, refusal.reason.code, "{parsed:?} / {refusal:?}");
            }
            _ => panic!("signed, the request is judged otherwise: parsed {parsed:?}, opened {opened:?}"),
        }
    }
    if let Ok(request) = parsed {
        let json = serde_json::to_vec(&request).expect("a request serializes");
        assert_eq!(Request::parse(&json).map_err(|(_, reason)| reason), Ok(request), "the request reads back");
    }
});
