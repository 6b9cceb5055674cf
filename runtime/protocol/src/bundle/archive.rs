//! `.fcb`, a bundle's one transport file: a plain tar of the bundle's files under a top
//! folder `<name>-<version>/`:
//!
//! ```text
//! car-price-1.0.0/bundle.toml
//! car-price-1.0.0/bundle.sig        (when the bundle is signed)
//! car-price-1.0.0/preprocess.wasm
//! car-price-1.0.0/model.onnx
//! ```
//!
//! [`pack`] writes it deterministically (mode 0644, time 0, no owner). [`unpack`] takes
//! archives from elsewhere, so it trusts nothing: only regular files, only those four names
//! directly under one top folder (no absolute paths, no `..`, no links), each at most a
//! size cap, none twice; it extracts into a temporary folder beside the destination and
//! renames it into place only when the whole archive passed. Unpacking checks the shape
//! only: the signature and the digests are checked when the bundle is loaded.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::error::BundleFileError;
use super::manifest::TrainingFiles;
use super::manifest::{MANIFEST_FILE, METRICS_FILE, MODEL_FILE, Manifest, PLUGIN_FILE, PROFILE_FILE, TREES_FILE};
use super::signature::SIGNATURE_FILE;

/// The file extension of a packed bundle.
pub const EXTENSION: &str = "fcb";

/// Size caps of [`unpack`]: the manifest and the signature are small text; the plugin and
/// the model may be large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_text_bytes: u64,
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_bytes: 1 << 20, max_file_bytes: 2 << 30 }
    }
}

impl Limits {
    fn cap(&self, name: &str) -> u64 {
        if name == MANIFEST_FILE || name == SIGNATURE_FILE { self.max_text_bytes } else { self.max_file_bytes }
    }
}

/// Every name an archive may hold; the last four are optional.
const NAMES: [&str; 7] =
    [MANIFEST_FILE, PLUGIN_FILE, MODEL_FILE, SIGNATURE_FILE, METRICS_FILE, PROFILE_FILE, TREES_FILE];

fn archive_error(path: &Path, reason: impl Into<String>) -> BundleFileError {
    BundleFileError::Archive { path: path.to_owned(), reason: reason.into() }
}

/// Packs the bundle in `dir` into `out` (its files must match its manifest). Returns the
/// top folder's name, `<name>-<version>`.
pub fn pack(dir: &Path, out: &Path) -> Result<String, BundleFileError> {
    let manifest = Manifest::read(dir)?;
    manifest.verify_files(dir)?;
    if manifest.plugin.file != PLUGIN_FILE || manifest.model.file != MODEL_FILE {
        return Err(archive_error(out, format!("only bundles of {PLUGIN_FILE} and {MODEL_FILE} can be packed")));
    }
    let top = format!("{}-{}", manifest.bundle.name, manifest.bundle.version);
    let error = |e: std::io::Error| archive_error(out, e.to_string());
    let mut builder = tar::Builder::new(BufWriter::new(File::create(out).map_err(error)?));
    // The manifest's training files already have their fixed names (checked at parse).
    let named = |name: &str| manifest.training.entries().any(|(_, fixed, file)| fixed == name && file.is_some());
    for name in NAMES {
        let path = dir.join(name);
        let optional = name == SIGNATURE_FILE || TrainingFiles::NAMES.contains(&name);
        if optional && !(path.exists() && (name == SIGNATURE_FILE || named(name))) {
            continue;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| BundleFileError::Read { path: path.clone(), reason: e.to_string() })?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, format!("{top}/{name}"), bytes.as_slice()).map_err(error)?;
    }
    let mut writer = builder.into_inner().map_err(error)?;
    writer.flush().map_err(error)?;
    writer.into_inner().map_err(|e| error(e.into_error()))?.sync_all().map_err(error)?;
    Ok(top)
}

/// Unpacks `file` into `out/<top folder>` (which must not exist yet) with the default
/// [`Limits`]; returns the bundle's folder.
pub fn unpack(file: &Path, out: &Path) -> Result<PathBuf, BundleFileError> {
    unpack_with(file, out, Limits::default())
}

/// [`unpack`] with explicit size caps.
pub fn unpack_with(file: &Path, out: &Path, limits: Limits) -> Result<PathBuf, BundleFileError> {
    let refuse = |reason: String| archive_error(file, reason);
    std::fs::create_dir_all(out).map_err(|e| archive_error(out, e.to_string()))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(out)
        .map_err(|e| archive_error(out, format!("cannot make a staging folder: {e}")))?;
    let mut archive = tar::Archive::new(BufReader::new(File::open(file).map_err(|e| refuse(e.to_string()))?));
    let mut entries = Entries::default();
    for entry in archive.entries().map_err(|e| refuse(e.to_string()))? {
        let entry = entry.map_err(|e| refuse(e.to_string()))?;
        let Some(Admitted { raw, name, cap }) = entries.admit(&entry, limits).map_err(refuse)? else { continue };
        let target = staging.path().join(&name);
        let mut output = File::create(&target).map_err(|e| archive_error(&target, e.to_string()))?;
        let copied = std::io::copy(&mut entry.take(cap + 1), &mut output).map_err(|e| refuse(e.to_string()))?;
        if copied > cap {
            return Err(refuse(format!("entry {raw:?} is over the cap of {cap} bytes")));
        }
        output.sync_all().map_err(|e| archive_error(&target, e.to_string()))?;
    }
    let top = entries.complete().map_err(refuse)?;
    let dir = out.join(&top);
    if dir.exists() {
        return Err(archive_error(&dir, "already exists; refusing to overwrite it"));
    }
    let staged = staging.keep();
    std::fs::rename(&staged, &dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        archive_error(&dir, e.to_string())
    })?;
    Ok(dir)
}

/// The manifest of a `.fcb` held in memory, for a tool that checks a file before sending
/// it (the fleet manager). The archive must pass [`unpack`]'s entry rules, so a file the
/// appliance would refuse is refused here too; `source` names it in errors. Nothing is
/// written, and only the manifest is read into memory.
pub fn read_manifest(source: &Path, bytes: &[u8]) -> Result<Manifest, BundleFileError> {
    let refuse = |reason: String| archive_error(source, reason);
    let limits = Limits::default();
    let mut entries = Entries::default();
    let mut manifest = None;
    for entry in tar::Archive::new(bytes).entries().map_err(|e| refuse(e.to_string()))? {
        let mut entry = entry.map_err(|e| refuse(e.to_string()))?;
        let Some(Admitted { name, cap, .. }) = entries.admit(&entry, limits).map_err(refuse)? else { continue };
        if name == MANIFEST_FILE {
            let mut text = Vec::new();
            (&mut entry).take(cap).read_to_end(&mut text).map_err(|e| refuse(e.to_string()))?;
            manifest = Some(text);
        }
    }
    let top = entries.complete().map_err(refuse)?;
    let text = manifest.expect("a complete archive holds its manifest");
    Manifest::parse(&source.join(top).join(MANIFEST_FILE), &text)
}

/// A bundle file an archive may hold: its path as written, its name, its size cap.
struct Admitted {
    raw: String,
    name: String,
    cap: u64,
}

/// The entries of an archive so far, and the rules each new one must pass: one top folder,
/// only regular files with a bundle file's name, each once and within its size cap.
#[derive(Default)]
struct Entries {
    top: Option<String>,
    seen: BTreeSet<String>,
}

impl Entries {
    /// `Some` for a bundle file, `None` for the top folder itself; the refusal names the
    /// entry and the rule.
    fn admit<R: Read>(&mut self, entry: &tar::Entry<'_, R>, limits: Limits) -> Result<Option<Admitted>, String> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (folder, name) = split_entry_path(&raw).map_err(|reason| format!("entry {raw:?}: {reason}"))?;
        if *self.top.get_or_insert_with(|| folder.clone()) != folder {
            return Err(format!("entry {raw:?} is outside the top folder {:?}", self.top.clone().unwrap_or_default()));
        }
        let kind = entry.header().entry_type();
        let Some(name) = name else {
            if kind.is_dir() {
                return Ok(None);
            }
            return Err(format!("entry {raw:?} is not a folder"));
        };
        if !kind.is_file() {
            return Err(format!("entry {raw:?} is not a regular file ({kind:?})"));
        }
        if !NAMES.contains(&name.as_str()) {
            return Err(format!("entry {raw:?}: {name:?} is not a bundle file ({})", NAMES.join(", ")));
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("entry {raw:?} appears twice"));
        }
        let cap = limits.cap(&name);
        let size = entry.header().size().map_err(|e| e.to_string())?;
        if size > cap {
            return Err(format!("entry {raw:?} is {size} bytes, over the cap of {cap}"));
        }
        Ok(Some(Admitted { raw, name, cap }))
    }

    /// The top folder, once the archive held every required file.
    fn complete(self) -> Result<String, String> {
        let top = self.top.ok_or_else(|| "the archive is empty".to_owned())?;
        for required in [MANIFEST_FILE, PLUGIN_FILE, MODEL_FILE] {
            if !self.seen.contains(required) {
                return Err(format!("the archive has no {top}/{required}"));
            }
        }
        Ok(top)
    }
}

/// `top/name` -> (top, Some(name)); `top` or `top/` -> (top, None). Anything else (absolute,
/// `..`, `.`, deeper paths, hidden names) is refused.
fn split_entry_path(raw: &str) -> Result<(String, Option<String>), String> {
    if raw.starts_with('/') || raw.contains('\\') {
        return Err("absolute paths are refused".to_owned());
    }
    let mut parts = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().ok_or("the path is not UTF-8")?;
                if part.starts_with('.') {
                    return Err(format!("{part:?} is not a plain name"));
                }
                parts.push(part.to_owned());
            }
            Component::ParentDir => return Err("`..` is refused".to_owned()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute paths are refused".to_owned()),
            Component::CurDir => return Err("`.` is refused".to_owned()),
        }
    }
    match parts.as_slice() {
        [top] => Ok((top.clone(), None)),
        [top, name] => Ok((top.clone(), Some(name.clone()))),
        _ => Err("entries must be <top folder>/<file>".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn bundle(signed: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PLUGIN_FILE), b"wasm").unwrap();
        std::fs::write(dir.path().join(MODEL_FILE), b"onnx").unwrap();
        let mut manifest = format!(
            "[bundle]\nname = \"cars\"\nversion = \"1.2.0\"\nmin_runtime_version = \"0.1.0\"\n\n\
             [plugin]\nfile = \"{PLUGIN_FILE}\"\nsha256 = \"{}\"\n\n[model]\nfile = \"{MODEL_FILE}\"\nsha256 = \"{}\"\n",
            hex::encode(Sha256::digest(b"wasm")),
            hex::encode(Sha256::digest(b"onnx")),
        );
        // A file the manifest does not name stays out of the archive.
        std::fs::write(dir.path().join(PROFILE_FILE), b"{}").unwrap();
        if signed {
            std::fs::write(dir.path().join(METRICS_FILE), b"{}").unwrap();
            manifest.push_str(&format!(
                "\n[training.metrics]\nfile = \"{METRICS_FILE}\"\nsha256 = \"{}\"\n",
                hex::encode(Sha256::digest(b"{}"))
            ));
        }
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest).unwrap();
        if signed {
            std::fs::write(dir.path().join(SIGNATURE_FILE), "key_id = \"0\"\n").unwrap();
        }
        dir
    }

    /// A tar with entries written by hand, so that paths the tar crate would refuse to
    /// write (`..`, absolute) can be tested.
    fn raw_tar(entries: &[(&str, &[u8], tar::EntryType)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut builder = tar::Builder::new(File::create(file.path()).unwrap());
        for (path, data, kind) in entries {
            let mut header = tar::Header::new_ustar();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.finish().unwrap();
        file
    }

    fn complete(top: &str) -> Vec<(String, &'static [u8])> {
        [MANIFEST_FILE, PLUGIN_FILE, MODEL_FILE].iter().map(|name| (format!("{top}/{name}"), &b"x"[..])).collect()
    }

    fn unpack_entries(extra: (&str, &[u8], tar::EntryType)) -> Result<PathBuf, BundleFileError> {
        let base = complete("cars-1.2.0");
        let mut entries: Vec<(&str, &[u8], tar::EntryType)> =
            base.iter().map(|(path, data)| (path.as_str(), *data, tar::EntryType::Regular)).collect();
        entries.push(extra);
        let file = raw_tar(&entries);
        let out = tempfile::tempdir().unwrap();
        let result = unpack(file.path(), out.path());
        // A refused archive leaves nothing behind.
        if result.is_err() {
            assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        }
        result
    }

    #[track_caller]
    fn assert_refused(result: Result<PathBuf, BundleFileError>, reason: &str) {
        match result {
            Err(error @ BundleFileError::Archive { .. }) => assert!(error.to_string().contains(reason), "{error}"),
            other => panic!("expected a refusal ({reason}), got {other:?}"),
        }
    }

    #[test]
    fn a_bundle_round_trips_through_its_archive() {
        for signed in [false, true] {
            let (dir, scratch) = (bundle(signed), tempfile::tempdir().unwrap());
            let file = scratch.path().join("cars.fcb");
            assert_eq!(pack(dir.path(), &file).unwrap(), "cars-1.2.0");
            let out = scratch.path().join("out");
            let unpacked = unpack(&file, &out).unwrap();
            assert_eq!(unpacked, out.join("cars-1.2.0"));
            let mut names: Vec<String> = std::fs::read_dir(&unpacked)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let mut expected = vec![MANIFEST_FILE, MODEL_FILE, PLUGIN_FILE];
            if signed {
                expected.extend([SIGNATURE_FILE, METRICS_FILE]);
                expected.sort_unstable();
            }
            assert_eq!(names, expected);
            for name in &names {
                assert_eq!(std::fs::read(unpacked.join(name)).unwrap(), std::fs::read(dir.path().join(name)).unwrap());
            }
            Manifest::read(&unpacked).unwrap().verify_files(&unpacked).unwrap();
            // Packing is deterministic, and unpacking never overwrites.
            let again = scratch.path().join("again.fcb");
            pack(dir.path(), &again).unwrap();
            assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&again).unwrap());
            assert_refused(unpack(&file, &out), "already exists");
        }
    }

    #[test]
    fn packing_refuses_a_bundle_whose_files_do_not_match() {
        let (dir, scratch) = (bundle(false), tempfile::tempdir().unwrap());
        std::fs::write(dir.path().join(MODEL_FILE), b"tampered").unwrap();
        assert!(matches!(pack(dir.path(), &scratch.path().join("x.fcb")), Err(BundleFileError::Digest { .. })));
    }

    #[test]
    fn unpack_refuses_paths_outside_the_top_folder() {
        let regular = tar::EntryType::Regular;
        assert_refused(unpack_entries(("cars-1.2.0/../x", b"x", regular)), "`..`");
        assert_refused(unpack_entries(("../x", b"x", regular)), "`..`");
        assert_refused(unpack_entries(("/etc/cron.d/x", b"x", regular)), "absolute");
        assert_refused(unpack_entries(("other-1.0.0/bundle.sig", b"x", regular)), "outside the top folder");
        assert_refused(unpack_entries(("cars-1.2.0/sub/model.onnx", b"x", regular)), "<top folder>/<file>");
    }

    #[test]
    fn unpack_refuses_unknown_names_links_and_duplicates() {
        assert_refused(unpack_entries(("cars-1.2.0/run.sh", b"x", tar::EntryType::Regular)), "not a bundle file");
        assert_refused(unpack_entries(("cars-1.2.0/.hidden", b"x", tar::EntryType::Regular)), "plain name");
        assert_refused(unpack_entries(("cars-1.2.0/bundle.sig", b"", tar::EntryType::Symlink)), "not a regular file");
        assert_refused(unpack_entries(("cars-1.2.0/model.onnx", b"x", tar::EntryType::Regular)), "twice");
        let file = raw_tar(&[("cars-1.2.0/bundle.toml", b"x", tar::EntryType::Regular)]);
        assert_refused(unpack(file.path(), tempfile::tempdir().unwrap().path()), "no cars-1.2.0/preprocess.wasm");
    }

    #[test]
    fn read_manifest_reads_a_packed_bundle_and_refuses_what_unpack_refuses() {
        let (dir, scratch) = (bundle(true), tempfile::tempdir().unwrap());
        let file = scratch.path().join("cars.fcb");
        pack(dir.path(), &file).unwrap();
        let manifest = read_manifest(&file, &std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(manifest, Manifest::read(dir.path()).unwrap());

        let read = |entries: &[(&str, &[u8], tar::EntryType)]| {
            let file = raw_tar(entries);
            read_manifest(file.path(), &std::fs::read(file.path()).unwrap()).map(|_| PathBuf::new())
        };
        let base = complete("cars-1.2.0");
        let regular = tar::EntryType::Regular;
        for (extra, reason) in [
            (("cars-1.2.0/../x", &b"x"[..], regular), "`..`"),
            (("/etc/cron.d/x", b"x", regular), "absolute"),
            (("cars-1.2.0/run.sh", b"x", regular), "not a bundle file"),
            (("cars-1.2.0/bundle.sig", b"", tar::EntryType::Symlink), "not a regular file"),
            (("cars-1.2.0/model.onnx", b"x", regular), "twice"),
        ] {
            let mut entries: Vec<(&str, &[u8], tar::EntryType)> =
                base.iter().map(|(path, data)| (path.as_str(), *data, regular)).collect();
            entries.push(extra);
            assert_refused(read(&entries), reason);
        }
        assert_refused(read(&[("cars-1.2.0/bundle.toml", b"x", regular)]), "no cars-1.2.0/preprocess.wasm");
        assert_refused(read(&[]), "empty");
    }

    #[test]
    fn unpack_refuses_oversized_entries() {
        let (dir, scratch) = (bundle(false), tempfile::tempdir().unwrap());
        let file = scratch.path().join("cars.fcb");
        pack(dir.path(), &file).unwrap();
        let tight = Limits { max_text_bytes: 1 << 20, max_file_bytes: 3 };
        assert_refused(unpack_with(&file, &scratch.path().join("out"), tight), "over the cap of 3");
        let tight = Limits { max_text_bytes: 10, max_file_bytes: 1 << 20 };
        assert_refused(unpack_with(&file, &scratch.path().join("out"), tight), "bundle.toml");
        assert_eq!(std::fs::read_dir(scratch.path().join("out")).unwrap().count(), 0);
    }
}
