//! A `.fcb` bundle archive as a fleet deployment stages it: written into a scratch folder
//! and unpacked there. Whatever the bytes, nothing may be written outside the scratch
//! folder, a refused archive leaves nothing unpacked, and an accepted one is one folder of
//! regular bundle files, whose manifest is then read and checked as the loader does.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use forecourt::bundle::{MANIFEST_FILE, MODEL_FILE, Manifest, PLUGIN_FILE, SIGNATURE_FILE};
use forecourt::fuzzing;
use libfuzzer_sys::fuzz_target;

/// One folder per process; each input gets `case/` in it, made anew. tmpfs when there is
/// one: unpacking syncs every file, which costs a disk write per input otherwise.
fn root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let builder = tempfile::Builder::new().prefix("forecourt-fuzz-").tempdir_in(shm);
        builder.or_else(|_| tempfile::tempdir()).expect("a temporary folder")
    })
    .path()
}

/// Every path under `dir`, depth first, without following links.
fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("readable entry").path();
        into.push(path.clone());
        if std::fs::symlink_metadata(&path).expect("metadata").is_dir() {
            walk(&path, into);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let case = root().join("case");
    if case.exists() {
        std::fs::remove_dir_all(&case).expect("the last case is removed");
    }
    // The scratch folder sits three levels down, so that a `..` escape of up to three levels
    // still lands inside `case` and is seen below.
    let scratch = case.join("a/b/scratch");
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    let unpacked = scratch.join("unpacked");
    let result = fuzzing::bundle_archive(data, &scratch);

    let mut allowed = vec![case.join("a"), case.join("a/b"), scratch.clone(), scratch.join("bundle.fcb")];
    match &result {
        Ok(dir) => {
            assert_eq!(dir.parent(), Some(unpacked.as_path()), "the bundle's folder is {}", dir.display());
            allowed.extend([unpacked.clone(), dir.clone()]);
            for entry in std::fs::read_dir(dir).expect("the bundle's folder") {
                let entry = entry.expect("entry");
                let name = entry.file_name().into_string().expect("a UTF-8 name");
                assert!([MANIFEST_FILE, SIGNATURE_FILE, PLUGIN_FILE, MODEL_FILE].contains(&name.as_str()), "{name:?}");
                assert!(entry.file_type().expect("file type").is_file(), "{name:?} is not a regular file");
                allowed.push(entry.path());
            }
            // What the loader does next (its signature check needs a trusted key: left out).
            if let Ok(manifest) = Manifest::read(dir) {
                let _ = manifest.verify_files(dir);
            }
        }
        // `unpacked` itself may have been made before the archive was refused.
        Err(_) => allowed.push(unpacked.clone()),
    }
    let mut found = Vec::new();
    walk(&case, &mut found);
    for path in &found {
        assert!(allowed.contains(path), "{} was written (result {result:?})", path.display());
    }
    let beside: Vec<_> = std::fs::read_dir(root())
        .expect("the root folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| *path != case)
        .collect();
    assert!(beside.is_empty(), "{beside:?} written beside the case folder (result {result:?})");
});
