//! Reading request bodies as leniently as Krake does: numbers, integers and
//! booleans written as strings.
//!
//! Krake validates bodies with marshmallow 3, whose `Float`, `Integer` and
//! `Boolean` fields convert what they are given rather than insist on a JSON
//! type. Krake's own CLI relies on it: `krakectl core globalmetric create m
//! --gmp-name p --min 0 --max 1` sends `"min": "0", "max": "1"`. [`Lenient`]
//! is a [`serde::Deserializer`] over a [`serde_json::Value`] that behaves
//! exactly as serde_json's own, except where a typed field asks for a
//! number, an integer or a boolean:
//!
//! - **numbers** (`f64`, `f32`): JSON numbers, and strings that Python's
//!   `float()` reads (surrounding whitespace and `_` between digits
//!   allowed). NaN and infinity are refused with marshmallow's
//!   [`SPECIAL_NUMBER`]; booleans and other text with [`INVALID_NUMBER`].
//! - **integers** (`i8` to `i128`, `u8` to `u128`): integral JSON numbers
//!   (`3` and `3.0`), and strings that Python's `int()` reads (`"3"`,
//!   `" -3 "`, `"+3"`, `"1_000"`). Refused with [`INVALID_INTEGER`]:
//!   fractions (`1.5`, `"1.5"`), other text, booleans and values out of the
//!   Rust type's range.
//! - **booleans**: JSON `true`/`false`, marshmallow's truthy and falsy
//!   spellings (`"t"`, `"true"`, `"on"`, `"y"`, `"yes"`, `"1"` in lower,
//!   title and upper case, and the same for false with `"f"`, `"false"`,
//!   `"off"`, `"n"`, `"no"`, `"0"`), and the numbers `1` and `0` (also as
//!   `1.0` and `0.0`). Anything else is refused with [`INVALID_BOOLEAN`].
//!
//! The typed value then serializes with its canonical JSON type, so what
//! is stored and returned is `0.0`, `3` or `true`, never the string sent.
//!
//! Coercion happens at every depth (structs, `Vec`, `Option`, maps, enums
//! and Krake's tagged containers, whose content
//! [`read_variant`](crate::tagged) reads with this deserializer), but only
//! where a typed field asks for a number or a boolean: free-form JSON
//! (`serde_json::Value` or `Map` fields such as manifests) is read through
//! `deserialize_any` and stays as sent, a string in a manifest stays a
//! string.
//!
//! # Limits
//!
//! serde's `#[serde(untagged)]` enums and `#[serde(flatten)]` fields buffer
//! their input through `deserialize_any` and decode it from that buffer, out
//! of this deserializer's reach: a number field under one of them stays
//! strict. None of Krake's kinds has one (the only untagged type,
//! `kubernetes::Tosca`, holds a free-form map or a string). Python's `int()`
//! and `float()` also read non-ASCII decimal digits (`"٣"`); these are
//! refused here.
//!
//! # Example
//!
//! ```
//! use krake_data::lenient;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize, PartialEq)]
//! struct Spec {
//!     min: f64,
//!     retries: Vec<i64>,
//!     enabled: Option<bool>,
//!     manifest: serde_json::Value,
//! }
//!
//! let body = serde_json::json!({
//!     "min": " 0.5 ",
//!     "retries": ["3", 4.0, "+5"],
//!     "enabled": "yes",
//!     "manifest": {"replicas": "2"},
//! });
//! let spec: Spec = lenient::from_value(&body).unwrap();
//! assert_eq!(spec.min, 0.5);
//! assert_eq!(spec.retries, vec![3, 4, 5]);
//! assert_eq!(spec.enabled, Some(true));
//! // Free-form JSON is not coerced.
//! assert_eq!(spec.manifest, serde_json::json!({"replicas": "2"}));
//!
//! let refused = lenient::from_value::<Spec>(&serde_json::json!({
//!     "min": "abc", "retries": [], "enabled": null, "manifest": {},
//! }));
//! assert_eq!(refused.unwrap_err().to_string(), lenient::INVALID_NUMBER);
//! ```

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Error as _, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Number, Value};

/// marshmallow's message for a value that is not a number.
pub const INVALID_NUMBER: &str = "Not a valid number.";

/// marshmallow's message for a value that is not an integer (Krake's
/// wording also for one out of the Rust type's range).
pub const INVALID_INTEGER: &str = "Not a valid integer.";

/// marshmallow's message for a value that is not a boolean.
pub const INVALID_BOOLEAN: &str = "Not a valid boolean.";

/// marshmallow's message for NaN and infinity in a number field.
pub const SPECIAL_NUMBER: &str = "Special numeric values (nan or infinity) are not permitted.";

/// marshmallow's message for a number too large for its type.
pub const TOO_LARGE: &str = "Number too large.";

/// Reads `T` from `value` leniently (see the [module](self) documentation).
///
/// # Errors
///
/// serde_json's error for a value that does not fit `T`; for a refused
/// number, integer or boolean its message is marshmallow's (such as
/// [`INVALID_NUMBER`]).
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(Lenient::new(value))
}

/// A [`serde::Deserializer`] over a JSON value that coerces numbers,
/// integers and booleans as marshmallow does (see the [module](self)
/// documentation), and otherwise behaves as serde_json's `&Value`.
#[derive(Debug, Clone, Copy)]
pub struct Lenient<'de>(&'de Value);

impl<'de> Lenient<'de> {
    /// A lenient deserializer over `value`.
    pub fn new(value: &'de Value) -> Self {
        Lenient(value)
    }
}

// --- the conversions ---

/// Python's `str.strip()`: Unicode whitespace and the ASCII separators
/// `\x1c`-`\x1f`, which Python also counts as whitespace.
fn strip_python(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `text` without the underscores Python allows between two digits, or
/// `None` if an underscore is anywhere else.
fn without_underscores(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !text.contains('_') {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            if !before.is_some_and(u8::is_ascii_digit) || !after.is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
    }
    Some(std::borrow::Cow::Owned(text.replace('_', "")))
}

/// Why a text is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotANumber {
    /// It is not a number at all.
    Invalid,
    /// It is NaN or infinite (or too large to be finite).
    Special,
}

impl NotANumber {
    fn message(self) -> &'static str {
        match self {
            NotANumber::Invalid => INVALID_NUMBER,
            NotANumber::Special => SPECIAL_NUMBER,
        }
    }
}

/// A finite number from text as Python's `float()` reads it.
fn parse_float(text: &str) -> Result<f64, NotANumber> {
    let text = without_underscores(strip_python(text)).ok_or(NotANumber::Invalid)?;
    // Rust's grammar is Python's, without underscores (removed above):
    // optional sign, digits with an optional fraction and exponent, or
    // `inf`, `infinity` and `nan` in any case.
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let number: f64 = if valid { text.parse().ok() } else { None }.ok_or(NotANumber::Invalid)?;
    if number.is_finite() {
        Ok(number)
    } else {
        Err(NotANumber::Special)
    }
}

/// An integer from text as Python's `int()` reads it (base 10): optional
/// whitespace, an optional sign, digits (with `_` between them). `None`
/// for anything else, and for values beyond `i128`.
fn parse_integer(text: &str) -> Option<i128> {
    let text = strip_python(text);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = without_underscores(digits)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.bytes().try_fold(0i128, |acc, digit| {
        let digit = i128::from(digit - b'0');
        let acc = acc.checked_mul(10)?;
        if negative {
            acc.checked_sub(digit)
        } else {
            acc.checked_add(digit)
        }
    })
}

/// An integral JSON number as an `i128`, or `None` for fractions.
fn integral_number(number: &Number) -> Option<i128> {
    if let Some(n) = number.as_i64() {
        return Some(i128::from(n));
    }
    if let Some(n) = number.as_u64() {
        return Some(i128::from(n));
    }
    // 2^127: every integral float below it in magnitude fits an i128.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let float = number.as_f64()?;
    let integral = float.is_finite() && float.fract() == 0.0 && float.abs() < LIMIT;
    // The cast is exact: the float is integral and within range.
    integral.then_some(float as i128)
}

/// marshmallow's `Boolean.truthy`.
const TRUTHY: &[&str] = &[
    "t", "T", "true", "True", "TRUE", "on", "On", "ON", "y", "Y", "yes", "Yes", "YES", "1",
];

/// marshmallow's `Boolean.falsy`.
const FALSY: &[&str] = &[
    "f", "F", "false", "False", "FALSE", "off", "Off", "OFF", "n", "N", "no", "No", "NO", "0",
];

/// A boolean from one of marshmallow's truthy or falsy spellings.
fn parse_bool(text: &str) -> Option<bool> {
    if TRUTHY.contains(&text) {
        Some(true)
    } else if FALSY.contains(&text) {
        Some(false)
    } else {
        None
    }
}

/// A boolean from the numbers marshmallow accepts: 1 and 0 (Python's
/// `1.0 in {1}` is true, so also 1.0 and 0.0).
fn number_bool(number: &Number) -> Option<bool> {
    let n = number.as_f64()?;
    if n == 1.0 {
        Some(true)
    } else if n == 0.0 {
        Some(false)
    } else {
        None
    }
}

/// What a number or boolean field makes of a value: `Ok(Some)` for a value
/// it accepts, `Err` for one it refuses with its own message, `Ok(None)`
/// for one whose refusal serde_json words (null, lists, objects, booleans
/// for numbers), to keep its messages.
type Coerced<T> = Result<Option<T>, serde_json::Error>;

fn coerce_integer<T: TryFrom<i128>>(value: &Value) -> Coerced<T> {
    let integer = match value {
        Value::Number(number) => integral_number(number),
        Value::String(text) => parse_integer(text),
        _ => return Ok(None),
    };
    integer
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde_json::Error::custom(INVALID_INTEGER))
}

fn coerce_float(value: &Value) -> Coerced<f64> {
    match value {
        Value::String(text) => parse_float(text)
            .map(Some)
            .map_err(|refused| serde_json::Error::custom(refused.message())),
        _ => Ok(None),
    }
}

fn coerce_bool(value: &Value) -> Coerced<bool> {
    let boolean = match value {
        Value::Bool(boolean) => Some(*boolean),
        Value::String(text) => parse_bool(text),
        Value::Number(number) => number_bool(number),
        _ => return Ok(None),
    };
    boolean
        .map(Some)
        .ok_or_else(|| serde_json::Error::custom(INVALID_BOOLEAN))
}

/// The value as serde's `Unexpected`, as serde_json reports it.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

// --- the deserializer ---

macro_rules! lenient_integer {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
                match coerce_integer::<$ty>(self.0)? {
                    Some(n) => visitor.$visit(n),
                    None => self.0.$method(visitor),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Lenient<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visit_seq(items, visitor),
            Value::Object(map) => visit_map(map, visitor),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match coerce_bool(self.0)? {
            Some(b) => visitor.visit_bool(b),
            None => self.0.deserialize_bool(visitor),
        }
    }

    lenient_integer! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match coerce_float(self.0)? {
            // A finite f64 beyond f32's range would become infinite.
            Some(n) if (n as f32).is_finite() => visitor.visit_f32(n as f32),
            Some(_) => Err(serde_json::Error::custom(TOO_LARGE)),
            None => self.0.deserialize_f32(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match coerce_float(self.0)? {
            Some(n) => visitor.visit_f64(n),
            None => self.0.deserialize_f64(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // serde_json's private newtypes (`RawValue`) keep their meaning;
        // there is nothing to coerce in them.
        if name.starts_with("$serde_json::") {
            self.0.deserialize_newtype_struct(name, visitor)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visit_seq(items, visitor),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visit_map(map, visitor),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visit_seq(items, visitor),
            Value::Object(map) => visit_map(map, visitor),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries = map.iter();
                match (entries.next(), entries.next()) {
                    (Some((variant, value)), None) => visitor.visit_enum(Enum { variant, value }),
                    _ => Err(serde_json::Error::invalid_value(
                        Unexpected::Map,
                        &"map with a single key",
                    )),
                }
            }
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_char(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_string(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visit_seq(items, visitor),
            other => other.deserialize_bytes(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_identifier(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }
}

/// Visits an array with every element read leniently; as serde_json, an
/// array longer than what the visitor takes is an error.
fn visit_seq<'de, V: Visitor<'de>>(
    items: &'de [Value],
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    let mut seq = Seq {
        items: items.iter(),
    };
    let value = visitor.visit_seq(&mut seq)?;
    if seq.items.len() == 0 {
        Ok(value)
    } else {
        Err(serde_json::Error::invalid_length(
            items.len(),
            &"fewer elements in array",
        ))
    }
}

/// Visits an object with every value (and key) read leniently; as
/// serde_json, entries the visitor leaves are an error.
fn visit_map<'de, V: Visitor<'de>>(
    map: &'de Map<String, Value>,
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    let mut access = Entries {
        entries: map.iter(),
        value: None,
    };
    let value = visitor.visit_map(&mut access)?;
    if access.entries.len() == 0 {
        Ok(value)
    } else {
        Err(serde_json::Error::invalid_length(
            map.len(),
            &"fewer elements in map",
        ))
    }
}

struct Seq<'de> {
    items: std::slice::Iter<'de, Value>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.items
            .next()
            .map(|item| seed.deserialize(Lenient(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Entries<'de> {
    entries: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(Key(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(serde_json::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An object key: text, read as a number or boolean where a map's key type
/// asks for one (as serde_json does, and with the same leniency as values).
struct Key<'de>(&'de str);

macro_rules! key_integer {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
                match parse_integer(self.0).and_then(|n| <$ty>::try_from(n).ok()) {
                    Some(n) => visitor.$visit(n),
                    None => Err(serde_json::Error::custom(INVALID_INTEGER)),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match parse_bool(self.0) {
            Some(b) => visitor.visit_bool(b),
            None => Err(serde_json::Error::custom(INVALID_BOOLEAN)),
        }
    }

    key_integer! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match parse_float(self.0) {
            Ok(n) if (n as f32).is_finite() => visitor.visit_f32(n as f32),
            Ok(_) => Err(serde_json::Error::custom(TOO_LARGE)),
            Err(refused) => Err(serde_json::Error::custom(refused.message())),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match parse_float(self.0) {
            Ok(n) => visitor.visit_f64(n),
            Err(refused) => Err(serde_json::Error::custom(refused.message())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(BorrowedStrDeserializer::<serde_json::Error>::new(self.0))
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

/// An enum written as `{"<variant>": <content>}`, its content read leniently.
struct Enum<'de> {
    variant: &'de str,
    value: &'de Value,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = serde_json::Error;
    type Variant = Lenient<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let variant = seed.deserialize(BorrowedStrDeserializer::new(self.variant))?;
        Ok((variant, Lenient(self.value)))
    }
}

impl<'de> VariantAccess<'de> for Lenient<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) if items.is_empty() => visitor.visit_unit(),
            Value::Array(items) => visit_seq(items, visitor),
            other => Err(serde_json::Error::invalid_type(
                unexpected(other),
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visit_map(map, visitor),
            other => Err(serde_json::Error::invalid_type(
                unexpected(other),
                &"struct variant",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use indexmap::IndexMap;
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;
    use crate::kinds::core::{MetricsProviderSpec, StaticSpec};
    use crate::validation::deserialize_value;

    fn read<T: DeserializeOwned>(value: Value) -> Result<T, String> {
        from_value(&value).map_err(|err| err.to_string())
    }

    /// The messages `deserialize_value` reports at `path` for `body`.
    fn refusal<T: DeserializeOwned + std::fmt::Debug>(body: Value, path: &str) -> Vec<String> {
        let errors = deserialize_value::<T>(body).unwrap_err();
        assert_eq!(errors.errors().len(), 1, "{errors}");
        errors
            .messages_at(path)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn numbers_accept_python_float_spellings() {
        for (sent, expected) in [
            (json!("0.5"), 0.5),
            (json!(" 1.5\n"), 1.5),
            (json!("1e3"), 1000.0),
            (json!("-2"), -2.0),
            (json!("+.5"), 0.5),
            (json!("5."), 5.0),
            (json!("1_000.5"), 1000.5),
            (json!("1E-2"), 0.01),
            (json!(3), 3.0),
            (json!(-3), -3.0),
            (json!(2.25), 2.25),
        ] {
            assert_eq!(read::<f64>(sent.clone()), Ok(expected), "{sent}");
            assert_eq!(read::<f32>(sent.clone()), Ok(expected as f32), "{sent}");
        }
    }

    #[test]
    fn numbers_refuse_text_booleans_and_special_values() {
        for sent in [
            json!("abc"),
            json!(""),
            json!(" "),
            json!("1__0"),
            json!("_1"),
            json!("1_"),
            json!("1,5"),
            json!("0x10"),
            json!("1 2"),
        ] {
            assert_eq!(
                read::<f64>(sent.clone()),
                Err(INVALID_NUMBER.into()),
                "{sent}"
            );
        }
        for sent in [json!(true), json!(false)] {
            assert_eq!(
                refusal::<f64>(sent.clone(), ""),
                vec![INVALID_NUMBER],
                "{sent}"
            );
        }
        for sent in ["nan", "NaN", "inf", "-Infinity", "+inf", "1e400"] {
            assert_eq!(
                read::<f64>(json!(sent)),
                Err(SPECIAL_NUMBER.into()),
                "{sent}"
            );
        }
        assert_eq!(read::<f32>(json!("1e39")), Err(TOO_LARGE.into()));
        assert_eq!(
            refusal::<f64>(Value::Null, ""),
            vec!["Field may not be null."]
        );
    }

    #[test]
    fn integers_accept_integral_values() {
        for (sent, expected) in [
            (json!(3), 3),
            (json!(3.0), 3),
            (json!(-3.0), -3),
            (json!(1e3), 1000),
            (json!("3"), 3),
            (json!(" -3 "), -3),
            (json!("+3"), 3),
            (json!("007"), 7),
            (json!("1_000"), 1000),
            (json!("-0"), 0),
            (json!("9223372036854775807"), i64::MAX),
        ] {
            assert_eq!(read::<i64>(sent.clone()), Ok(expected), "{sent}");
        }
        assert_eq!(read::<u32>(json!("4294967295")), Ok(u32::MAX));
        assert_eq!(read::<u64>(json!(u64::MAX)), Ok(u64::MAX));
        assert_eq!(read::<i8>(json!("-128")), Ok(-128));
        assert_eq!(read::<u128>(json!("1e3")), Err(INVALID_INTEGER.into()));
        assert_eq!(read::<i128>(json!(" 12 ")), Ok(12));
    }

    #[test]
    fn integers_refuse_fractions_text_booleans_and_overflow() {
        for sent in [
            json!(1.5),
            json!("1.5"),
            json!("3.0"),
            json!("1e3"),
            json!("abc"),
            json!(""),
            json!("+"),
            json!("- 3"),
            json!("1__0"),
            json!("9223372036854775808"),
            json!(1e300),
        ] {
            assert_eq!(
                read::<i64>(sent.clone()),
                Err(INVALID_INTEGER.into()),
                "{sent}"
            );
        }
        for sent in [
            json!(-1),
            json!("-1"),
            json!("4294967296"),
            json!(4294967296u64),
        ] {
            assert_eq!(
                read::<u32>(sent.clone()),
                Err(INVALID_INTEGER.into()),
                "{sent}"
            );
        }
        assert_eq!(read::<i8>(json!("128")), Err(INVALID_INTEGER.into()));
        for sent in [json!(true), json!(false)] {
            assert_eq!(refusal::<i64>(sent, ""), vec![INVALID_INTEGER]);
        }
        assert_eq!(refusal::<i64>(json!([1]), ""), vec![INVALID_INTEGER]);
    }

    #[test]
    fn booleans_accept_marshmallow_spellings() {
        for sent in TRUTHY {
            assert_eq!(read::<bool>(json!(sent)), Ok(true), "{sent}");
        }
        for sent in FALSY {
            assert_eq!(read::<bool>(json!(sent)), Ok(false), "{sent}");
        }
        for (sent, expected) in [
            (json!(true), true),
            (json!(false), false),
            (json!(1), true),
            (json!(0), false),
            (json!(1.0), true),
            (json!(0.0), false),
            (json!(-0.0), false),
        ] {
            assert_eq!(read::<bool>(sent.clone()), Ok(expected), "{sent}");
        }
    }

    #[test]
    fn booleans_refuse_everything_else() {
        for sent in [
            json!("maybe"),
            json!("tRue"),
            json!(" true"),
            json!("yes "),
            json!(""),
            json!("2"),
            json!(2),
            json!(-1),
            json!(0.5),
        ] {
            assert_eq!(
                read::<bool>(sent.clone()),
                Err(INVALID_BOOLEAN.into()),
                "{sent}"
            );
        }
        assert_eq!(refusal::<bool>(json!({}), ""), vec![INVALID_BOOLEAN]);
        assert_eq!(
            refusal::<bool>(Value::Null, ""),
            vec!["Field may not be null."]
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Item {
        count: u32,
        #[serde(default)]
        ratio: Option<f64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Choice {
        Plain,
        Weighted(f64),
        Pair(i64, bool),
        Named { on: bool },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Nested {
        items: Vec<Item>,
        weights: IndexMap<String, f64>,
        flags: HashMap<u32, bool>,
        provider: MetricsProviderSpec,
        choices: Vec<Choice>,
        free: Value,
        manifest: Vec<Map<String, Value>>,
    }

    fn nested(items: Value, provider: Value) -> Value {
        json!({
            "items": items,
            "weights": {"a": "0.25", "b": 1},
            "flags": {" 7 ": "on", "8": 0},
            "provider": provider,
            "choices": ["Plain", {"Weighted": "2"}, {"Pair": ["-1", "no"]}, {"Named": {"on": "Y"}}],
            "free": {"n": "1", "b": "true", "list": ["2.5"]},
            "manifest": [{"spec": {"replicas": "2", "paused": "false"}}],
        })
    }

    #[test]
    fn coercion_applies_at_every_depth_and_free_json_stays_as_sent() {
        let body = nested(
            json!([{"count": "1"}, {"count": 2.0, "ratio": " .5 "}, {"count": 3, "ratio": null}]),
            json!({"type": "static", "static": {"metrics": {"heat": "0.75", "load": 2}}}),
        );
        let parsed: Nested = deserialize_value(body).unwrap();
        assert_eq!(
            parsed.items,
            vec![
                Item {
                    count: 1,
                    ratio: None
                },
                Item {
                    count: 2,
                    ratio: Some(0.5)
                },
                Item {
                    count: 3,
                    ratio: None
                },
            ]
        );
        assert_eq!(parsed.weights["a"], 0.25);
        assert_eq!(parsed.flags, HashMap::from([(7, true), (8, false)]));
        let MetricsProviderSpec::Static(StaticSpec { metrics }) = &parsed.provider else {
            panic!("a static provider: {:?}", parsed.provider);
        };
        assert_eq!(metrics["heat"], 0.75);
        assert_eq!(
            parsed.choices,
            vec![
                Choice::Plain,
                Choice::Weighted(2.0),
                Choice::Pair(-1, false),
                Choice::Named { on: true },
            ]
        );
        // Free-form JSON is kept exactly as sent.
        assert_eq!(parsed.free, json!({"n": "1", "b": "true", "list": ["2.5"]}));
        assert_eq!(
            Value::Object(parsed.manifest[0].clone()),
            json!({"spec": {"replicas": "2", "paused": "false"}})
        );
        // Written back, every coerced field has its canonical JSON type.
        let written = serde_json::to_value(&parsed).unwrap();
        assert_eq!(written["items"][0], json!({"count": 1, "ratio": null}));
        assert_eq!(written["items"][1]["ratio"], json!(0.5));
        assert_eq!(written["weights"], json!({"a": 0.25, "b": 1.0}));
        assert_eq!(
            written["provider"],
            json!({"type": "static", "static": {"metrics": {"heat": 0.75, "load": 2.0}}})
        );
        assert_eq!(written["choices"][2], json!({"Pair": [-1, false]}));
    }

    #[test]
    fn refusals_keep_their_path() {
        let provider =
            json!({"type": "static", "static": {"metrics": {"heat": "0.75", "load": 2}}});
        assert_eq!(
            refusal::<Nested>(
                nested(json!([{"count": "1"}, {"count": "x"}]), provider.clone()),
                "items.1.count"
            ),
            vec![INVALID_INTEGER]
        );
        assert_eq!(
            refusal::<Nested>(
                nested(json!([{"count": 1, "ratio": "half"}]), provider.clone()),
                "items.0.ratio"
            ),
            vec![INVALID_NUMBER]
        );
        assert_eq!(
            refusal::<Nested>(
                nested(json!([{"count": 1, "ratio": "nan"}]), provider.clone()),
                "items.0.ratio"
            ),
            vec![SPECIAL_NUMBER]
        );
        assert_eq!(
            refusal::<Nested>(
                nested(
                    json!([]),
                    json!({"type": "static", "static": {"metrics": {"heat": "hot"}}})
                ),
                "provider.static.metrics.heat"
            ),
            vec![INVALID_NUMBER]
        );
        let mut body = nested(json!([]), provider.clone());
        body["weights"]["b"] = json!(true);
        assert_eq!(refusal::<Nested>(body, "weights.b"), vec![INVALID_NUMBER]);
        let mut body = nested(json!([]), provider.clone());
        body["flags"]["8"] = json!("sure");
        // A key that looks like an index: compare the rendered path.
        let errors = deserialize_value::<Nested>(body).unwrap_err();
        assert_eq!(errors.to_string(), "flags.8: Not a valid boolean.");
        let mut body = nested(json!([]), provider);
        body["choices"][3]["Named"]["on"] = json!("2");
        assert_eq!(
            refusal::<Nested>(body, "choices.3.on"),
            vec![INVALID_BOOLEAN]
        );
    }

    #[test]
    fn the_tagged_containers_read_their_content_leniently() {
        // Even from bytes: the container reads its content from a `Value`.
        let provider: MetricsProviderSpec =
            serde_json::from_str(r#"{"type": "static", "static": {"metrics": {"m": "1.5"}}}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_value(&provider).unwrap(),
            json!({"type": "static", "static": {"metrics": {"m": 1.5}}})
        );
    }

    #[test]
    fn the_general_path_of_a_kind_coerces_and_stores_canonical_types() {
        use crate::registry::{self, ParseMode};
        let kind = registry::by_kind("core", "GlobalMetric").unwrap();
        let body = json!({"metadata": {"name": "m"}, "spec": {
            "allowed_values": ["1", 2.0], "min": "0", "max": " 1.5 ",
            "provider": {"name": "p", "metric": "m"}}});
        let parsed = kind.parse(body.clone(), ParseMode::Create).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed["spec"]).unwrap(),
            r#"{"allowed_values":[1,2],"min":0.0,"max":1.5,"provider":{"name":"p","metric":"m"}}"#
        );
        // The fast path of a create leaves such a body to the general path.
        let new = registry::NewObject {
            namespace: None,
            uid: "u",
            now: crate::Timestamp::now(),
        };
        assert!((kind.create_object)(body.to_string().as_bytes(), &new).is_none());
        let mut refused = body;
        refused["spec"]["min"] = json!("abc");
        let errors = kind.parse(refused, ParseMode::Create).unwrap_err();
        assert_eq!(
            errors.to_python_repr(),
            "{'spec': {'min': ['Not a valid number.']}}"
        );
    }

    #[test]
    fn python_text_helpers() {
        assert_eq!(strip_python("\u{1f} 1\u{a0}\n"), "1");
        assert_eq!(without_underscores("1_2_3").as_deref(), Some("123"));
        assert_eq!(without_underscores("1_2_"), None);
        assert_eq!(without_underscores("1._2"), None);
        assert_eq!(
            parse_integer("-170141183460469231731687303715884105728"),
            Some(i128::MIN)
        );
        assert_eq!(
            parse_integer("170141183460469231731687303715884105728"),
            None
        );
    }
}
