//! List responses: `{"api": .., "kind": "<Kind>List", "metadata": {}, "items": [...]}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metadata::ListMetadata;
use crate::registry::Resource;

/// A list of objects of one kind, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceList<K> {
    /// The kind's API group.
    #[serde(default)]
    pub api: String,
    /// The list kind, e.g. `ApplicationList`.
    #[serde(default)]
    pub kind: String,
    /// List metadata (`{}` from Krake).
    #[serde(default)]
    pub metadata: ListMetadata,
    /// The objects, in store key order.
    pub items: Vec<K>,
}

impl<K: Resource> ResourceList<K> {
    /// A list of `items` with the kind's `api` and list kind filled in.
    pub fn new(items: Vec<K>) -> Self {
        ResourceList {
            api: K::INFO.api.to_owned(),
            kind: K::INFO.list_kind.to_owned(),
            metadata: ListMetadata::default(),
            items,
        }
    }
}

impl<K> IntoIterator for ResourceList<K> {
    type Item = K;
    type IntoIter = std::vec::IntoIter<K>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}
