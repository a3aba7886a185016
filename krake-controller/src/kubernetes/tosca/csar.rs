//! CSAR archives (TOSCA's Cloud Service Archive): a ZIP file whose
//! `TOSCA-Metadata/TOSCA.meta` names the template to deploy in its
//! `Entry-Definitions` line. Pure: archive bytes in, the entry template's
//! text out.
//!
//! ```
//! use std::io::Write;
//!
//! use krake_controller::kubernetes::tosca::csar::{META, entry_definitions};
//!
//! let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
//! let options = zip::write::SimpleFileOptions::default();
//! zip.start_file(META, options).unwrap();
//! zip.write_all(b"TOSCA-Meta-File-Version: 1.0\nEntry-Definitions: app.yaml\n").unwrap();
//! zip.start_file("app.yaml", options).unwrap();
//! zip.write_all(b"tosca_definitions_version: tosca_simple_yaml_1_0\n").unwrap();
//! let archive = zip.finish().unwrap().into_inner();
//!
//! let entry = entry_definitions(&archive, 1 << 20).unwrap();
//! assert_eq!(entry.path, "app.yaml");
//! assert!(entry.text.starts_with("tosca_definitions_version"));
//! ```

use std::io::{Cursor, Read};

use super::{Problem, ToscaError};

/// Where a CSAR keeps its metadata.
pub const META: &str = "TOSCA-Metadata/TOSCA.meta";

/// The template a CSAR archive names as its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDefinitions {
    /// Its path in the archive (as `TOSCA.meta` names it).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// The entry template of `archive`; no file may be larger than
/// `max_file` bytes once unpacked.
///
/// # Errors
///
/// Bytes that are no ZIP archive, a missing `TOSCA.meta` or
/// `Entry-Definitions` line, an entry that is not in the archive, a file that
/// cannot be unpacked, is too large or is not UTF-8 text.
pub fn entry_definitions(archive: &[u8], max_file: usize) -> Result<EntryDefinitions, ToscaError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).map_err(|err| {
        ToscaError::new(
            "",
            Problem::Archive(format!("not a CSAR (ZIP) archive: {err}")),
        )
    })?;
    // Names that cannot be decoded cannot be named by TOSCA.meta either.
    let names: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .map(std::borrow::Cow::into_owned)
        .collect();
    let Some(meta_name) = find(&names, META) else {
        return Err(ToscaError::new(META, Problem::MissingFile));
    };
    let meta = read(&mut zip, meta_name, max_file)?;
    let Some(entry) = meta_value(&meta, "Entry-Definitions") else {
        return Err(ToscaError::new(
            META,
            Problem::Archive("no Entry-Definitions line".to_owned()),
        ));
    };
    let Some(entry_name) = find(&names, entry) else {
        return Err(ToscaError::new(
            META,
            Problem::MissingEntry(entry.to_owned()),
        ));
    };
    let text = read(&mut zip, entry_name, max_file)?;
    Ok(EntryDefinitions {
        path: entry.to_owned(),
        text,
    })
}

/// The value of `key` in a `TOSCA.meta` text (`Key: value` lines).
pub fn meta_value<'a>(meta: &'a str, key: &str) -> Option<&'a str> {
    meta.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A path without `./` and `/` at its start.
fn normalized(path: &str) -> &str {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            return path;
        }
    }
}

/// The name in the archive of `path`.
fn find<'a>(names: &'a [String], path: &str) -> Option<&'a str> {
    let wanted = normalized(path);
    names
        .iter()
        .map(String::as_str)
        .find(|name| normalized(name) == wanted)
}

/// The text of the file `name`, at most `max_file` bytes.
fn read(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    max_file: usize,
) -> Result<String, ToscaError> {
    let unreadable = |message: String| ToscaError::new(name, Problem::Archive(message));
    let file = zip
        .by_name(name)
        .map_err(|err| unreadable(format!("cannot be unpacked: {err}")))?;
    let limit = u64::try_from(max_file)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|err| unreadable(format!("cannot be unpacked: {err}")))?;
    if bytes.len() > max_file {
        return Err(unreadable(format!(
            "larger than {max_file} bytes once unpacked"
        )));
    }
    String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 1 << 20;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in files {
            zip.start_file(*name, options).unwrap();
            zip.write_all(content).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    const TEMPLATE: &[u8] = b"tosca_definitions_version: tosca_simple_yaml_1_0\n";

    #[test]
    fn the_entry_named_by_tosca_meta_is_read() {
        let bytes = archive(&[
            (
                META,
                b"TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\nCreated-By: test\nEntry-Definitions: definitions/app.yaml\n",
            ),
            ("definitions/app.yaml", TEMPLATE),
            ("definitions/other.yaml", b"other"),
        ]);
        let entry = entry_definitions(&bytes, MAX).unwrap();
        assert_eq!(entry.path, "definitions/app.yaml");
        assert_eq!(entry.text.as_bytes(), TEMPLATE);
    }

    #[test]
    fn leading_dot_slash_in_names_is_ignored() {
        let bytes = archive(&[
            (META, b"Entry-Definitions: ./app.yaml\n"),
            ("app.yaml", TEMPLATE),
        ]);
        assert_eq!(entry_definitions(&bytes, MAX).unwrap().path, "./app.yaml");
    }

    #[test]
    fn bytes_that_are_no_zip_archive_are_refused() {
        let err = entry_definitions(b"hello, not a zip", MAX).unwrap_err();
        assert_eq!(err.location, "");
        assert!(matches!(err.problem, Problem::Archive(_)), "{err}");
        assert!(
            err.to_string().starts_with("not a CSAR (ZIP) archive"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_without_tosca_meta_is_refused() {
        let bytes = archive(&[("app.yaml", TEMPLATE)]);
        let err = entry_definitions(&bytes, MAX).unwrap_err();
        assert_eq!(err, ToscaError::new(META, Problem::MissingFile));
        assert_eq!(
            err.to_string(),
            "TOSCA-Metadata/TOSCA.meta: missing from the CSAR archive"
        );
    }

    #[test]
    fn tosca_meta_without_entry_definitions_is_refused() {
        let bytes = archive(&[
            (META, b"TOSCA-Meta-File-Version: 1.0\n"),
            ("app.yaml", TEMPLATE),
        ]);
        let err = entry_definitions(&bytes, MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOSCA-Metadata/TOSCA.meta: no Entry-Definitions line"
        );
    }

    #[test]
    fn an_entry_that_is_not_in_the_archive_is_refused() {
        let bytes = archive(&[(META, b"Entry-Definitions: missing.yaml\n")]);
        let err = entry_definitions(&bytes, MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOSCA-Metadata/TOSCA.meta: Entry-Definitions names \"missing.yaml\", which is not in the CSAR archive"
        );
    }

    #[test]
    fn a_file_larger_than_the_cap_once_unpacked_is_refused() {
        let big = vec![b'a'; 4096];
        let bytes = archive(&[(META, b"Entry-Definitions: app.yaml\n"), ("app.yaml", &big)]);
        // Deflate packs it small; the cap is on the unpacked size.
        assert!(bytes.len() < 1024);
        let err = entry_definitions(&bytes, 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app.yaml: larger than 1000 bytes once unpacked"
        );
    }

    #[test]
    fn an_entry_that_is_not_text_is_refused() {
        let bytes = archive(&[
            (META, b"Entry-Definitions: app.yaml\n"),
            ("app.yaml", &[0xff, 0xfe, 0x00]),
        ]);
        let err = entry_definitions(&bytes, MAX).unwrap_err();
        assert_eq!(err.to_string(), "app.yaml: not UTF-8 text");
    }

    #[test]
    fn meta_values_are_trimmed_and_empty_ones_absent() {
        let meta = "A: 1\n  Entry-Definitions :  x.yaml  \nB:\n";
        assert_eq!(meta_value(meta, "Entry-Definitions"), Some("x.yaml"));
        assert_eq!(meta_value(meta, "B"), None);
        assert_eq!(meta_value(meta, "C"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = entry_definitions(&bytes, MAX);
        }

        #[test]
        fn a_damaged_archive_never_panics(
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = archive(&[
                (META, b"Entry-Definitions: app.yaml\n"),
                ("app.yaml", TEMPLATE),
            ]);
            let at = index.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            let _ = entry_definitions(&bytes, MAX);
        }
    }
}
