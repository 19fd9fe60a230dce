//! Calico-style label selectors: parsing, evaluation against label maps, and canonical printing.
//!
//! Grammar (whitespace between tokens is insignificant; the empty selector means `all()`):
//!
//! ```text
//! selector   := or?
//! or         := and ( "||" and )*                 -- left-associative, lowest precedence
//! and        := unary ( "&&" unary )*             -- left-associative
//! unary      := "!" unary | primary               -- `!` binds tightest
//! primary    := "(" or ")" | "all" "(" ")" | "has" "(" key ")"
//!             | key "==" string | key "!=" string
//!             | key "in" set | key "not" "in" set
//! set        := "{" ( string ( "," string )* )? "}"
//! string     := '…' | "…"                        -- no escapes: runs to the matching quote
//! key        := [A-Za-z0-9] [A-Za-z0-9._/-]*     -- e.g. `rack`, `kubernetes.io/hostname`
//! ```
//!
//! Semantics follow Calico: `key != 'v'` and `key not in {…}` are *true* when the label is
//! absent (they are the negations of `key == 'v'` and `key in {…}`), while `==` and `in` need the
//! label to be present. Selectors longer than [`MAX_SELECTOR_LEN`] bytes or nested more than 64
//! levels deep (counting both parentheses and `!`) are rejected, so parsing untrusted input can
//! neither panic nor exhaust the stack. Error positions are byte offsets into the input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Longest selector, in bytes, that [`Selector::parse`] accepts.
pub const MAX_SELECTOR_LEN: usize = 1024;

/// Deepest nesting of parentheses and `!` that [`Selector::parse`] accepts.
const MAX_DEPTH: usize = 64;

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `all()`: matches everything.
    All,
    /// `has(key)`: the label is present, with any value.
    Has(String),
    /// `key == 'value'`: the label is present with exactly this value.
    Eq(String, String),
    /// `key != 'value'`: the label is absent or has another value.
    NotEq(String, String),
    /// `key in {'a', 'b'}`: the label is present with one of these values.
    In(String, BTreeSet<String>),
    /// `key not in {'a', 'b'}`: the label is absent or has none of these values.
    NotIn(String, BTreeSet<String>),
    /// `!expr`.
    Not(Box<Selector>),
    /// `lhs && rhs`.
    And(Box<Selector>, Box<Selector>),
    /// `lhs || rhs`.
    Or(Box<Selector>, Box<Selector>),
}

/// Why a selector failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SelectorError {
    /// Byte offset into the input where the problem was found.
    pub position: usize,
    /// What is wrong, e.g. `expected a quoted string after '=='`.
    pub message: String,
}

impl SelectorError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

impl Selector {
    /// Parses a selector expression; the empty (or all-whitespace) string parses as [`Selector::All`].
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        if input.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::new(
                MAX_SELECTOR_LEN,
                format!(
                    "selector is {} bytes long, the maximum is {MAX_SELECTOR_LEN}",
                    input.len()
                ),
            ));
        }
        Parser::new(input).parse_selector()
    }

    /// Evaluates the selector against a set of labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(key) => labels.contains_key(key),
            Selector::Eq(key, value) => labels.get(key) == Some(value),
            Selector::NotEq(key, value) => labels.get(key) != Some(value),
            Selector::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::Not(inner) => !inner.matches(labels),
            Selector::And(lhs, rhs) => lhs.matches(labels) && rhs.matches(labels),
            Selector::Or(lhs, rhs) => lhs.matches(labels) || rhs.matches(labels),
        }
    }

    /// True for `&&` and `||` nodes, which need parentheses when used as an operand of `!`.
    fn is_binary(&self) -> bool {
        matches!(self, Selector::And(..) | Selector::Or(..))
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// Canonical form: `all()`, `has(k)`, `k == 'v'`, `k in {'a', 'b'}`, `!has(k)`, `!(a || b)`,
/// `(a && b) || c`. Operands of `&&`/`||` that are themselves `&&`/`||` nodes are parenthesized,
/// except a left operand with the same operator (both are left-associative). Values containing a
/// single quote are printed in double quotes. Parsing the output yields an equal selector,
/// provided the keys are valid and no value contains both kinds of quote.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Has(key) => write!(f, "has({key})"),
            Selector::Eq(key, value) => write!(f, "{key} == {}", Quoted(value)),
            Selector::NotEq(key, value) => write!(f, "{key} != {}", Quoted(value)),
            Selector::In(key, values) => write!(f, "{key} in {}", QuotedSet(values)),
            Selector::NotIn(key, values) => write!(f, "{key} not in {}", QuotedSet(values)),
            Selector::Not(inner) => {
                f.write_str("!")?;
                write_operand(f, inner, inner.is_binary())
            }
            Selector::And(lhs, rhs) => {
                write_operand(f, lhs, matches!(**lhs, Selector::Or(..)))?;
                f.write_str(" && ")?;
                write_operand(f, rhs, rhs.is_binary())
            }
            Selector::Or(lhs, rhs) => {
                write_operand(f, lhs, matches!(**lhs, Selector::And(..)))?;
                f.write_str(" || ")?;
                write_operand(f, rhs, rhs.is_binary())
            }
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Selector, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

/// A string literal, in single quotes unless the value itself contains one.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.0.contains('\'') { '"' } else { '\'' };
        write!(f, "{quote}{}{quote}", self.0)
    }
}

/// A set literal: `{'a', 'b'}`, in the set's (sorted) order.
struct QuotedSet<'a>(&'a BTreeSet<String>);

impl fmt::Display for QuotedSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(value))?;
        }
        f.write_str("}")
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    EqEq,
    NotEq,
    /// A label key, or one of the words `all`, `has`, `in`, `not` (their role depends on context).
    Ident(String),
    /// The contents of a quoted string literal.
    Str(String),
    End,
    /// Input that could not be tokenized; always the last token. Holds the error message.
    Invalid(String),
}

impl Tok {
    fn describe(&self) -> String {
        let punct = match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Ident(word) => return format!("'{word}'"),
            Tok::Str(value) => return format!("string {}", Quoted(value)),
            Tok::End => return "end of input".to_owned(),
            Tok::Invalid(_) => return "invalid input".to_owned(),
        };
        format!("'{punct}'")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    tok: Tok,
    /// Byte offset of the token's first character.
    pos: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')
}

/// Splits the input into tokens, ending with [`Tok::End`] or, at the first character that
/// cannot start a token, [`Tok::Invalid`]. The error is only reported if the parser gets that
/// far, so earlier syntax errors win.
fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &input[pos..];
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        let Some(c) = trimmed.chars().next() else {
            tokens.push(Token { tok: Tok::End, pos });
            return tokens;
        };
        let two = |s: &str| trimmed.starts_with(s);
        let lexed = match c {
            '(' => Ok((Tok::LParen, 1)),
            ')' => Ok((Tok::RParen, 1)),
            '{' => Ok((Tok::LBrace, 1)),
            '}' => Ok((Tok::RBrace, 1)),
            ',' => Ok((Tok::Comma, 1)),
            '&' if two("&&") => Ok((Tok::AndAnd, 2)),
            '|' if two("||") => Ok((Tok::OrOr, 2)),
            '=' if two("==") => Ok((Tok::EqEq, 2)),
            '!' if two("!=") => Ok((Tok::NotEq, 2)),
            '!' => Ok((Tok::Bang, 1)),
            '&' => Err("expected '&&'".to_owned()),
            '|' => Err("expected '||'".to_owned()),
            '=' => Err("expected '=='".to_owned()),
            '\'' | '"' => match trimmed[1..].find(c) {
                // The quote is ASCII, so both slice ends are char boundaries.
                Some(len) => Ok((Tok::Str(trimmed[1..1 + len].to_owned()), len + 2)),
                None => Err(format!("unterminated string literal starting with {c}")),
            },
            c if c.is_ascii_alphanumeric() => {
                let len = trimmed
                    .find(|c: char| !is_key_char(c))
                    .unwrap_or(trimmed.len());
                Ok((Tok::Ident(trimmed[..len].to_owned()), len))
            }
            c => Err(format!("unexpected character {c:?}")),
        };
        match lexed {
            Ok((tok, len)) => {
                tokens.push(Token { tok, pos });
                pos += len;
            }
            Err(message) => {
                tokens.push(Token {
                    tok: Tok::Invalid(message),
                    pos,
                });
                return tokens;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Token>,
    /// Index of the current token; never moves past the final `End`/`Invalid` token.
    idx: usize,
    /// Current nesting of parentheses and `!`.
    depth: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Self {
            tokens: tokenize(input),
            idx: 0,
            depth: 0,
        }
    }

    fn current(&self) -> &Token {
        &self.tokens[self.idx]
    }

    fn advance(&mut self) {
        if !matches!(self.current().tok, Tok::End | Tok::Invalid(_)) {
            self.idx += 1;
        }
    }

    /// Consumes the current token if it is `tok`.
    fn eat(&mut self, tok: &Tok) -> bool {
        let found = self.current().tok == *tok;
        if found {
            self.advance();
        }
        found
    }

    /// Consumes the current token if it is the word `word`.
    fn eat_word(&mut self, word: &str) -> bool {
        let found = matches!(&self.current().tok, Tok::Ident(w) if w == word);
        if found {
            self.advance();
        }
        found
    }

    /// An error at the current token; a tokenizer error there takes precedence over `message`.
    fn error_here(&self, message: impl FnOnce(String) -> String) -> SelectorError {
        let token = self.current();
        match &token.tok {
            Tok::Invalid(lex_error) => SelectorError::new(token.pos, lex_error.clone()),
            tok => SelectorError::new(token.pos, message(tok.describe())),
        }
    }

    fn expected(&self, what: &str) -> SelectorError {
        self.error_here(|found| format!("expected {what}, found {found}"))
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_string(&mut self, what: &str) -> Result<String, SelectorError> {
        match &mut self.tokens[self.idx].tok {
            Tok::Str(value) => {
                let value = std::mem::take(value);
                self.advance();
                Ok(value)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn take_ident(&mut self) -> Option<String> {
        match &mut self.tokens[self.idx].tok {
            Tok::Ident(word) => {
                let word = std::mem::take(word);
                self.advance();
                Some(word)
            }
            _ => None,
        }
    }

    /// Enters one level of nesting at the current token (a `(` or `!`).
    fn descend(&mut self) -> Result<(), SelectorError> {
        if self.depth >= MAX_DEPTH {
            return Err(SelectorError::new(
                self.current().pos,
                format!("selector is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn parse_selector(mut self) -> Result<Selector, SelectorError> {
        if self.current().tok == Tok::End {
            return Ok(Selector::All);
        }
        let selector = self.parse_or()?;
        if self.current().tok == Tok::End {
            Ok(selector)
        } else {
            Err(self
                .error_here(|found| format!("unexpected {found} after the end of the expression")))
        }
    }

    fn parse_or(&mut self) -> Result<Selector, SelectorError> {
        let mut lhs = self.parse_and()?;
        while self.eat(&Tok::OrOr) {
            let rhs = self.parse_and()?;
            lhs = Selector::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn parse_and(&mut self) -> Result<Selector, SelectorError> {
        let mut lhs = self.parse_unary()?;
        while self.eat(&Tok::AndAnd) {
            let rhs = self.parse_unary()?;
            lhs = Selector::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    /// `!`* primary. The bangs are counted in a loop rather than by recursion.
    fn parse_unary(&mut self) -> Result<Selector, SelectorError> {
        let mut bangs = 0;
        while self.current().tok == Tok::Bang {
            self.descend()?;
            self.advance();
            bangs += 1;
        }
        let mut selector = self.parse_primary()?;
        for _ in 0..bangs {
            selector = Selector::Not(Box::new(selector));
        }
        self.depth -= bangs;
        Ok(selector)
    }

    fn parse_primary(&mut self) -> Result<Selector, SelectorError> {
        let start = self.current().pos;
        if self.current().tok == Tok::LParen {
            self.descend()?;
            self.advance();
            let inner = self.parse_or()?;
            self.expect(
                &Tok::RParen,
                &format!("')' to close the '(' at position {start}"),
            )?;
            self.depth -= 1;
            return Ok(inner);
        }
        let Some(word) = self.take_ident() else {
            return Err(self.expected("a selector expression"));
        };
        if self.eat(&Tok::LParen) {
            return self.parse_call(&word, start);
        }
        self.parse_comparison(word)
    }

    /// The rest of `word(`…`)`, with the `(` already consumed.
    fn parse_call(&mut self, word: &str, start: usize) -> Result<Selector, SelectorError> {
        match word {
            "all" => {
                self.expect(&Tok::RParen, "')' after 'all('")?;
                Ok(Selector::All)
            }
            "has" => {
                let Some(key) = self.take_ident() else {
                    return Err(self.expected("a label key inside has()"));
                };
                self.expect(&Tok::RParen, "')' to close 'has('")?;
                Ok(Selector::Has(key))
            }
            other => Err(SelectorError::new(
                start,
                format!("unknown function '{other}()': only all() and has(key) are allowed"),
            )),
        }
    }

    /// The operator and operand following a label key.
    fn parse_comparison(&mut self, key: String) -> Result<Selector, SelectorError> {
        if self.eat(&Tok::EqEq) {
            let value = self.expect_string("a quoted string after '=='")?;
            Ok(Selector::Eq(key, value))
        } else if self.eat(&Tok::NotEq) {
            let value = self.expect_string("a quoted string after '!='")?;
            Ok(Selector::NotEq(key, value))
        } else if self.eat_word("in") {
            let values = self.parse_set("in")?;
            Ok(Selector::In(key, values))
        } else if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.expected("'in' after 'not'"));
            }
            let values = self.parse_set("not in")?;
            Ok(Selector::NotIn(key, values))
        } else {
            Err(self.expected(&format!(
                "'==', '!=', 'in' or 'not in' after label key '{key}'"
            )))
        }
    }

    /// `{'a', 'b'}`, possibly empty.
    fn parse_set(&mut self, operator: &str) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(&Tok::LBrace, &format!("'{{' after '{operator}'"))?;
        let mut values = BTreeSet::new();
        if self.eat(&Tok::RBrace) {
            return Ok(values);
        }
        loop {
            values.insert(self.expect_string("a quoted string in the set")?);
            if self.eat(&Tok::RBrace) {
                return Ok(values);
            }
            self.expect(&Tok::Comma, "',' or '}' in the set")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn has(key: &str) -> Selector {
        Selector::Has(key.to_owned())
    }

    fn eq(key: &str, value: &str) -> Selector {
        Selector::Eq(key.to_owned(), value.to_owned())
    }

    fn ne(key: &str, value: &str) -> Selector {
        Selector::NotEq(key.to_owned(), value.to_owned())
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn is_in(key: &str, values: &[&str]) -> Selector {
        Selector::In(key.to_owned(), set(values))
    }

    fn not_in(key: &str, values: &[&str]) -> Selector {
        Selector::NotIn(key.to_owned(), set(values))
    }

    fn not(inner: Selector) -> Selector {
        Selector::Not(Box::new(inner))
    }

    fn and(lhs: Selector, rhs: Selector) -> Selector {
        Selector::And(Box::new(lhs), Box::new(rhs))
    }

    fn or(lhs: Selector, rhs: Selector) -> Selector {
        Selector::Or(Box::new(lhs), Box::new(rhs))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_each_construct() {
        let cases = [
            ("", Selector::All),
            (" \t\n ", Selector::All),
            ("all()", Selector::All),
            ("  all ( )  ", Selector::All),
            ("has(rack)", has("rack")),
            (
                "has( kubernetes.io/hostname )",
                has("kubernetes.io/hostname"),
            ),
            ("role == 'db'", eq("role", "db")),
            ("role==\"db\"", eq("role", "db")),
            ("role == ''", eq("role", "")),
            ("role != 'db'", ne("role", "db")),
            ("a == \"it's\"", eq("a", "it's")),
            ("a == 'say \"hi\"'", eq("a", "say \"hi\"")),
            ("a == 'héllo wörld && || ('", eq("a", "héllo wörld && || (")),
            ("zone in {'a', 'b'}", is_in("zone", &["a", "b"])),
            ("zone in {\"b\",'a','b'}", is_in("zone", &["a", "b"])),
            ("zone in {}", is_in("zone", &[])),
            ("zone not in {'a'}", not_in("zone", &["a"])),
            ("zone   not\tin{}", not_in("zone", &[])),
            ("!has(a)", not(has("a"))),
            ("!!has(a)", not(not(has("a")))),
            ("! ! has(a)", not(not(has("a")))),
            ("!a == 'x'", not(eq("a", "x"))),
            ("!all()", not(Selector::All)),
            ("((has(a)))", has("a")),
            ("1a-b_c.d/e == 'x'", eq("1a-b_c.d/e", "x")),
            // The words `in`, `not`, `has` and `all` are ordinary keys outside their role.
            ("in == 'x'", eq("in", "x")),
            ("has != 'x'", ne("has", "x")),
            ("all in {'x'}", is_in("all", &["x"])),
            ("not not in {'x'}", not_in("not", &["x"])),
            ("has(in)", has("in")),
        ];
        for (input, expected) in cases {
            assert_eq!(Selector::parse(input), Ok(expected), "input: {input:?}");
        }
    }

    #[test]
    fn respects_precedence_and_associativity() {
        let (a, b, c) = (|| eq("a", "x"), || eq("b", "y"), || eq("c", "z"));
        let cases = [
            ("a == 'x' || b == 'y' && c == 'z'", or(a(), and(b(), c()))),
            ("a == 'x' && b == 'y' || c == 'z'", or(and(a(), b()), c())),
            ("(a == 'x' || b == 'y') && c == 'z'", and(or(a(), b()), c())),
            ("a == 'x' && b == 'y' && c == 'z'", and(and(a(), b()), c())),
            ("a == 'x' || b == 'y' || c == 'z'", or(or(a(), b()), c())),
            (
                "a == 'x' && (b == 'y' && c == 'z')",
                and(a(), and(b(), c())),
            ),
            ("!a == 'x' && b == 'y'", and(not(a()), b())),
            ("!(a == 'x' && b == 'y')", not(and(a(), b()))),
            (
                "!has(a) || !has(b) && has(c)",
                or(not(has("a")), and(not(has("b")), has("c"))),
            ),
            ("a=='x'&&!(b=='y'||c=='z')", and(a(), not(or(b(), c())))),
        ];
        for (input, expected) in cases {
            assert_eq!(Selector::parse(input), Ok(expected), "input: {input:?}");
        }
    }

    #[test]
    fn prints_canonical_form() {
        let cases = [
            ("", "all()"),
            ("  has( rack ) ", "has(rack)"),
            ("a=='x'", "a == 'x'"),
            ("a!=\"x\"", "a != 'x'"),
            ("a == \"it's\"", "a == \"it's\""),
            ("zone in {\"b\",'a'}", "zone in {'a', 'b'}"),
            ("zone in {\"it's\", 'x'}", "zone in {\"it's\", 'x'}"),
            ("zone not in{}", "zone not in {}"),
            ("!has(a)", "!has(a)"),
            ("!!a=='x'", "!!a == 'x'"),
            ("!(has(a)||has(b))", "!(has(a) || has(b))"),
            ("has(a)&&has(b)&&has(c)", "has(a) && has(b) && has(c)"),
            ("has(a)&&(has(b)&&has(c))", "has(a) && (has(b) && has(c))"),
            ("has(a)||has(b)||has(c)", "has(a) || has(b) || has(c)"),
            ("has(a)||(has(b)||has(c))", "has(a) || (has(b) || has(c))"),
            ("has(a)&&has(b)||has(c)", "(has(a) && has(b)) || has(c)"),
            ("has(a)||has(b)&&has(c)", "has(a) || (has(b) && has(c))"),
            ("(has(a)||has(b))&&has(c)", "(has(a) || has(b)) && has(c)"),
        ];
        for (input, canonical) in cases {
            let parsed = Selector::parse(input).unwrap();
            assert_eq!(parsed.to_string(), canonical, "input: {input:?}");
            assert_eq!(Selector::parse(canonical), Ok(parsed), "input: {input:?}");
        }
    }

    #[test]
    fn from_str_matches_parse() {
        let selector: Selector = "role == 'db' && has(rack)".parse().unwrap();
        assert_eq!(selector, and(eq("role", "db"), has("rack")));
        assert!("role ==".parse::<Selector>().is_err());
    }

    #[test]
    fn evaluates_against_labels() {
        let node = labels(&[
            ("role", "db"),
            ("zone", "a"),
            ("empty", ""),
            ("kubernetes.io/hostname", "node-1"),
        ]);
        let cases = [
            ("", true),
            ("all()", true),
            ("!all()", false),
            ("has(role)", true),
            ("has(missing)", false),
            ("!has(role)", false),
            ("!has(missing)", true),
            ("role == 'db'", true),
            ("role == 'web'", false),
            ("missing == ''", false),
            ("empty == ''", true),
            ("role != 'web'", true),
            ("role != 'db'", false),
            // Calico: `!=` is true when the label is absent.
            ("missing != 'db'", true),
            ("missing != ''", true),
            ("zone in {'a', 'b'}", true),
            ("zone in {'c'}", false),
            ("zone in {}", false),
            ("missing in {'a'}", false),
            ("zone not in {'c'}", true),
            ("zone not in {'a', 'b'}", false),
            ("zone not in {}", true),
            // Calico: `not in` is true when the label is absent.
            ("missing not in {'a'}", true),
            ("missing not in {}", true),
            ("kubernetes.io/hostname == 'node-1'", true),
            ("has(role) && zone == 'a'", true),
            ("has(role) && zone == 'b'", false),
            ("has(missing) || role == 'db'", true),
            ("has(missing) || role == 'web'", false),
            ("!(role == 'db' && zone == 'b')", true),
            ("role == 'web' || zone == 'a' && !has(missing)", true),
            ("(role == 'web' || zone == 'a') && has(missing)", false),
        ];
        for (input, expected) in cases {
            let selector = Selector::parse(input).unwrap();
            assert_eq!(selector.matches(&node), expected, "selector: {input:?}");
        }
    }

    #[test]
    fn evaluates_against_no_labels() {
        let none = BTreeMap::new();
        for (input, expected) in [
            ("all()", true),
            ("has(a)", false),
            ("!has(a)", true),
            ("a == 'x'", false),
            ("a != 'x'", true),
            ("a in {'x'}", false),
            ("a not in {'x'}", true),
        ] {
            let selector = Selector::parse(input).unwrap();
            assert_eq!(selector.matches(&none), expected, "selector: {input:?}");
        }
    }

    #[test]
    fn reports_errors_with_position_and_message() {
        let cases = [
            ("role == db", 8, "expected a quoted string after '=='"),
            (
                "role != ",
                8,
                "expected a quoted string after '!=', found end of input",
            ),
            ("role == 'db", 8, "unterminated string literal"),
            ("role == \"db'", 8, "unterminated string literal"),
            ("has(a) && 'x", 10, "unterminated string literal"),
            ("global()", 0, "unknown function 'global()'"),
            (
                "has(a) || selector( x )",
                10,
                "unknown function 'selector()'",
            ),
            (
                "has(a) has(b)",
                7,
                "unexpected 'has' after the end of the expression",
            ),
            (
                "has(a))",
                6,
                "unexpected ')' after the end of the expression",
            ),
            ("a == 'x' 'y'", 9, "unexpected string 'y'"),
            (
                "has(a) &&",
                9,
                "expected a selector expression, found end of input",
            ),
            ("&& has(a)", 0, "expected a selector expression, found '&&'"),
            (
                "has(a) || || has(b)",
                10,
                "expected a selector expression, found '||'",
            ),
            ("!", 1, "expected a selector expression"),
            ("()", 1, "expected a selector expression, found ')'"),
            (
                "'x' == a",
                0,
                "expected a selector expression, found string 'x'",
            ),
            ("(has(a)", 7, "expected ')' to close the '(' at position 0"),
            ("has()", 4, "expected a label key inside has()"),
            ("has(a", 5, "expected ')' to close 'has('"),
            ("has('a')", 4, "expected a label key inside has()"),
            ("all(x)", 4, "expected ')' after 'all('"),
            (
                "role",
                4,
                "expected '==', '!=', 'in' or 'not in' after label key 'role'",
            ),
            ("role = 'db'", 5, "expected '=='"),
            ("a & b", 2, "expected '&&'"),
            ("a | b", 2, "expected '||'"),
            ("zone in 'a'", 8, "expected '{' after 'in'"),
            ("zone not {'a'}", 9, "expected 'in' after 'not'"),
            ("zone not in 'a'", 12, "expected '{' after 'not in'"),
            ("zone in {'a' 'b'}", 13, "expected ',' or '}' in the set"),
            ("zone in {'a',}", 13, "expected a quoted string in the set"),
            (
                "zone in {'a'",
                12,
                "expected ',' or '}' in the set, found end of input",
            ),
            ("-a == 'x'", 0, "unexpected character '-'"),
            ("_a == 'x'", 0, "unexpected character '_'"),
            // Positions are byte offsets: 'é' takes two bytes.
            ("a == 'é' ü", 10, "unexpected character 'ü'"),
            ("é", 0, "unexpected character 'é'"),
            // The first error in the input wins, even if a later part cannot be tokenized.
            (
                "a == b 'unterminated",
                5,
                "expected a quoted string after '=='",
            ),
        ];
        for (input, position, message) in cases {
            let err = Selector::parse(input).expect_err(input);
            assert_eq!(err.position, position, "input: {input:?}, error: {err}");
            assert!(
                err.message.contains(message),
                "input: {input:?}: {:?} does not contain {message:?}",
                err.message
            );
        }
    }

    #[test]
    fn error_display_includes_position() {
        let err = Selector::parse("role == db").unwrap_err();
        assert_eq!(
            err.to_string(),
            "at position 8: expected a quoted string after '==', found 'db'"
        );
    }

    #[test]
    fn rejects_overlong_input() {
        let at_limit = format!("a == '{}'", "x".repeat(MAX_SELECTOR_LEN - 7));
        assert_eq!(at_limit.len(), MAX_SELECTOR_LEN);
        assert!(Selector::parse(&at_limit).is_ok());

        let err = Selector::parse(&format!("{at_limit} ")).unwrap_err();
        assert_eq!(err.position, MAX_SELECTOR_LEN);
        assert!(err.message.contains("maximum is 1024"), "{err}");
    }

    #[test]
    fn limits_nesting_depth() {
        let parens = |n: usize| format!("{}has(a){}", "(".repeat(n), ")".repeat(n));
        assert_eq!(Selector::parse(&parens(MAX_DEPTH)), Ok(has("a")));
        let err = Selector::parse(&parens(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err.position, MAX_DEPTH);
        assert!(err.message.contains("nested more than 64 levels"), "{err}");

        let bangs = |n: usize| format!("{}has(a)", "!".repeat(n));
        assert!(Selector::parse(&bangs(MAX_DEPTH)).is_ok());
        let err = Selector::parse(&bangs(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(err.position, MAX_DEPTH);
        assert!(err.message.contains("nested more than 64 levels"), "{err}");

        // `!(` counts two levels.
        let mixed = |n: usize| format!("{}has(a){}", "!(".repeat(n), ")".repeat(n));
        assert!(Selector::parse(&mixed(MAX_DEPTH / 2)).is_ok());
        assert!(Selector::parse(&mixed(MAX_DEPTH / 2 + 1)).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        for open in ["(", "!"] {
            let input = open.repeat(100_000);
            assert!(Selector::parse(&input).is_err());
            // Below the length limit the depth limit is what stops it.
            let err = Selector::parse(&open.repeat(1000)).unwrap_err();
            assert!(err.message.contains("nested"), "{err}");
            // And the parser itself is safe without the length check.
            let err = Parser::new(&input).parse_selector().unwrap_err();
            assert!(err.message.contains("nested"), "{err}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Property tests
    // -----------------------------------------------------------------------------------------

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["app", "role", "zone", "in", "not", "has", "all"])
                .prop_map(str::to_owned),
            "[A-Za-z0-9][A-Za-z0-9._/-]{0,12}",
        ]
    }

    /// Values never contain both kinds of quote, which no literal can express.
    fn arb_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["", "a", "b", "it's"]).prop_map(str::to_owned),
            "[^\"]{0,6}",
            "[^']{0,6}",
        ]
    }

    fn arb_set() -> impl Strategy<Value = BTreeSet<String>> {
        prop::collection::btree_set(arb_value(), 0..4)
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        let leaf = prop_oneof![
            Just(Selector::All),
            arb_key().prop_map(Selector::Has),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::NotEq(k, v)),
            (arb_key(), arb_set()).prop_map(|(k, s)| Selector::In(k, s)),
            (arb_key(), arb_set()).prop_map(|(k, s)| Selector::NotIn(k, s)),
        ];
        leaf.prop_recursive(6, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(not),
                (inner.clone(), inner.clone()).prop_map(|(l, r)| and(l, r)),
                (inner.clone(), inner).prop_map(|(l, r)| or(l, r)),
            ]
        })
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(arb_key(), arb_value(), 0..6)
    }

    const TOKENS: &[&str] = &[
        "(",
        ")",
        "&&",
        "||",
        "!",
        "has(",
        "all()",
        "==",
        "!=",
        "'",
        "\"",
        "in {",
        "not in",
        "{",
        "}",
        ",",
        "'v'",
        "\"it's\"",
        "role",
        "zone",
        "kubernetes.io/host",
        " ",
        "  ",
        "&",
        "|",
        "=",
        "é",
        "global(",
        "in",
        "not",
        "\t",
    ];

    fn arb_token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 0..48).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(input in any::<String>()) {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn long_operator_strings_never_panic(input in "[()!&|{}'a =]{0,1100}") {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn token_soup_never_panics_and_round_trips(input in arb_token_soup()) {
            if let Ok(selector) = Selector::parse(&input) {
                let printed = selector.to_string();
                prop_assert_eq!(Selector::parse(&printed), Ok(selector), "printed: {}", printed);
            }
        }

        #[test]
        fn mutated_selectors_never_panic(
            selector in arb_selector(),
            at in any::<prop::sample::Index>(),
            insert in prop::sample::select(TOKENS),
            truncate in any::<bool>(),
        ) {
            let printed = selector.to_string();
            let boundaries: Vec<usize> = printed
                .char_indices()
                .map(|(i, _)| i)
                .chain([printed.len()])
                .collect();
            let at = boundaries[at.index(boundaries.len())];
            let mutated = if truncate {
                printed[..at].to_owned()
            } else {
                format!("{}{insert}{}", &printed[..at], &printed[at..])
            };
            if let Ok(reparsed) = Selector::parse(&mutated) {
                let reprinted = reparsed.to_string();
                prop_assert_eq!(Selector::parse(&reprinted), Ok(reparsed), "printed: {}", reprinted);
            }
        }

        #[test]
        fn display_round_trips(selector in arb_selector()) {
            let printed = selector.to_string();
            prop_assume!(printed.len() <= MAX_SELECTOR_LEN);
            prop_assert_eq!(Selector::parse(&printed), Ok(selector), "printed: {}", printed);
        }

        #[test]
        fn round_tripped_selector_matches_the_same_labels(
            selector in arb_selector(),
            labels in arb_labels(),
        ) {
            let printed = selector.to_string();
            prop_assume!(printed.len() <= MAX_SELECTOR_LEN);
            let reparsed = Selector::parse(&printed).unwrap();
            prop_assert_eq!(reparsed.matches(&labels), selector.matches(&labels));
        }
    }
}
