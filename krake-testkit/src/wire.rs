//! Krake's captured traffic: real requests and responses of Krake 1.0.1's
//! API server, shipped inside this crate (`krake-testkit/wire/`, described
//! in its `README.md`) so that a clone of the repository alone passes its
//! tests. Use them as golden data: what a Krake client sends and expects.
//!
//! - [`objects`]: every full response body of `objects/`, one object (or
//!   list) per file, for every kind of Krake's four API groups;
//! - [`exchange`]: a transcript of request and response pairs of
//!   `exchanges/` (method, path, body, status line, content type, body);
//! - [`watch_stream`]: a raw watch stream, heartbeats included;
//! - [`dir`]: the folder itself, for anything else (`krakectl/` holds what
//!   Krake's CLI prints).
//!
//! ```
//! # fn main() -> Result<(), krake_testkit::wire::WireError> {
//! for object in krake_testkit::wire::objects() {
//!     let (path, value) = object?;
//!     assert!(value["kind"].is_string(), "{}", path.display());
//! }
//! let role = krake_testkit::wire::object("Role")?;
//! assert_eq!(role["kind"], "Role");
//! assert!(krake_testkit::wire::exchange("transcript1")?.contains("### GET "));
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a file of the captured traffic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The file or folder cannot be read (or does not exist).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The file is not JSON.
    #[error("{} is not JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: serde_json::Error,
    },
}

/// The folder of the captured traffic: `wire/` in this crate's folder.
pub fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/wire"))
}

/// Every object of `objects/` (the `.json` files, in the order of their
/// names) with its path. A file name starts with the kind it holds (such as
/// `Application-running.json` or `ApplicationList-1.json`).
pub fn objects() -> Objects {
    let folder = dir().join("objects");
    let paths = fs::read_dir(&folder).and_then(|entries| {
        entries
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<io::Result<Vec<_>>>()
    });
    match paths {
        Ok(mut paths) => {
            paths.retain(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "json")
            });
            paths.sort();
            Objects {
                paths: paths.into_iter(),
                error: None,
            }
        }
        Err(source) => Objects {
            paths: Vec::new().into_iter(),
            error: Some(WireError::Read {
                path: folder,
                source,
            }),
        },
    }
}

/// The object of `objects/<name>.json`, such as `object("Application-running")`.
pub fn object(name: &str) -> Result<Value, WireError> {
    read_json(&dir().join("objects").join(format!("{name}.json")))
}

/// The transcript `exchanges/<name>.md`, such as `exchange("transcript1")`:
/// for each request a `### METHOD /path` heading, the request body, the
/// status line with the content type, and the response body.
pub fn exchange(name: &str) -> Result<String, WireError> {
    read(&dir().join("exchanges").join(format!("{name}.md")))
}

/// The watch stream `<name>.ndjson`: `watch-ns` (one namespace) or
/// `watch-all` (all namespaces). One event per line; an empty line is a
/// heartbeat.
pub fn watch_stream(name: &str) -> Result<String, WireError> {
    read(&dir().join(format!("{name}.ndjson")))
}

/// The objects of [`objects`]: each item is a file's path and its JSON, or
/// why it could not be read (a folder that cannot be read is one error).
#[derive(Debug)]
pub struct Objects {
    paths: std::vec::IntoIter<PathBuf>,
    /// Reported first, then the iterator ends.
    error: Option<WireError>,
}

impl Iterator for Objects {
    type Item = Result<(PathBuf, Value), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.error.take() {
            return Some(Err(error));
        }
        let path = self.paths.next()?;
        Some(read_json(&path).map(|value| (path, value)))
    }
}

fn read(path: &Path) -> Result<String, WireError> {
    fs::read_to_string(path).map_err(|source| WireError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Value, WireError> {
    serde_json::from_str(&read(path)?).map_err(|source| WireError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn objects_are_sorted_json_files_with_a_kind() {
        let objects: Vec<(PathBuf, Value)> = objects().collect::<Result<_, _>>().unwrap();
        assert!(objects.len() >= 20, "{}", objects.len());
        assert!(objects.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (path, value) in &objects {
            let name = path.file_name().unwrap().to_string_lossy();
            let kind = value["kind"].as_str().unwrap();
            assert!(name.starts_with(kind), "{name} holds a {kind}");
        }
    }

    #[test]
    fn missing_files_name_their_path() {
        let error = exchange("no-such-transcript").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("exchanges/no-such-transcript.md"),
            "{error}"
        );
        assert!(watch_stream("watch-ns").unwrap().lines().count() > 1);
    }
}
