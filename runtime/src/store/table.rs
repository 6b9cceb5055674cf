//! Tables: named sled trees for the durable state of other modules (the fleet's
//! deployments, its outbox), written through the same group-commit writer as predictions
//! and audit records, so a table write is durable when it resolves and the writer stays
//! the only one writing.
//!
//! A table stores bytes under byte keys; what they mean is its owner's business.

use sled::Tree;
use tokio::sync::oneshot;

use super::Store;
use super::error::StoreError;
use super::writer::Write;

/// Tree names the store uses itself.
const RESERVED: [&str; 3] = ["predictions", "audit", "meta"];

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One change of a [`Table::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// A handle on one table; clones share it. Like a [`Store`] handle, it keeps the database open.
#[derive(Clone)]
pub struct Table {
    name: String,
    tree: Tree,
    store: Store,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).field("len", &self.tree.len()).finish()
    }
}

impl Store {
    /// Opens (creating) the table `name`. The store's own trees are refused.
    pub fn table(&self, name: &str) -> Result<Table, StoreError> {
        if name.is_empty() || RESERVED.contains(&name) || name.starts_with("__sled") {
            return Err(StoreError::InvalidRecord { reason: format!("{name:?} is not a usable table name") });
        }
        let tree = self.inner.trees.db.open_tree(format!("table/{name}"))?;
        Ok(Table { name: name.to_owned(), tree, store: self.clone() })
    }
}

impl Table {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    /// Every entry in key order.
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.first(usize::MAX)
    }

    /// The first `limit` entries in key order.
    pub fn first(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.tree
            .iter()
            .take(limit)
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())).map_err(StoreError::from))
            .collect()
    }

    /// The greatest key, if any.
    pub fn last_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.last()?.map(|(key, _)| key.to_vec()))
    }

    /// The first `limit` entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .take(limit)
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())).map_err(StoreError::from))
            .collect()
    }

    /// The greatest key starting with `prefix`, if any.
    pub fn last_key_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.scan_prefix(prefix).next_back().transpose()?.map(|(key, _)| key.to_vec()))
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Applies `ops` atomically (all or none, also across a crash) and resolves once they
    /// are durable, whatever the store's durability setting: tables hold state that must
    /// not go back in time.
    pub async fn apply(&self, ops: Vec<TableOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let count = ops.len();
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                TableOp::Put(key, value) => batch.insert(key, value),
                TableOp::Remove(key) => batch.remove(key),
            }
        }
        let (ack, done) = oneshot::channel();
        self.store.inner.enqueue_waiting(Write::Table(self.tree.clone(), batch, count, ack)).await?;
        done.await.unwrap_or(Err(StoreError::Closed))
    }

    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        self.apply(vec![TableOp::Put(key.into(), value.into())]).await
    }

    pub async fn remove(&self, key: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        self.apply(vec![TableOp::Remove(key.into())]).await
    }
}
