//! The on-disk encoding of the embedded store's records.
//!
//! Every integer is little-endian. Decoding never panics: a record that is too
//! short or holds a key that is not UTF-8 gives [`StoreError::Internal`].
//!
//! A key's record (table `kv`, value):
//!
//! ```text
//! create_revision: i64 | mod_revision: i64 | value bytes (the rest)
//! ```
//!
//! A change-log entry (table `log`, value; the table key is the revision):
//!
//! ```text
//! kind: u8 (0 create, 1 update, 2 delete) | create_revision: i64 |
//! previous_mod_revision: i64 (0 for a create) | key_len: u32 | key |
//! value_len: u32 | value | previous value (the rest; updates only)
//! ```
//!
//! For a delete, `value` is the value just before the deletion, which is
//! also the previous state's value; for an update, the previous value follows.
//! With the previous state in each entry, the state at any retained revision
//! can be rebuilt by undoing the later entries, even when the key's earlier
//! entries have been compacted away.

use bytes::Bytes;

use crate::{EventKind, KeyValue, Revision, StoreError, StoreEvent};

const CREATE: u8 = 0;
const UPDATE: u8 = 1;
const DELETE: u8 = 2;

/// A key's stored record, borrowed from the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordView<'a> {
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) value: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Decodes a record of the `kv` table.
    pub(super) fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let mut reader = Reader::new(bytes, "key record");
        let create_revision = reader.i64()?;
        let mod_revision = reader.i64()?;
        Ok(RecordView {
            create_revision,
            mod_revision,
            value: reader.rest(),
        })
    }

    /// The record as a [`KeyValue`] of `key`.
    pub(super) fn to_key_value(self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(self.value),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// Encodes a record of the `kv` table.
pub(super) fn encode_record(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// What a change-log entry records, for encoding.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    /// The key was created with `value`.
    Create {
        /// The new value.
        value: &'a [u8],
    },
    /// The key's value was replaced.
    Update {
        /// The new value.
        value: &'a [u8],
        /// The `mod_revision` before the update.
        previous_mod_revision: Revision,
        /// The value before the update.
        previous_value: &'a [u8],
    },
    /// The key was deleted.
    Delete {
        /// The value just before the deletion.
        value: &'a [u8],
        /// The `mod_revision` just before the deletion.
        previous_mod_revision: Revision,
    },
}

/// Encodes a change-log entry.
pub(super) fn encode_change(
    key: &str,
    create_revision: Revision,
    change: Change<'_>,
) -> Result<Vec<u8>, StoreError> {
    let (kind, value, previous_mod_revision, previous_value): (u8, &[u8], Revision, &[u8]) =
        match change {
            Change::Create { value } => (CREATE, value, 0, &[]),
            Change::Update {
                value,
                previous_mod_revision,
                previous_value,
            } => (UPDATE, value, previous_mod_revision, previous_value),
            Change::Delete {
                value,
                previous_mod_revision,
            } => (DELETE, value, previous_mod_revision, &[]),
        };
    let key_len = length(key.len(), "key")?;
    let value_len = length(value.len(), "value")?;
    let mut out =
        Vec::with_capacity(1 + 8 + 8 + 4 + key.len() + 4 + value.len() + previous_value.len());
    out.push(kind);
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&previous_mod_revision.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(previous_value);
    Ok(out)
}

fn length(len: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(len)
        .map_err(|_| StoreError::internal(format!("the {what} is too large ({len} bytes)")))
}

/// A change-log entry, borrowed from the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChangeView<'a> {
    kind: u8,
    create_revision: Revision,
    previous_mod_revision: Revision,
    /// The key the change is about.
    pub(super) key: &'a str,
    value: &'a [u8],
    previous_value: &'a [u8],
}

impl<'a> ChangeView<'a> {
    /// Decodes a change-log entry.
    pub(super) fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let mut reader = Reader::new(bytes, "change-log entry");
        let kind = reader.u8()?;
        if !matches!(kind, CREATE | UPDATE | DELETE) {
            return Err(StoreError::internal(format!(
                "corrupt change-log entry: unknown kind {kind}"
            )));
        }
        let create_revision = reader.i64()?;
        let previous_mod_revision = reader.i64()?;
        let key_len = reader.u32()?;
        let key = std::str::from_utf8(reader.bytes(key_len)?)
            .map_err(|_| StoreError::internal("corrupt change-log entry: the key is not UTF-8"))?;
        let value_len = reader.u32()?;
        let value = reader.bytes(value_len)?;
        Ok(ChangeView {
            kind,
            create_revision,
            previous_mod_revision,
            key,
            value,
            previous_value: reader.rest(),
        })
    }

    /// The event this entry records, which happened at `revision`.
    pub(super) fn to_event(self, revision: Revision) -> StoreEvent {
        StoreEvent {
            kind: if self.kind == DELETE {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            kv: KeyValue {
                key: self.key.to_owned(),
                value: Bytes::copy_from_slice(self.value),
                create_revision: self.create_revision,
                mod_revision: revision,
            },
        }
    }

    /// The key as it was just before this change (`None`: it did not exist).
    pub(super) fn state_before(self) -> Option<KeyValue> {
        let value = match self.kind {
            CREATE => return None,
            UPDATE => self.previous_value,
            _ => self.value,
        };
        Some(KeyValue {
            key: self.key.to_owned(),
            value: Bytes::copy_from_slice(value),
            create_revision: self.create_revision,
            mod_revision: self.previous_mod_revision,
        })
    }
}

/// Reads fixed-size fields off a byte slice, failing cleanly when it is short.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(StoreError::internal(format!(
                "corrupt {}: {} bytes missing",
                self.what,
                len - self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<usize, StoreError> {
        let value = u32::from_le_bytes(self.array()?);
        usize::try_from(value).map_err(StoreError::internal)
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn record_round_trip() {
        let bytes = encode_record(3, 7, b"{}");
        let view = RecordView::decode(&bytes).unwrap();
        assert_eq!(
            view.to_key_value("/k"),
            KeyValue {
                key: "/k".into(),
                value: Bytes::from_static(b"{}"),
                create_revision: 3,
                mod_revision: 7,
            }
        );
        assert!(RecordView::decode(&bytes[..15]).is_err());
    }

    #[test]
    fn change_round_trip() {
        let create = encode_change("/k", 5, Change::Create { value: b"a" }).unwrap();
        let view = ChangeView::decode(&create).unwrap();
        assert_eq!(view.key, "/k");
        assert!(view.to_event(5).is_create());
        assert_eq!(view.state_before(), None);

        let update = encode_change(
            "/k",
            5,
            Change::Update {
                value: b"new",
                previous_mod_revision: 6,
                previous_value: b"old",
            },
        )
        .unwrap();
        let view = ChangeView::decode(&update).unwrap();
        let event = view.to_event(9);
        assert_eq!(
            (event.kind, &event.kv.value[..], event.kv.create_revision),
            (EventKind::Put, &b"new"[..], 5)
        );
        let before = view.state_before().unwrap();
        assert_eq!(
            (
                &before.value[..],
                before.create_revision,
                before.mod_revision
            ),
            (&b"old"[..], 5, 6)
        );

        let delete = encode_change(
            "/k",
            5,
            Change::Delete {
                value: b"last",
                previous_mod_revision: 9,
            },
        )
        .unwrap();
        let view = ChangeView::decode(&delete).unwrap();
        let event = view.to_event(10);
        assert_eq!(
            (event.kind, &event.kv.value[..], event.kv.mod_revision),
            (EventKind::Delete, &b"last"[..], 10)
        );
        let before = view.state_before().unwrap();
        assert_eq!((&before.value[..], before.mod_revision), (&b"last"[..], 9));

        for cut in 0..delete.len() - 4 {
            assert!(ChangeView::decode(&delete[..cut]).is_err(), "cut at {cut}");
        }
        assert!(ChangeView::decode(&[9, 0, 0]).is_err());
    }
}
