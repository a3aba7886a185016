//! Krake's polymorphic containers: tagged unions written as
//! `{"type": "<tag>", "<tag>": {...}}`.
//!
//! serde's built-in enum representations cannot express a content key that
//! equals the tag, so [`tagged_container!`](crate::tagged_container) generates
//! the enum together with its `Serialize`, `Deserialize` and `JsonSchema`
//! implementations. Reading errors keep the path of the failing field (for
//! example `prometheus.url`) so that validation reports it where Krake does.

use serde::de::Error as _;
use serde_json::{Map, Value};

/// Reads the `type` key of a container and the content under that tag.
///
/// Errors are serde errors whose message starts with `at <path>: ` when they
/// concern a nested field; [`crate::validation`] turns that into a field path.
#[doc(hidden)]
pub fn split_container<E: serde::de::Error>(
    mut map: Map<String, Value>,
    tags: &[&str],
) -> Result<(String, Value), E> {
    let tag = match map.get("type") {
        Some(Value::String(tag)) => tag.clone(),
        Some(Value::Null) => return Err(E::custom("at type: Field may not be null.")),
        Some(_) => return Err(E::custom("at type: Not a valid string.")),
        None => return Err(E::missing_field("type")),
    };
    if !tags.contains(&tag.as_str()) {
        return Err(E::custom(format!(
            "at type: Unknown type {tag:?}. Must be one of: {}.",
            tags.join(", ")
        )));
    }
    match map.remove(&tag) {
        Some(content) => Ok((tag, content)),
        None => Err(E::custom(format!("missing field `{tag}`"))),
    }
}

/// Reads the content of one variant, keeping the nested path in the message.
///
/// The content is read leniently ([`crate::lenient`]: numbers and booleans
/// written as strings, as Krake accepts them) whatever the container was
/// read from: the container has already turned its input into a `Value`,
/// so it cannot know whether its reader was lenient. For canonically typed
/// input (stored objects, answers) this changes nothing.
#[doc(hidden)]
pub fn read_variant<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    tag: &str,
    content: Value,
) -> Result<T, E> {
    serde_path_to_error::deserialize(crate::lenient::Lenient::new(&content)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            E::custom(format!("at {tag}: {inner}"))
        } else {
            E::custom(format!("at {tag}.{path}: {inner}"))
        }
    })
}

/// Reads a container map from any self-describing format.
#[doc(hidden)]
pub fn read_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    match <Value as serde::Deserialize>::deserialize(deserializer)? {
        Value::Object(map) => Ok(map),
        _ => Err(D::Error::custom("invalid type: not a map, expected a map")),
    }
}

/// Declares a Krake polymorphic container: an enum whose variants each wrap
/// one struct and are written as `{"type": "<tag>", "<tag>": {...}}`.
///
/// ```
/// use krake_data::tagged_container;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// /// A web endpoint.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// pub struct Web { pub url: String }
///
/// tagged_container! {
///     /// Where to find something.
///     pub enum Source {
///         /// On the web.
///         Web(Web) = "web",
///     }
/// }
///
/// let source: Source = serde_json::from_str(r#"{"type": "web", "web": {"url": "u"}}"#).unwrap();
/// assert_eq!(source, Source::Web(Web { url: "u".into() }));
/// assert_eq!(source.type_name(), "web");
/// assert_eq!(
///     serde_json::to_string(&source).unwrap(),
///     r#"{"type":"web","web":{"url":"u"}}"#
/// );
/// ```
#[macro_export]
macro_rules! tagged_container {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($inner:ty) = $tag:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($inner) ),+
        }

        impl $name {
            /// The tags of all variants, as written in `type`.
            pub const TYPES: &'static [&'static str] = &[$($tag),+];

            /// The tag of this variant, as written in `type`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $tag ),+
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", self.type_name())?;
                match self {
                    $( Self::$variant(inner) => map.serialize_entry($tag, inner)?, )+
                }
                map.end()
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let map = $crate::tagged::read_map(deserializer)?;
                let (tag, content) = $crate::tagged::split_container::<D::Error>(map, Self::TYPES)?;
                match tag.as_str() {
                    $( $tag => $crate::tagged::read_variant::<$inner, D::Error>($tag, content).map(Self::$variant), )+
                    _ => unreachable!("split_container only returns known tags"),
                }
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(generator: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                let variants: Vec<::serde_json::Value> = vec![
                    $(
                        ::serde_json::json!({
                            "type": "object",
                            "required": ["type", $tag],
                            "properties": {
                                "type": { "type": "string", "const": $tag },
                                $tag: generator.subschema_for::<$inner>(),
                            },
                        }),
                    )+
                ];
                ::schemars::json_schema!({ "oneOf": variants })
            }
        }
    };
}
