//! The routing table: every loaded version of each bundle name, the active one, and a
//! canary taking a share of the requests. It decides which version a request goes to and
//! nothing else: it knows neither how versions are loaded nor what they run, so it holds any
//! [`Versioned`] value and is tested in-process with plain ones.
//!
//! Readers take the current snapshot through an atomic pointer (arc-swap) and clone the
//! `Arc` of the version they need, so a request finishes on the version it started with
//! however the table changes meanwhile; a switch is one pointer store. Writers (insertion,
//! activation, canaries, removal) are serialised and copy the small snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use semver::Version;

use super::error::BundleError;

/// What the table routes to: one version of a named bundle.
pub trait Versioned {
    fn name(&self) -> &str;
    fn version(&self) -> &Version;
}

#[derive(Debug)]
struct Snapshot<B> {
    names: BTreeMap<String, Entry<B>>,
}

// By hand: a derive would ask `B: Clone`, and only the `Arc`s are cloned.
impl<B> Clone for Snapshot<B> {
    fn clone(&self) -> Self {
        Self { names: self.names.clone() }
    }
}

#[derive(Debug)]
pub(super) struct Entry<B> {
    pub(super) versions: BTreeMap<Version, Arc<B>>,
    pub(super) active: Version,
    pub(super) canary: Option<Canary>,
}

impl<B> Clone for Entry<B> {
    fn clone(&self) -> Self {
        Self { versions: self.versions.clone(), active: self.active.clone(), canary: self.canary.clone() }
    }
}

/// A version serving a share of a name's requests beside the active one.
#[derive(Debug, Clone)]
pub(super) struct Canary {
    pub(super) version: Version,
    /// Requests in a thousand that go to the canary.
    pub(super) per_mille: u64,
    /// Requests routed so far, shared by every snapshot of this canary: spreads the share
    /// evenly (every n-th request) rather than by chance.
    routed: Arc<AtomicU64>,
}

impl Canary {
    /// Whether the next request goes to the canary: the n-th request does when the count
    /// of canary requests due, n * share, steps up at n (so exactly the share, evenly spread).
    fn takes_next(&self) -> bool {
        let n = self.routed.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.per_mille / 1000 > n * self.per_mille / 1000
    }
}

#[derive(Debug)]
pub struct Routes<B> {
    state: ArcSwap<Snapshot<B>>,
    writer: Mutex<()>,
}

impl<B> Default for Routes<B> {
    fn default() -> Self {
        Self { state: ArcSwap::from_pointee(Snapshot { names: BTreeMap::new() }), writer: Mutex::new(()) }
    }
}

impl<B: Versioned> Routes<B> {
    /// Adds a version; it becomes active if its name had none.
    pub fn insert(&self, version: B) -> Result<(String, Version), BundleError> {
        let (name, number) = (version.name().to_owned(), version.version().clone());
        self.change(|names| {
            let entry = names.entry(name.clone()).or_insert_with(|| Entry {
                versions: BTreeMap::new(),
                active: number.clone(),
                canary: None,
            });
            if entry.versions.contains_key(&number) {
                return Err(BundleError::AlreadyLoaded { name: name.clone(), version: number.to_string() });
            }
            entry.versions.insert(number.clone(), Arc::new(version));
            Ok(())
        })?;
        Ok((name, number))
    }
}

impl<B> Routes<B> {
    /// The active version of `name`.
    pub fn active(&self, name: &str) -> Option<Arc<B>> {
        let snapshot = self.state.load();
        let entry = snapshot.names.get(name)?;
        entry.versions.get(&entry.active).cloned()
    }

    /// The version of `name` the next request goes to: the canary's share of the requests
    /// goes to the canary, the rest to the active version.
    pub fn route(&self, name: &str) -> Option<Arc<B>> {
        let snapshot = self.state.load();
        let entry = snapshot.names.get(name)?;
        let version = match &entry.canary {
            Some(canary) if canary.takes_next() => &canary.version,
            _ => &entry.active,
        };
        entry.versions.get(version).cloned()
    }

    /// A specific version of `name`, active or not.
    pub fn version(&self, name: &str, version: &Version) -> Option<Arc<B>> {
        self.state.load().names.get(name)?.versions.get(version).cloned()
    }

    /// The highest loaded version of `name`.
    pub fn highest(&self, name: &str) -> Option<Version> {
        self.state.load().names.get(name)?.versions.keys().next_back().cloned()
    }

    /// Every version of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<Arc<B>> {
        self.state.load().names.get(name).map(|entry| entry.versions.values().cloned().collect()).unwrap_or_default()
    }

    /// Makes `version` the active version of `name`; returns the previous one. Activation
    /// settles the name: a canary of it ends (promoted when it is this version).
    pub fn activate(&self, name: &str, version: &Version) -> Result<Version, BundleError> {
        let previous = self.change(|names| {
            let entry = loaded(names, name, version)?;
            entry.canary = None;
            Ok::<_, BundleError>(std::mem::replace(&mut entry.active, version.clone()))
        })?;
        if previous != *version {
            tracing::info!(bundle = name, %version, %previous, "bundle activated");
        }
        Ok(previous)
    }

    /// Sends `share_percent` of `name`'s requests to `version` (loaded), beside the active
    /// version; replaces any canary `name` had. The share is kept within 0.1% and 99.9%.
    pub fn start_canary(&self, name: &str, version: &Version, share_percent: f64) -> Result<(), BundleError> {
        let per_mille = (share_percent * 10.0).round().clamp(1.0, 999.0) as u64;
        self.change(|names| {
            loaded(names, name, version)?.canary =
                Some(Canary { version: version.clone(), per_mille, routed: Arc::default() });
            Ok::<_, BundleError>(())
        })?;
        tracing::info!(bundle = name, %version, share_percent, "canary started");
        Ok(())
    }

    /// Ends `name`'s canary, if any, without promoting it: every request goes to the active
    /// version again. Returns the canary's version.
    pub fn stop_canary(&self, name: &str) -> Option<Version> {
        let canary = self.change(|names| names.get_mut(name).and_then(|entry| entry.canary.take()).ok_or(())).ok()?;
        tracing::info!(bundle = name, version = %canary.version, "canary stopped");
        Some(canary.version)
    }

    /// Unloads a version that is neither active nor a canary. In-flight requests holding it
    /// finish first.
    pub fn remove(&self, name: &str, version: &Version) -> Result<(), BundleError> {
        self.change(|names| {
            let entry = loaded(names, name, version)?;
            if &entry.active == version || entry.canary.as_ref().is_some_and(|canary| &canary.version == version) {
                return Err(BundleError::InUse { name: name.to_owned(), version: version.to_string() });
            }
            entry.versions.remove(version);
            Ok(())
        })
    }

    /// The active version of every name.
    pub fn active_versions(&self) -> BTreeMap<String, Version> {
        self.state.load().names.iter().map(|(name, entry)| (name.clone(), entry.active.clone())).collect()
    }

    /// The canary version of every name that has one.
    pub fn canary_versions(&self) -> BTreeMap<String, Version> {
        let snapshot = self.state.load();
        snapshot
            .names
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.canary.as_ref()?.version.clone())))
            .collect()
    }

    /// `describe` of every name's entry that gives something, in name order.
    pub(super) fn describe<T>(&self, describe: impl Fn(&str, &Entry<B>) -> Option<T>) -> Vec<T> {
        self.state.load().names.iter().filter_map(|(name, entry)| describe(name, entry)).collect()
    }

    /// `describe` of `name`'s entry.
    pub(super) fn describe_one<T>(&self, name: &str, describe: impl Fn(&str, &Entry<B>) -> Option<T>) -> Option<T> {
        self.state.load().names.get(name).and_then(|entry| describe(name, entry))
    }

    /// Applies `edit` to a copy of the table and publishes the copy, unless `edit` fails.
    fn change<T, E>(&self, edit: impl FnOnce(&mut BTreeMap<String, Entry<B>>) -> Result<T, E>) -> Result<T, E> {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut snapshot = Snapshot::clone(&self.state.load());
        let changed = edit(&mut snapshot.names)?;
        self.state.store(Arc::new(snapshot));
        Ok(changed)
    }
}

/// `name`'s entry, when `version` of it is loaded.
fn loaded<'a, B>(
    names: &'a mut BTreeMap<String, Entry<B>>,
    name: &str,
    version: &Version,
) -> Result<&'a mut Entry<B>, BundleError> {
    let entry = names.get_mut(name).ok_or_else(|| BundleError::UnknownBundle { name: name.to_owned() })?;
    if !entry.versions.contains_key(version) {
        return Err(BundleError::UnknownVersion { name: name.to_owned(), version: version.to_string() });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version that is only its name and number: routing needs nothing else.
    #[derive(Debug, PartialEq)]
    struct Plain(String, Version);

    impl Versioned for Plain {
        fn name(&self) -> &str {
            &self.0
        }
        fn version(&self) -> &Version {
            &self.1
        }
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn table(versions: &[(&str, &str)]) -> Routes<Plain> {
        let routes = Routes::default();
        for (name, version) in versions {
            routes.insert(Plain((*name).to_owned(), v(version))).unwrap();
        }
        routes
    }

    fn routed_version(routes: &Routes<Plain>, name: &str) -> String {
        routes.route(name).unwrap().1.to_string()
    }

    #[test]
    fn the_first_version_of_a_name_is_active_until_another_is_activated() {
        let routes = table(&[("car", "1.0.0"), ("car", "2.0.0"), ("iris", "0.1.0")]);
        assert_eq!(routes.active("car").unwrap().1, v("1.0.0"));
        assert_eq!(routes.highest("car"), Some(v("2.0.0")));
        assert_eq!(routes.activate("car", &v("2.0.0")).unwrap(), v("1.0.0"));
        assert_eq!(routed_version(&routes, "car"), "2.0.0");
        assert_eq!(
            routes.active_versions(),
            BTreeMap::from([("car".to_owned(), v("2.0.0")), ("iris".to_owned(), v("0.1.0"))])
        );
        assert!(routes.route("nope").is_none());
        let versions: Vec<String> = routes.versions("car").iter().map(|plain| plain.1.to_string()).collect();
        assert_eq!(versions, ["1.0.0", "2.0.0"]);
    }

    #[test]
    fn a_version_loads_once_and_only_loaded_versions_activate() {
        let routes = table(&[("car", "1.0.0")]);
        let again = routes.insert(Plain("car".to_owned(), v("1.0.0"))).unwrap_err();
        assert!(matches!(again, BundleError::AlreadyLoaded { .. }), "{again}");
        let unknown = routes.activate("car", &v("9.0.0")).unwrap_err();
        assert!(matches!(unknown, BundleError::UnknownVersion { .. }), "{unknown}");
        let nameless = routes.activate("boat", &v("1.0.0")).unwrap_err();
        assert!(matches!(nameless, BundleError::UnknownBundle { .. }), "{nameless}");
        assert!(routes.start_canary("car", &v("9.0.0"), 10.0).is_err());
        assert_eq!(routes.active("car").unwrap().1, v("1.0.0"), "a refused change changed nothing");
    }

    #[test]
    fn a_canary_takes_exactly_its_share_evenly_spread() {
        let routes = table(&[("car", "1.0.0"), ("car", "2.0.0")]);
        routes.start_canary("car", &v("2.0.0"), 25.0).unwrap();
        let picks: Vec<bool> = (0..1000).map(|_| routed_version(&routes, "car") == "2.0.0").collect();
        assert_eq!(picks.iter().filter(|&&canary| canary).count(), 250);
        // Evenly: every window of four requests holds exactly one canary request.
        assert!(picks.chunks(4).all(|window| window.iter().filter(|&&canary| canary).count() == 1), "{picks:?}");
        // The active version is unchanged, and so is what the protocol's routes see.
        assert_eq!(routes.active("car").unwrap().1, v("1.0.0"));
        assert_eq!(routes.canary_versions(), BTreeMap::from([("car".to_owned(), v("2.0.0"))]));
    }

    #[test]
    fn shares_outside_a_thousandth_are_held_to_one_and_999() {
        let routes = table(&[("car", "1.0.0"), ("car", "2.0.0")]);
        routes.start_canary("car", &v("2.0.0"), 0.0).unwrap();
        let canary = (0..1000).filter(|_| routed_version(&routes, "car") == "2.0.0").count();
        assert_eq!(canary, 1);
        routes.start_canary("car", &v("2.0.0"), 100.0).unwrap();
        let active = (0..1000).filter(|_| routed_version(&routes, "car") == "1.0.0").count();
        assert_eq!(active, 1);
    }

    #[test]
    fn stopping_a_canary_sends_everything_back_and_activating_it_promotes_it() {
        let routes = table(&[("car", "1.0.0"), ("car", "2.0.0")]);
        routes.start_canary("car", &v("2.0.0"), 50.0).unwrap();
        assert_eq!(routes.stop_canary("car"), Some(v("2.0.0")));
        assert_eq!(routes.stop_canary("car"), None);
        assert!((0..10).all(|_| routed_version(&routes, "car") == "1.0.0"));

        routes.start_canary("car", &v("2.0.0"), 50.0).unwrap();
        routes.activate("car", &v("2.0.0")).unwrap();
        assert!(routes.canary_versions().is_empty(), "activation ends the canary");
        assert!((0..10).all(|_| routed_version(&routes, "car") == "2.0.0"));
    }

    #[test]
    fn the_active_version_and_a_canary_cannot_be_removed_and_a_held_version_outlives_removal() {
        let routes = table(&[("car", "1.0.0"), ("car", "2.0.0"), ("car", "3.0.0")]);
        routes.start_canary("car", &v("2.0.0"), 10.0).unwrap();
        for in_use in ["1.0.0", "2.0.0"] {
            let error = routes.remove("car", &v(in_use)).unwrap_err();
            assert!(matches!(error, BundleError::InUse { .. }), "{in_use}: {error}");
        }
        let held = routes.version("car", &v("3.0.0")).unwrap();
        routes.remove("car", &v("3.0.0")).unwrap();
        assert!(routes.version("car", &v("3.0.0")).is_none());
        assert_eq!(held.1, v("3.0.0"), "a request holding the version finishes on it");
        let gone = routes.remove("car", &v("3.0.0")).unwrap_err();
        assert!(matches!(gone, BundleError::UnknownVersion { .. }), "{gone}");
    }

    #[test]
    fn a_switch_is_seen_by_every_thread_at_once_and_no_request_finds_nothing() {
        let routes = Arc::new(table(&[("car", "1.0.0"), ("car", "2.0.0")]));
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let routes = Arc::clone(&routes);
                    scope.spawn(move || (0..20_000).all(|_| routes.route("car").is_some()))
                })
                .collect();
            for round in 0..200 {
                let version = if round % 2 == 0 { "2.0.0" } else { "1.0.0" };
                routes.activate("car", &v(version)).unwrap();
            }
            assert!(readers.into_iter().all(|reader| reader.join().unwrap()));
        });
        assert_eq!(routes.active("car").unwrap().1, v("1.0.0"));
    }
}
