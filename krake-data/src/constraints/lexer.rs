//! The tokenizer shared by both constraint languages, and a cursor over its
//! tokens for the two recursive-descent parsers.
//!
//! Words are runs of characters other than space, tab, `,`, `(`, `)`, `=`,
//! `!`, `<` and `>` (Krake's `[^ ,()=!]+`, with `<` and `>` reserved for the
//! metric operators). Spaces and tabs separate tokens; any other whitespace or
//! control character is an error. Positions count characters, not bytes, so
//! that multibyte input never splits a character.

use super::{ConstraintError, ConstraintLanguage};
use crate::validation::python_str_repr;

/// The characters that form punctuation and operator tokens.
pub(crate) fn is_punctuation(c: char) -> bool {
    matches!(c, ',' | '(' | ')' | '=' | '!' | '<' | '>')
}

/// True for the characters that separate tokens and are otherwise ignored.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// True for characters that may appear in a word.
fn is_word_char(c: char) -> bool {
    !is_blank(c) && !is_punctuation(c) && !c.is_whitespace() && !c.is_control()
}

/// The kinds of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A key, a value or a keyword.
    Word,
    /// `(`
    OpenParen,
    /// `)`
    CloseParen,
    /// `,`
    Comma,
    /// `=`, `==`, `!=`, `>`, `>=`, `=>`, `<`, `<=` or `=<`.
    Operator,
}

/// One token: its kind, its text and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// What the token is.
    pub(crate) kind: TokenKind,
    /// The text of the token.
    pub(crate) text: &'a str,
    /// The position of its first character, in characters from 0.
    pub(crate) position: usize,
}

impl Token<'_> {
    /// True if this is the word `keyword`.
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text == keyword
    }
}

/// Splits `text` into tokens.
pub(crate) fn tokenize(
    text: &str,
    language: ConstraintLanguage,
) -> Result<Vec<Token<'_>>, ConstraintError> {
    let mut tokens = Vec::new();
    // (byte offset, character position, character)
    let mut chars = text
        .char_indices()
        .enumerate()
        .map(|(position, (offset, c))| (offset, position, c))
        .peekable();
    while let Some((start, position, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        let kind = match c {
            c if is_blank(c) => continue,
            '(' => TokenKind::OpenParen,
            ')' => TokenKind::CloseParen,
            ',' => TokenKind::Comma,
            '=' | '!' | '<' | '>' => {
                let second = chars.peek().map(|&(_, _, next)| next);
                let two_chars = matches!(
                    (c, second),
                    ('=', Some('=' | '<' | '>')) | ('!' | '<' | '>', Some('='))
                );
                if two_chars {
                    end += 1;
                    chars.next();
                } else if c == '!' {
                    return Err(ConstraintError::UnexpectedCharacter {
                        language,
                        character: c,
                        position,
                    });
                }
                TokenKind::Operator
            }
            c if is_word_char(c) => {
                while let Some(&(offset, _, next)) = chars.peek() {
                    if !is_word_char(next) {
                        break;
                    }
                    end = offset + next.len_utf8();
                    chars.next();
                }
                TokenKind::Word
            }
            c => {
                return Err(ConstraintError::UnexpectedCharacter {
                    language,
                    character: c,
                    position,
                });
            }
        };
        tokens.push(Token {
            kind,
            text: &text[start..end],
            position,
        });
    }
    Ok(tokens)
}

/// A cursor over the tokens of one expression, producing the errors of the
/// language being parsed.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    /// The length of the expression, in characters.
    end: usize,
    language: ConstraintLanguage,
}

impl<'a> Cursor<'a> {
    /// Tokenizes `text`; an expression without tokens is an error.
    pub(crate) fn new(
        text: &'a str,
        language: ConstraintLanguage,
    ) -> Result<Self, ConstraintError> {
        let tokens = tokenize(text, language)?;
        if tokens.is_empty() {
            return Err(ConstraintError::Empty { language });
        }
        Ok(Cursor {
            tokens,
            next: 0,
            end: text.chars().count(),
            language,
        })
    }

    /// The token `ahead` places after the next one, without consuming anything.
    pub(crate) fn peek_nth(&self, ahead: usize) -> Option<Token<'a>> {
        self.tokens.get(self.next + ahead).copied()
    }

    /// The next token, without consuming it.
    pub(crate) fn peek(&self) -> Option<Token<'a>> {
        self.peek_nth(0)
    }

    /// True if the next `keywords.len()` tokens are these words.
    pub(crate) fn at_keywords(&self, keywords: &[&str]) -> bool {
        keywords
            .iter()
            .enumerate()
            .all(|(ahead, keyword)| self.peek_nth(ahead).is_some_and(|t| t.is_keyword(keyword)))
    }

    /// Consumes `count` tokens.
    pub(crate) fn skip(&mut self, count: usize) {
        self.next = (self.next + count).min(self.tokens.len());
    }

    /// Consumes the next token if it is of kind `kind`; otherwise reports
    /// that `expected` was expected.
    pub(crate) fn expect(
        &mut self,
        kind: TokenKind,
        expected: &str,
    ) -> Result<Token<'a>, ConstraintError> {
        match self.peek() {
            Some(token) if token.kind == kind => {
                self.next += 1;
                Ok(token)
            }
            found => Err(self.unexpected(found, expected)),
        }
    }

    /// Consumes a word (a key or a value).
    pub(crate) fn expect_word(&mut self, expected: &str) -> Result<&'a str, ConstraintError> {
        self.expect(TokenKind::Word, expected)
            .map(|token| token.text)
    }

    /// Checks that every token was consumed.
    pub(crate) fn expect_end(&self) -> Result<(), ConstraintError> {
        match self.peek() {
            None => Ok(()),
            found => Err(self.unexpected(found, "the end of the expression")),
        }
    }

    /// The error for finding `found` (or the end, for `None`) where
    /// `expected` was expected.
    pub(crate) fn unexpected(&self, found: Option<Token<'a>>, expected: &str) -> ConstraintError {
        match found {
            Some(token) => ConstraintError::UnexpectedToken {
                language: self.language,
                found: token.text.to_owned(),
                expected: expected.to_owned(),
                position: token.position,
            },
            None => ConstraintError::UnexpectedEnd {
                language: self.language,
                expected: expected.to_owned(),
                position: self.end,
            },
        }
    }
}

/// `a value after 'is not'`: what a parser expects after some operator tokens.
pub(crate) fn value_after(operator: &str) -> String {
    format!("a value after {}", python_str_repr(operator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokenKind, &str, usize)> {
        tokenize(text, ConstraintLanguage::Label)
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.text, t.position))
            .collect()
    }

    #[test]
    fn tokens_and_positions() {
        use TokenKind::*;
        assert_eq!(
            kinds(" a\t==b!=(c,d)>=<=<>= => =< ="),
            vec![
                (Word, "a", 1),
                (Operator, "==", 3),
                (Word, "b", 5),
                (Operator, "!=", 6),
                (OpenParen, "(", 8),
                (Word, "c", 9),
                (Comma, ",", 10),
                (Word, "d", 11),
                (CloseParen, ")", 12),
                (Operator, ">=", 13),
                (Operator, "<=", 15),
                (Operator, "<", 17),
                (Operator, ">=", 18),
                (Operator, "=>", 21),
                (Operator, "=<", 24),
                (Operator, "=", 27),
            ]
        );
        assert_eq!(
            kinds("äö = ü"),
            vec![(Word, "äö", 0), (Operator, "=", 3), (Word, "ü", 5)]
        );
        assert!(kinds(" \t ").is_empty());
    }

    #[test]
    fn bad_characters() {
        for (text, character, position) in [
            ("a\nb", '\n', 1),
            ("ä!b", '!', 1),
            ("a !", '!', 2),
            ("a\r", '\r', 1),
            ("é\u{a0}", '\u{a0}', 1),
        ] {
            assert_eq!(
                tokenize(text, ConstraintLanguage::Metric),
                Err(ConstraintError::UnexpectedCharacter {
                    language: ConstraintLanguage::Metric,
                    character,
                    position
                }),
                "{text:?}"
            );
        }
    }
}
