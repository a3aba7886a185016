//! `?limit=N&continue=TOKEN` on lists: pages of one consistent snapshot.
//!
//! The continue token carries the store revision of the first page and the
//! last key returned, so every page reads the same snapshot. It is opaque to
//! clients (URL-safe base64).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use krake_store::Revision;

/// The objects of the first store read of a list. A list of any size is
/// read in pages at one revision and streamed, so memory follows the page,
/// not the list.
pub const FIRST_PAGE: usize = 100;

/// The most objects per store read of a list after the first: the pages
/// that follow are sized from the objects seen so far to hold about
/// [`PAGE_BYTES`], within 1 and this many objects.
pub const STORE_PAGE: usize = 500;

/// The bytes a store read of a list aims at.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// The objects of the next store read of a list, from the `bytes` of the
/// `objects` read so far.
pub fn next_page_size(objects: usize, bytes: usize) -> usize {
    if objects == 0 {
        return FIRST_PAGE;
    }
    let average = (bytes / objects).max(1);
    (PAGE_BYTES / average).clamp(1, STORE_PAGE)
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    /// The snapshot revision.
    pub revision: Revision,
    /// The last key of the previous page.
    pub last_key: String,
}

impl ContinueToken {
    /// The token's text.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{}", self.revision, self.last_key))
    }

    /// Reads a token; `None` if it is not one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (revision, last_key) = text.split_once('\n')?;
        Some(ContinueToken {
            revision: revision.parse().ok()?,
            last_key: last_key.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_follow_object_sizes() {
        assert_eq!(next_page_size(0, 0), FIRST_PAGE);
        assert_eq!(next_page_size(100, 100 * 1_300), STORE_PAGE);
        assert_eq!(next_page_size(100, 100 * 17_000), 61);
        assert_eq!(next_page_size(1, 3 * PAGE_BYTES), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2_000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any text decodes or is refused; every token round-trips.
        #[test]
        fn tokens_round_trip_and_garbage_is_refused(
            text in "\\PC{0,40}",
            revision in proptest::prelude::any::<i64>(),
            key in "\\PC{0,20}",
        ) {
            let _ = ContinueToken::decode(&text);
            let token = ContinueToken { revision, last_key: key };
            proptest::prop_assert_eq!(ContinueToken::decode(&token.encode()), Some(token));
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let token = ContinueToken {
            revision: 42,
            last_key: "/core/roles/a".into(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()), Some(token));
        assert_eq!(ContinueToken::decode("not a token"), None);
        assert_eq!(
            ContinueToken::decode(&URL_SAFE_NO_PAD.encode("x\n/k")),
            None
        );
    }
}
