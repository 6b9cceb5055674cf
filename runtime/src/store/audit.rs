//! The audit chain: appending links, reading them back and checking them.
//!
//! Tree `audit` holds one record per key (`seq` as u64 big-endian); `meta` key `audit_head` holds the last
//! appended (seq, hash), written in the same flush, so that removing records from the end is noticed too.
//! Only the writer thread appends, so the chain needs no lock. The tree is never pruned.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Tree;

use super::error::StoreError;
use super::record::{AuditKind, AuditProblem, AuditRecord, AuditReport};

/// The `prev_hash` of record 1.
pub(crate) const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Prefixed to every hash input so that no other sha256 in the system can be mistaken for a link.
const DOMAIN: &str = "forecourt-audit-v1";
const HEAD: &[u8] = b"audit_head";

/// A record as stored. `details` is kept as the exact text that was hashed: re-serializing a parsed value
/// could format a float differently and make an intact record look altered.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    time: String,
    kind: AuditKind,
    details: String,
    prev_hash: String,
    hash: String,
}

impl Stored {
    fn computed_hash(&self) -> String {
        chain_hash(self.seq, &self.time, self.kind, &self.prev_hash, &self.details)
    }

    fn into_record(self) -> Result<AuditRecord, StoreError> {
        let details = serde_json::from_str(&self.details)
            .map_err(|error| StoreError::Corrupt { what: format!("audit record {}: {error}", self.seq) })?;
        let Self { seq, time, kind, prev_hash, hash, .. } = self;
        Ok(AuditRecord { seq, time, kind, details, prev_hash, hash })
    }
}

/// The end of the chain: the last record's seq and hash (seq 0 and [`GENESIS_HASH`] when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Self {
        Self { seq: 0, hash: GENESIS_HASH.to_owned() }
    }

    /// The record that follows this head, and its stored bytes.
    pub fn next(&self, time: String, kind: AuditKind, details: &serde_json::Value) -> (AuditRecord, Vec<u8>) {
        let details = canonical_json(details);
        let seq = self.seq + 1;
        let hash = chain_hash(seq, &time, kind, &self.hash, &details);
        let stored = Stored { seq, time, kind, details, prev_hash: self.hash.clone(), hash };
        let bytes = serde_json::to_vec(&stored).expect("an audit record always serializes");
        // Reparse so the caller gets exactly what a later reader will.
        let record = stored.into_record().expect("canonical JSON always parses");
        (record, bytes)
    }
}

/// The key of record `seq`: big-endian, so sled's order is seq order.
pub(crate) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Lowercase hex SHA-256 of the UTF-8 text
/// `forecourt-audit-v1\n{seq}\n{time}\n{kind}\n{prev_hash}\n{details}`: seq in decimal, kind in snake_case
/// and details as [`canonical_json`]. Every field but the last is free of newlines, so the encoding is
/// unambiguous.
pub(crate) fn chain_hash(seq: u64, time: &str, kind: AuditKind, prev_hash: &str, details: &str) -> String {
    let input = format!("{DOMAIN}\n{seq}\n{time}\n{}\n{prev_hash}\n{details}", kind.as_str());
    hex::encode(Sha256::digest(input.as_bytes()))
}

/// Compact JSON with every object's keys sorted (bytewise), whatever map order serde_json is built with.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(key, value)| (key.clone(), sorted(value))).collect(),
                )
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

pub(crate) fn read_head(meta: &Tree) -> Result<Option<Head>, StoreError> {
    let Some(bytes) = meta.get(HEAD)? else { return Ok(None) };
    let head =
        serde_json::from_slice(&bytes).map_err(|error| StoreError::Corrupt { what: format!("audit head: {error}") })?;
    Ok(Some(head))
}

/// Not flushed: the writer flushes it with the records it covers.
pub(crate) fn write_head(meta: &Tree, head: &Head) -> Result<(), StoreError> {
    meta.insert(HEAD, serde_json::to_vec(head).expect("a head always serializes"))?;
    Ok(())
}

/// The head a newly opened store continues from.
///
/// Records beyond the meta head were appended just before a crash that lost the head's update: they are
/// chained to the head, so the head moves to them. A meta head beyond the last record means records were
/// removed from the end: the chain continues from the meta head so that the gap stays visible to
/// [`verify`] instead of being papered over.
pub(crate) fn recover_head(audit: &Tree, meta: &Tree) -> Result<Head, StoreError> {
    let recorded = read_head(meta)?;
    // None: no records; Some(None): the last record is unreadable.
    let last = audit.last()?.map(|(_, bytes)| {
        serde_json::from_slice::<Stored>(&bytes).ok().map(|stored| Head { seq: stored.seq, hash: stored.hash })
    });
    match (recorded, last) {
        (recorded, None) => Ok(recorded.unwrap_or_else(Head::genesis)),
        (Some(recorded), Some(Some(last))) if last.seq <= recorded.seq => {
            if last.seq < recorded.seq {
                tracing::warn!(
                    head = recorded.seq,
                    last = last.seq,
                    "audit records are missing at the end of the chain"
                );
            }
            Ok(recorded)
        }
        (_, Some(Some(last))) => {
            write_head(meta, &last)?;
            Ok(last)
        }
        (Some(recorded), Some(None)) => Ok(recorded),
        (None, Some(None)) => Err(StoreError::Corrupt { what: "the last audit record is unreadable".to_owned() }),
    }
}

/// Records with seq > `after` (all when `None`), at most `limit`, in order.
pub(crate) fn records(audit: &Tree, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    let Some(first) = after.map_or(Some(1), |after| after.checked_add(1)) else { return Ok(Vec::new()) };
    audit
        .range(key(first)..)
        .take(limit)
        .map(|item| {
            let (key, bytes) = item?;
            decode(&key, &bytes)?.into_record()
        })
        .collect()
}

/// The last `limit` records, in order.
pub(crate) fn latest(audit: &Tree, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    let mut latest = audit
        .iter()
        .rev()
        .take(limit)
        .map(|item| {
            let (key, bytes) = item?;
            decode(&key, &bytes)?.into_record()
        })
        .collect::<Result<Vec<_>, _>>()?;
    latest.reverse();
    Ok(latest)
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Stored, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt { what: format!("audit record under key {}: {error}", hex::encode(key)) })
}

/// The most problems a report lists; beyond, they are only counted (a chain rewritten
/// from the start would otherwise give a report as large as the chain).
pub(crate) const MAX_PROBLEMS: usize = 1000;

/// Which records a verification reads: those after `after` (from the first when `None`),
/// at most `limit` of them (all when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyRange {
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

/// Checks every record's hash, the links between them, the sequence for gaps and, once
/// the range reaches the end, the end against the meta head. A range that starts after a
/// record is linked to that record, so pages verified one after the other (`next_after`)
/// check the same as one pass. Problems are reported, not returned as errors; errors mean
/// the database could not be read.
pub(crate) fn verify(audit: &Tree, meta: &Tree, range: VerifyRange) -> Result<AuditReport, StoreError> {
    let mut check = Check::default();
    if let Some(after) = range.after {
        // The record the range continues from: its hash is what the first one links to.
        let hash = audit.get(key(after))?.and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok());
        let hash = hash.map(|stored| stored.hash);
        // Until a record is read, the range ends where it starts (for the check of the end).
        check.report.head_seq = Some(after);
        check.report.head_hash.clone_from(&hash);
        check.previous = Some((after, hash));
    }
    let first = range.after.map_or(Some(1), |after| after.checked_add(1));
    let mut records = first.into_iter().flat_map(|first| audit.range(key(first)..));
    let limit = range.limit.unwrap_or(usize::MAX);
    let mut read = 0;
    for item in records.by_ref().take(limit) {
        let (key, bytes) = item?;
        check.record(&key, &bytes);
        read += 1;
    }
    if read == limit && records.next().is_some() {
        check.report.next_after = check.report.head_seq;
    } else {
        check.end(read_head(meta)?);
    }
    check.report.ok = check.report.problems.is_empty() && check.report.problems_omitted == 0;
    Ok(check.report)
}

/// The state of a pass over the chain.
#[derive(Debug, Default)]
struct Check {
    report: AuditReport,
    /// The previous record's seq and (if it was readable) its stored hash.
    previous: Option<(u64, Option<String>)>,
}

impl Check {
    fn problem(&mut self, seq: u64, problem: impl Into<String>) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(AuditProblem { seq, problem: problem.into() });
        } else {
            self.report.problems_omitted += 1;
        }
    }

    fn record(&mut self, key: &[u8], bytes: &[u8]) {
        let Ok(key) = <[u8; 8]>::try_from(key) else {
            self.problem(0, format!("foreign entry: key {} is not a seq", hex::encode(key)));
            return;
        };
        let seq = u64::from_be_bytes(key);
        self.report.records += 1;
        self.gap(seq);
        let hash = match serde_json::from_slice::<Stored>(bytes) {
            Ok(stored) => {
                self.links(seq, &stored);
                Some(stored.hash)
            }
            Err(error) => {
                self.problem(seq, format!("record unreadable: {error}"));
                None
            }
        };
        self.report.head_seq = Some(seq);
        self.report.head_hash.clone_from(&hash);
        self.previous = Some((seq, hash));
    }

    /// Reports missing records between the previous record (or the start) and `seq`.
    fn gap(&mut self, seq: u64) {
        let after = self.previous.as_ref().map_or(0, |previous| previous.0);
        let expected = after + 1;
        if seq == expected {
            return;
        }
        let place = if after == 0 { "at the start".to_owned() } else { format!("after {after}") };
        let problem = if seq == expected + 1 {
            format!("record missing: expected seq {expected} {place}")
        } else {
            format!("records missing: expected seq {expected} {place}, next is {seq}")
        };
        self.problem(expected, problem);
    }

    fn links(&mut self, seq: u64, stored: &Stored) {
        if stored.seq != seq {
            self.problem(seq, format!("record misplaced: stored under seq {seq} but numbered {}", stored.seq));
        }
        if stored.computed_hash() != stored.hash {
            self.problem(seq, "record altered: hash does not match its contents");
        }
        match &self.previous {
            _ if seq == 1 && stored.prev_hash != GENESIS_HASH => {
                self.problem(seq, "chain broken: the first record's prev_hash is not zeros");
            }
            Some((previous, Some(hash))) if *previous + 1 == seq && *hash != stored.prev_hash => {
                let previous = *previous;
                self.problem(seq, format!("chain broken: prev_hash does not match record {previous}"));
            }
            _ => {}
        }
    }

    /// Compares the end of the chain with the meta head.
    fn end(&mut self, head: Option<Head>) {
        let Some(head) = head else { return };
        match self.report.head_seq {
            Some(last) if last < head.seq => {
                self.problem(
                    last + 1,
                    format!("tail removed: meta head is seq {} but last record is {last}", head.seq),
                );
            }
            None if head.seq > 0 => {
                self.problem(1, format!("tail removed: meta head is seq {} but there are no records", head.seq));
            }
            Some(last) if last == head.seq && self.report.head_hash.as_deref() != Some(head.hash.as_str()) => {
                self.problem(last, format!("head replaced: record {last} does not match the meta head's hash"));
            }
            // Records beyond the head were appended just before a crash; the next open moves the head.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_encoding_is_stable() {
        // Computed independently (Python's hashlib) from the documented encoding: changing the encoding
        // would make every existing chain look altered.
        let details = canonical_json(&json!({"b": [true, null, 1.5], "a": {"y": "z", "x": 1}}));
        assert_eq!(details, r#"{"a":{"x":1,"y":"z"},"b":[true,null,1.5]}"#);
        assert_eq!(
            chain_hash(1, "2024-02-29T12:34:56.789Z", AuditKind::BundleActivated, GENESIS_HASH, &details),
            "a78d7b3f12abb44b103e0c47d3fc14d6f9ea63e0f857bfa3c2bc669e3afae9c0"
        );
    }

    /// A chain of `n` records as the store writes them, with its head in `meta`.
    fn chain(n: u64) -> (sled::Db, Tree, Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (audit, meta) = (db.open_tree("audit").unwrap(), db.open_tree("meta").unwrap());
        let mut head = Head::genesis();
        for seq in 1..=n {
            let (record, bytes) = head.next(format!("t{seq}"), AuditKind::Started, &json!({"n": seq}));
            audit.insert(key(seq), bytes).unwrap();
            head = Head { seq: record.seq, hash: record.hash };
        }
        meta.insert(HEAD, serde_json::to_vec(&head).unwrap()).unwrap();
        (db, audit, meta)
    }

    #[test]
    fn pages_verify_what_one_pass_does_and_link_to_the_page_before() {
        let (_db, audit, meta) = chain(25);
        let page = |after: Option<u64>, limit: usize| {
            verify(&audit, &meta, VerifyRange { after, limit: Some(limit) }).unwrap()
        };
        let whole = verify(&audit, &meta, VerifyRange::default()).unwrap();
        assert!(whole.ok && whole.records == 25 && whole.next_after.is_none(), "{whole:?}");

        let (mut after, mut seen) = (None, 0);
        loop {
            let report = page(after, 10);
            assert!(report.ok, "{report:?}");
            seen += report.records;
            match report.next_after {
                Some(next) => after = Some(next),
                None => {
                    assert_eq!(
                        (report.head_seq, report.head_hash.as_ref()),
                        (whole.head_seq, whole.head_hash.as_ref())
                    );
                    break;
                }
            }
        }
        assert_eq!(seen, 25);
        assert!(page(Some(25), 10).ok, "a page past the end is empty, not a problem");

        // A record altered in place: found by the page that holds it and, through the link,
        // by the page after it.
        let mut stored: Stored = serde_json::from_slice(&audit.get(key(10)).unwrap().unwrap()).unwrap();
        stored.time = "forged".to_owned();
        stored.hash = stored.computed_hash();
        audit.insert(key(10), serde_json::to_vec(&stored).unwrap()).unwrap();
        let next = page(Some(10), 10);
        assert_eq!(next.problems.iter().map(|p| p.seq).collect::<Vec<_>>(), [11], "{next:?}");
        assert!(!page(Some(5), 10).ok);
    }

    #[test]
    fn the_problems_listed_are_bounded() {
        let (_db, audit, meta) = chain(MAX_PROBLEMS as u64 + 10);
        for seq in 1..=MAX_PROBLEMS as u64 + 10 {
            let mut stored: Stored = serde_json::from_slice(&audit.get(key(seq)).unwrap().unwrap()).unwrap();
            stored.time = "forged".to_owned();
            audit.insert(key(seq), serde_json::to_vec(&stored).unwrap()).unwrap();
        }
        let report = verify(&audit, &meta, VerifyRange::default()).unwrap();
        assert_eq!(report.problems.len(), MAX_PROBLEMS);
        assert!(report.problems_omitted >= 10 && !report.ok, "{}", report.problems_omitted);
    }

    #[test]
    fn links_follow_the_head() {
        let (first, _) = Head::genesis().next("t1".to_owned(), AuditKind::Started, &json!({"version": "0.1.0"}));
        assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS_HASH));
        let head = Head { seq: first.seq, hash: first.hash.clone() };
        let (second, bytes) = head.next("t2".to_owned(), AuditKind::Shutdown, &json!(null));
        assert_eq!((second.seq, &second.prev_hash), (2, &first.hash));
        let stored: Stored = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored.computed_hash(), second.hash);
        assert_eq!(stored.into_record().unwrap(), second);
    }
}
