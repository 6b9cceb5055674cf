//! `bundle.toml`: parsed and checked as the bundle loader does; what passes names its
//! files inside the bundle's folder and has a name that is one plain folder name.

#![no_main]

use std::path::Path;

use forecourt::bundle::check_bundle_name;
use forecourt::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = fuzzing::bundle_manifest(data) else { return };
    let dir = Path::new("/var/lib/forecourt/bundles/x/1.0.0");
    for path in [manifest.plugin_path(dir), manifest.model_path(dir)] {
        assert_eq!(path.parent(), Some(dir), "{} is not directly in the bundle", path.display());
    }
    check_bundle_name(&manifest.bundle.name).expect("an accepted manifest has a valid name");
});
