//! IM's auth data: the `Authorization` header parsed the way IM's
//! `Authentication.read_auth_data` reads an authorization file.

use std::collections::BTreeMap;

use base64::Engine as _;

/// The two characters (`\` and `n`) that separate credential lines in
/// the `Authorization` header.
pub const LINE_SEPARATOR: &str = "\\n";

/// The three characters (`\`, `\`, `n`) that stand for a newline inside a
/// value (a certificate, say).
const NEWLINE_IN_VALUE: &str = "\\\\n";

/// The auth data of one request: every credential line of its
/// `Authorization` header, each as its `key = value` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthData {
    /// The header as received.
    pub raw: String,
    /// The credential lines, in order.
    pub lines: Vec<BTreeMap<String, String>>,
}

impl AuthData {
    /// Parses a header value as IM does: a `Basic` header is an IM
    /// username and password, a `Bearer` one an IM token; anything else is
    /// credential lines separated by the literal two characters `\n`, each
    /// `key = value` pairs separated by `;` (values may be quoted with `'`
    /// or `"`; a pair without ` = ` ends its line). `None` when no line
    /// holds anything.
    pub fn parse(header: &str) -> Option<AuthData> {
        let raw = header.to_string();
        if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, pass) = text.split_once(':')?;
            let line = BTreeMap::from([
                ("type".to_string(), "InfrastructureManager".to_string()),
                ("username".to_string(), user.to_string()),
                ("password".to_string(), pass.to_string()),
            ]);
            return Some(AuthData {
                raw,
                lines: vec![line],
            });
        }
        if let Some(token) = header.strip_prefix("Bearer ") {
            let line = BTreeMap::from([
                ("type".to_string(), "InfrastructureManager".to_string()),
                ("token".to_string(), token.trim().to_string()),
            ]);
            return Some(AuthData {
                raw,
                lines: vec![line],
            });
        }
        let text = header.replace(NEWLINE_IN_VALUE, "\n");
        let mut lines = Vec::new();
        for line in text.split(LINE_SEPARATOR) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut pairs = BTreeMap::new();
            for token in split_line(line) {
                let Some((key, value)) = token.split_once(" = ") else {
                    break;
                };
                if value.contains(" = ") {
                    break;
                }
                pairs.insert(key.trim().to_string(), value.trim().replace("\\n", "\n"));
            }
            lines.push(pairs);
        }
        if lines.iter().all(BTreeMap::is_empty) {
            return None;
        }
        Some(AuthData { raw, lines })
    }

    /// The lines of this `type`.
    pub fn of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
        self.lines
            .iter()
            .filter(move |l| l.get("type").map(String::as_str) == Some(kind))
    }

    /// The first `type = InfrastructureManager` line.
    pub fn im(&self) -> Option<&BTreeMap<String, String>> {
        self.of_type("InfrastructureManager").next()
    }

    /// The first `type = OpenStack` line.
    pub fn openstack(&self) -> Option<&BTreeMap<String, String>> {
        self.of_type("OpenStack").next()
    }
}

/// Splits a line at `;` outside single or double quotes (IM's
/// `Authentication.split_line`); quotes are dropped.
fn split_line(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut single, mut double) = (false, false);
    for c in line.chars() {
        match c {
            '"' if !single => double = !double,
            '\'' if !double => single = !single,
            ';' if !single && !double => tokens.push(std::mem::take(&mut token)),
            c => token.push(c),
        }
    }
    if !token.trim().is_empty() {
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_literal_backslash_n() {
        let header = "id = im; type = InfrastructureManager; username = u; password = 'p;w'\\nid = os;type = OpenStack;host = https://k:5000;domain = d1";
        let auth = AuthData::parse(header).unwrap();
        assert_eq!(auth.lines.len(), 2);
        assert_eq!(auth.im().unwrap()["password"], "p;w");
        assert_eq!(auth.openstack().unwrap()["domain"], "d1");
        assert_eq!(auth.openstack().unwrap()["host"], "https://k:5000");
    }

    #[test]
    fn a_real_newline_is_not_a_separator() {
        let header = "type = InfrastructureManager; username = u\ntype = OpenStack";
        let auth = AuthData::parse(header).unwrap();
        assert_eq!(auth.lines.len(), 1);
        assert!(auth.openstack().is_none());
    }

    #[test]
    fn bearer_and_basic() {
        let auth = AuthData::parse("Bearer tok").unwrap();
        assert_eq!(auth.im().unwrap()["token"], "tok");
        let b = base64::engine::general_purpose::STANDARD.encode("u:p");
        let auth = AuthData::parse(&format!("Basic {b}")).unwrap();
        assert_eq!(auth.im().unwrap()["username"], "u");
        assert_eq!(auth.im().unwrap()["password"], "p");
    }

    #[test]
    fn garbage_has_no_lines() {
        assert!(AuthData::parse("garbage").is_none());
        assert!(AuthData::parse("").is_none());
    }
}
