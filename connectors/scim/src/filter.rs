//! SCIM filters: the whole RFC 7644 §3.4.2.2 grammar parsed into an AST
//! ([`ScimFilter`]), printed back canonically, and evaluated over JSON
//! resources with case-insensitive attribute names and `caseExact`-aware
//! string comparison.
//!
//! Dialect tolerance, each one documented in `docs/scim.md`:
//! - operators and the `and`/`or`/`not` keywords in any case;
//! - a value-path followed by a sub-attribute comparison
//!   (`emails[type eq "work"].value eq "a@b.c"`, sent by Microsoft Entra) is
//!   read as `emails[type eq "work" and value eq "a@b.c"]`;
//! - an unquoted comparison value that is not `true`, `false`, `null` or a
//!   number is read as a string (`externalId eq 5c1b...`, Entra's legacy form).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use crate::error::ScimError;
use crate::schema::{AttrType, ResourceKind};

/// Deepest nesting of parentheses, `not` and value paths accepted.
const MAX_DEPTH: usize = 32;
/// Most comparison terms accepted in one filter.
const MAX_TERMS: usize = 256;

/// An attribute path: `[urn:]name[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URN prefix, when the path was qualified.
    pub urn: Option<String>,
    /// The attribute name.
    pub name: String,
    /// The sub-attribute name.
    pub sub: Option<String>,
}

impl AttrPath {
    /// An unqualified path to a top-level attribute.
    pub fn new(name: impl Into<String>) -> Self {
        AttrPath { urn: None, name: name.into(), sub: None }
    }

    /// Same path with a sub-attribute.
    pub fn with_sub(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    /// Parses `[urn:]name[.sub]`. The URN is everything before the last `:`.
    pub fn parse(s: &str) -> Result<AttrPath, String> {
        let is_urn = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
        let (urn, rest) = if is_urn {
            match s.rfind(':') {
                Some(i) if i + 1 < s.len() => (Some(s[..i].to_string()), &s[i + 1..]),
                _ => return Err(format!("attribute path {s:?} has no attribute name")),
            }
        } else {
            (None, s)
        };
        let (name, sub) = match rest.split_once('.') {
            Some((n, sub)) => (n, Some(sub)),
            None => (rest, None),
        };
        if !valid_attr_name(name) {
            return Err(format!("invalid attribute name {name:?}"));
        }
        if let Some(sub) = sub
            && !valid_attr_name(sub)
        {
            return Err(format!("invalid sub-attribute name {sub:?}"));
        }
        Ok(AttrPath { urn, name: name.to_string(), sub: sub.map(str::to_string) })
    }

    /// Is this path the attribute `name` (no sub-attribute, core schema)?
    pub fn is(&self, kind: ResourceKind, name: &str) -> bool {
        self.sub.is_none()
            && self.name.eq_ignore_ascii_case(name)
            && self.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kind.core_urn()))
    }
}

/// RFC 7643 ATTRNAME (plus `$ref`).
pub(crate) fn valid_attr_name(name: &str) -> bool {
    if name == "$ref" {
        return true;
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

impl CompareOp {
    fn parse(s: &str) -> Option<CompareOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le)
    }
}

/// A comparison literal (`compValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A JSON number.
    Number(Number),
    /// A JSON string.
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::String(s) => f.write_str(&serde_json::to_string(s).map_err(|_| fmt::Error)?),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum ScimFilter {
    /// `attr pr`
    Present(AttrPath),
    /// `attr op value`
    Compare(AttrPath, CompareOp, CompValue),
    /// `a and b`
    And(Box<ScimFilter>, Box<ScimFilter>),
    /// `a or b`
    Or(Box<ScimFilter>, Box<ScimFilter>),
    /// `not (a)`
    Not(Box<ScimFilter>),
    /// `attr[filter]`: the inner filter's paths name sub-attributes of `attr`.
    ValuePath(AttrPath, Box<ScimFilter>),
}

impl ScimFilter {
    /// Parses a filter expression. Errors are `400 invalidFilter`.
    pub fn parse(input: &str) -> Result<ScimFilter, ScimError> {
        let tokens = lex(input).map_err(ScimError::invalid_filter)?;
        let mut p = Parser { tokens, pos: 0, terms: 0 };
        let f = p.filter(0, false).map_err(ScimError::invalid_filter)?;
        if p.pos != p.tokens.len() {
            return Err(ScimError::invalid_filter(format!(
                "unexpected {} after the end of the filter",
                p.tokens[p.pos]
            )));
        }
        Ok(f)
    }

    /// Parses the filter inside a PATCH value path (`members[value eq "x"]`).
    pub(crate) fn parse_value_filter(input: &str) -> Result<ScimFilter, String> {
        let tokens = lex(input)?;
        let mut p = Parser { tokens, pos: 0, terms: 0 };
        let f = p.filter(1, true)?;
        if p.pos != p.tokens.len() {
            return Err(format!("unexpected {} in value filter", p.tokens[p.pos]));
        }
        Ok(f)
    }

    /// If this filter is exactly `attr eq "string"` on a top-level attribute,
    /// returns the attribute path and the string: the shape a database store
    /// can answer from an index (`userName`, `externalId`, `displayName`).
    pub fn as_string_eq(&self) -> Option<(&AttrPath, &str)> {
        match self {
            ScimFilter::Compare(path, CompareOp::Eq, CompValue::String(s)) => Some((path, s)),
            _ => None,
        }
    }

    /// If this filter is `attr[sub1 eq "a" and sub2 eq "b" ...]`, returns the
    /// attribute and the equalities, e.g. Entra's
    /// `emails[type eq "work"].value eq "x"`.
    pub fn as_value_path_eqs(&self) -> Option<(&AttrPath, Vec<(&str, &str)>)> {
        match self {
            ScimFilter::ValuePath(attr, inner) => {
                let mut out = Vec::new();
                collect_eqs(inner, &mut out).then_some((attr, out))
            }
            _ => None,
        }
    }

    /// Checks the filter against the resource type's schema: ordering
    /// operators on booleans or binary values are `invalidFilter`
    /// (RFC 7644 §3.4.2.2).
    pub fn validate(&self, kind: ResourceKind) -> Result<(), ScimError> {
        self.validate_in(kind, None)
    }

    fn validate_in(&self, kind: ResourceKind, parent: Option<&AttrPath>) -> Result<(), ScimError> {
        match self {
            ScimFilter::Present(_) => Ok(()),
            ScimFilter::Compare(path, op, value) => {
                if op.is_ordering() {
                    if matches!(value, CompValue::Bool(_) | CompValue::Null) {
                        return Err(ScimError::invalid_filter(format!("{} cannot compare with {value}", op.as_str())));
                    }
                    let def = match parent {
                        Some(p) => kind.attribute(p.urn.as_deref(), &p.name).and_then(|d| d.sub(&path.name)),
                        None => kind.attribute(path.urn.as_deref(), &path.name).and_then(|d| match &path.sub {
                            Some(s) => d.sub(s),
                            None => Some(d),
                        }),
                    };
                    if let Some(def) = def
                        && matches!(def.ty, AttrType::Boolean | AttrType::Binary)
                    {
                        return Err(ScimError::invalid_filter(format!(
                            "{} is not defined for {path}, a {} attribute",
                            op.as_str(),
                            if def.ty == AttrType::Boolean { "boolean" } else { "binary" }
                        )));
                    }
                }
                Ok(())
            }
            ScimFilter::And(a, b) | ScimFilter::Or(a, b) => {
                a.validate_in(kind, parent)?;
                b.validate_in(kind, parent)
            }
            ScimFilter::Not(a) => a.validate_in(kind, parent),
            ScimFilter::ValuePath(attr, inner) => inner.validate_in(kind, Some(attr)),
        }
    }

    /// Does the resource (a JSON object in SCIM representation) match?
    pub fn matches(&self, resource: &Value, kind: ResourceKind) -> bool {
        eval(self, resource, kind, None)
    }

    /// Does one element of the multi-valued attribute `parent` match this
    /// value filter (the part between the brackets)?
    pub(crate) fn matches_element(&self, element: &Value, kind: ResourceKind, parent: &AttrPath) -> bool {
        eval(self, element, kind, Some(parent))
    }

    /// The `sub eq "x"` terms of a value filter made only of them and `and`.
    pub(crate) fn simple_eqs(&self) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        collect_eqs(self, &mut out).then_some(out)
    }

    /// The ids of a value filter made only of `value eq "x"` joined by `or`.
    pub(crate) fn value_eq_ids(&self) -> Option<Vec<&str>> {
        match self {
            ScimFilter::Compare(p, CompareOp::Eq, CompValue::String(s))
                if p.sub.is_none() && p.urn.is_none() && p.name.eq_ignore_ascii_case("value") =>
            {
                Some(vec![s.as_str()])
            }
            ScimFilter::Or(a, b) => {
                let mut ids = a.value_eq_ids()?;
                ids.extend(b.value_eq_ids()?);
                Some(ids)
            }
            _ => None,
        }
    }

    /// Does this filter name the attribute (at any depth)?
    pub fn mentions(&self, kind: ResourceKind, name: &str) -> bool {
        match self {
            ScimFilter::Present(p) | ScimFilter::Compare(p, _, _) => {
                p.name.eq_ignore_ascii_case(name)
                    && p.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kind.core_urn()))
            }
            ScimFilter::And(a, b) | ScimFilter::Or(a, b) => a.mentions(kind, name) || b.mentions(kind, name),
            ScimFilter::Not(a) => a.mentions(kind, name),
            ScimFilter::ValuePath(p, _) => p.is(kind, name),
        }
    }
}

fn collect_eqs<'a>(f: &'a ScimFilter, out: &mut Vec<(&'a str, &'a str)>) -> bool {
    match f {
        ScimFilter::Compare(p, CompareOp::Eq, CompValue::String(s)) if p.sub.is_none() => {
            out.push((p.name.as_str(), s.as_str()));
            true
        }
        ScimFilter::And(a, b) => collect_eqs(a, out) && collect_eqs(b, out),
        _ => false,
    }
}

impl fmt::Display for ScimFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScimFilter::Present(p) => write!(f, "{p} pr"),
            ScimFilter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            ScimFilter::And(a, b) => {
                if matches!(**a, ScimFilter::Or(..)) {
                    write!(f, "({a})")?;
                } else {
                    write!(f, "{a}")?;
                }
                f.write_str(" and ")?;
                if matches!(**b, ScimFilter::Or(..) | ScimFilter::And(..)) {
                    write!(f, "({b})")
                } else {
                    write!(f, "{b}")
                }
            }
            ScimFilter::Or(a, b) => {
                write!(f, "{a} or ")?;
                if matches!(**b, ScimFilter::Or(..)) { write!(f, "({b})") } else { write!(f, "{b}") }
            }
            ScimFilter::Not(a) => write!(f, "not ({a})"),
            ScimFilter::ValuePath(p, inner) => write!(f, "{p}[{inner}]"),
        }
    }
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::LBracket => f.write_str("'['"),
            Token::RBracket => f.write_str("']'"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Word(w) => write!(f, "{w:?}"),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            b')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            b'[' => {
                tokens.push(Token::LBracket);
                i += 1;
            }
            b']' => {
                tokens.push(Token::RBracket);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated string in filter".into()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let raw = input.get(start..=i).ok_or_else(|| "unterminated string in filter".to_string())?;
                let s: String =
                    serde_json::from_str(raw).map_err(|e| format!("invalid string {raw} in filter: {e}"))?;
                tokens.push(Token::Str(s));
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'[' | b']' | b'"')
                {
                    i += 1;
                }
                let word = input.get(start..i).ok_or_else(|| "invalid character in filter".to_string())?;
                tokens.push(Token::Word(word.to_string()));
            }
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn filter(&mut self, depth: usize, in_value_path: bool) -> Result<ScimFilter, String> {
        if depth > MAX_DEPTH {
            return Err(format!("filter nests deeper than {MAX_DEPTH} levels"));
        }
        let mut left = self.and_expr(depth, in_value_path)?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.and_expr(depth, in_value_path)?;
            left = ScimFilter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self, depth: usize, in_value_path: bool) -> Result<ScimFilter, String> {
        let mut left = self.unary(depth, in_value_path)?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.unary(depth, in_value_path)?;
            left = ScimFilter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize, in_value_path: bool) -> Result<ScimFilter, String> {
        if depth > MAX_DEPTH {
            return Err(format!("filter nests deeper than {MAX_DEPTH} levels"));
        }
        if self.peek_keyword("not") && matches!(self.tokens.get(self.pos + 1), Some(Token::LParen)) {
            self.pos += 1;
            let inner = self.unary(depth + 1, in_value_path)?;
            return Ok(ScimFilter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.filter(depth + 1, in_value_path)?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    Some(t) => Err(format!("expected ')' but found {t}")),
                    None => Err("missing ')' at the end of the filter".into()),
                }
            }
            Some(Token::Word(w)) => self.attr_expr(&w, depth, in_value_path),
            Some(t) => Err(format!("expected an attribute name but found {t}")),
            None => Err("unexpected end of filter, expected an attribute name".into()),
        }
    }

    fn attr_expr(&mut self, word: &str, depth: usize, in_value_path: bool) -> Result<ScimFilter, String> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(format!("filter has more than {MAX_TERMS} terms"));
        }
        let path = AttrPath::parse(word)?;
        if matches!(self.peek(), Some(Token::LBracket)) {
            if in_value_path {
                return Err("value paths cannot nest".into());
            }
            if path.sub.is_some() {
                return Err(format!("{path} cannot have a value filter"));
            }
            self.pos += 1;
            let inner = self.filter(depth + 1, true)?;
            match self.next() {
                Some(Token::RBracket) => {}
                Some(t) => return Err(format!("expected ']' but found {t}")),
                None => return Err("missing ']' in the filter".into()),
            }
            // Entra: `emails[type eq "work"].value eq "x"`.
            if let Some(Token::Word(w)) = self.peek()
                && let Some(sub) = w.strip_prefix('.')
            {
                let sub = sub.to_string();
                if !valid_attr_name(&sub) {
                    return Err(format!("invalid sub-attribute name {sub:?}"));
                }
                self.pos += 1;
                let tail = self.comparison(AttrPath::new(sub))?;
                return Ok(ScimFilter::ValuePath(path, Box::new(ScimFilter::And(Box::new(inner), Box::new(tail)))));
            }
            return Ok(ScimFilter::ValuePath(path, Box::new(inner)));
        }
        if in_value_path && (path.urn.is_some() || path.sub.is_some()) {
            return Err(format!("{path}: inside a value filter, name a sub-attribute only"));
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<ScimFilter, String> {
        let op = match self.next() {
            Some(Token::Word(op)) => op,
            Some(t) => return Err(format!("expected an operator after {path} but found {t}")),
            None => return Err(format!("expected an operator after {path}")),
        };
        if op.eq_ignore_ascii_case("pr") {
            return Ok(ScimFilter::Present(path));
        }
        let op = CompareOp::parse(&op).ok_or_else(|| format!("unknown operator {op:?}"))?;
        let value = match self.next() {
            Some(Token::Str(s)) => CompValue::String(s),
            Some(Token::Word(w)) => word_value(&w),
            Some(t) => return Err(format!("expected a value after {op:?} but found {t}", op = op.as_str())),
            None => return Err(format!("expected a value after {path} {}", op.as_str())),
        };
        Ok(ScimFilter::Compare(path, op, value))
    }
}

fn word_value(w: &str) -> CompValue {
    if w.eq_ignore_ascii_case("true") {
        CompValue::Bool(true)
    } else if w.eq_ignore_ascii_case("false") {
        CompValue::Bool(false)
    } else if w.eq_ignore_ascii_case("null") {
        CompValue::Null
    } else if let Ok(n) = serde_json::from_str::<Number>(w) {
        CompValue::Number(n)
    } else {
        // Entra legacy: unquoted string values.
        CompValue::String(w.to_string())
    }
}

// ---------------------------------------------------------------- evaluation

/// Case-insensitive key lookup: exact first, then any case.
pub(crate) fn get_ci<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// The object holding the attribute: the resource, or its extension object.
fn container<'a>(
    resource: &'a Value,
    kind: ResourceKind,
    urn: Option<&str>,
) -> Option<&'a serde_json::Map<String, Value>> {
    let obj = resource.as_object()?;
    match urn {
        None => Some(obj),
        Some(u) if u.eq_ignore_ascii_case(kind.core_urn()) => Some(obj),
        Some(u) => get_ci(obj, u)?.as_object(),
    }
}

fn eval(f: &ScimFilter, resource: &Value, kind: ResourceKind, parent: Option<&AttrPath>) -> bool {
    match f {
        ScimFilter::And(a, b) => eval(a, resource, kind, parent) && eval(b, resource, kind, parent),
        ScimFilter::Or(a, b) => eval(a, resource, kind, parent) || eval(b, resource, kind, parent),
        ScimFilter::Not(a) => !eval(a, resource, kind, parent),
        ScimFilter::Present(path) => candidates(resource, kind, path, parent).iter().any(|v| is_present(v)),
        ScimFilter::Compare(path, op, lit) => {
            let values = candidates(resource, kind, path, parent);
            let case_exact = match parent {
                Some(p) => kind.case_exact(p.urn.as_deref(), &p.name, Some(&path.name)),
                None => kind.case_exact(path.urn.as_deref(), &path.name, path.sub.as_deref()),
            };
            match (op, lit) {
                (CompareOp::Eq, CompValue::Null) => !values.iter().any(|v| is_present(v)),
                (CompareOp::Ne, CompValue::Null) => values.iter().any(|v| is_present(v)),
                (CompareOp::Ne, _) => !values.iter().any(|v| compare(CompareOp::Eq, v, lit, case_exact)),
                _ => values.iter().any(|v| compare(*op, v, lit, case_exact)),
            }
        }
        ScimFilter::ValuePath(attr, inner) => {
            let Some(obj) = container(resource, kind, attr.urn.as_deref()) else {
                return false;
            };
            match get_ci(obj, &attr.name) {
                Some(Value::Array(items)) => items.iter().any(|item| eval(inner, item, kind, Some(attr))),
                Some(v @ Value::Object(_)) => eval(inner, v, kind, Some(attr)),
                _ => false,
            }
        }
    }
}

/// The values a path names, flattened: multi-valued attributes give each
/// value; complex multi-valued attributes without a sub-attribute give each
/// element's `value`.
fn candidates<'a>(
    resource: &'a Value,
    kind: ResourceKind,
    path: &AttrPath,
    parent: Option<&AttrPath>,
) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let top = if parent.is_some() {
        resource.as_object().and_then(|o| get_ci(o, &path.name))
    } else {
        container(resource, kind, path.urn.as_deref()).and_then(|o| get_ci(o, &path.name))
    };
    let Some(top) = top else {
        return out;
    };
    let sub = if parent.is_some() { None } else { path.sub.as_deref() };
    let mut push = |v: &'a Value| match (sub, v) {
        (Some(sub), Value::Object(o)) => {
            if let Some(x) = get_ci(o, sub) {
                out.push(x);
            }
        }
        (Some(_), _) => {}
        (None, Value::Object(o)) => {
            if let Some(x) = get_ci(o, "value") {
                out.push(x);
            }
        }
        (None, v) => out.push(v),
    };
    match top {
        Value::Array(items) => items.iter().for_each(&mut push),
        v => push(v),
    }
    out
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn fold(s: &str, case_exact: bool) -> std::borrow::Cow<'_, str> {
    if case_exact { std::borrow::Cow::Borrowed(s) } else { std::borrow::Cow::Owned(s.to_lowercase()) }
}

fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_strings(op: CompareOp, attr: &str, lit: &str, case_exact: bool) -> bool {
    if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
        && let (Ok(a), Ok(b)) = (chrono::DateTime::parse_from_rfc3339(attr), chrono::DateTime::parse_from_rfc3339(lit))
    {
        return ordering_matches(op, a.cmp(&b));
    }
    let a = fold(attr, case_exact);
    let b = fold(lit, case_exact);
    match op {
        CompareOp::Co => a.contains(b.as_ref()),
        CompareOp::Sw => a.starts_with(b.as_ref()),
        CompareOp::Ew => a.ends_with(b.as_ref()),
        _ => ordering_matches(op, a.as_ref().cmp(b.as_ref())),
    }
}

fn compare(op: CompareOp, attr: &Value, lit: &CompValue, case_exact: bool) -> bool {
    match (attr, lit) {
        (Value::String(a), CompValue::String(b)) => compare_strings(op, a, b, case_exact),
        (Value::String(a), CompValue::Number(n)) => compare_strings(op, a, &n.to_string(), case_exact),
        (Value::Number(a), CompValue::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|o| ordering_matches(op, o)),
            _ => false,
        },
        (Value::Number(a), CompValue::String(b)) => match (a.as_f64(), b.parse::<f64>()) {
            (Some(x), Ok(y)) => x.partial_cmp(&y).is_some_and(|o| ordering_matches(op, o)),
            _ => false,
        },
        (Value::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            _ => false,
        },
        (Value::Bool(a), CompValue::String(b)) if op == CompareOp::Eq => {
            b.eq_ignore_ascii_case(if *a { "true" } else { "false" })
        }
        _ => false,
    }
}

/// Compares two attribute values for `sortBy`: strings honour `caseExact`,
/// numbers compare numerically, missing values sort last.
pub fn sort_cmp(a: Option<&Value>, b: Option<&Value>, case_exact: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(Value::String(x)), Some(Value::String(y))) => fold(x, case_exact).cmp(&fold(y, case_exact)),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// The value a sort key names: the attribute, or for a multi-valued
/// attribute its primary (else first) element's sub-attribute or `value`
/// (RFC 7644 §3.4.2.3).
pub fn sort_value<'a>(resource: &'a Value, kind: ResourceKind, path: &AttrPath) -> Option<&'a Value> {
    let obj = container(resource, kind, path.urn.as_deref())?;
    let v = get_ci(obj, &path.name)?;
    let pick = |o: &'a serde_json::Map<String, Value>| get_ci(o, path.sub.as_deref().unwrap_or("value"));
    match v {
        Value::Array(items) => {
            let primary =
                items.iter().find(|i| i.get("primary") == Some(&Value::Bool(true))).or_else(|| items.first())?;
            primary.as_object().and_then(pick).or(Some(primary))
        }
        Value::Object(o) => pick(o),
        Value::Null => None,
        v => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Ext-1",
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "active": true,
            "title": "Tour Guide",
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}
            },
            "meta": {"lastModified": "2011-05-13T04:42:34Z", "resourceType": "User"}
        })
    }

    fn m(f: &str) -> bool {
        ScimFilter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}")).matches(&user(), ResourceKind::User)
    }

    #[test]
    fn rfc7644_examples_parse_and_match() {
        assert!(m(r#"userName eq "bjensen@example.com""#));
        assert!(m(r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#));
        assert!(m(r#"name.familyName co "ens""#));
        assert!(m(r#"userName sw "bj""#));
        assert!(m(r#"title pr"#));
        assert!(!m(r#"nickName pr"#));
        assert!(m(r#"meta.lastModified gt "2011-05-13T04:42:34+07:00""#));
        assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        assert!(!m(r#"meta.lastModified lt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"title pr and userType eq null"#));
        assert!(m(r#"title pr or userType eq "Intern""#));
        assert!(m(r#"userType eq "Employee" or (emails co "example.com" or emails.value co "example.org")"#));
        assert!(m(r#"userType ne "Employee" and not (emails co "example.org")"#));
        assert!(m(r#"emails[type eq "work" and value co "@example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and value co "@example.com"]"#));
        assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#
        ));
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName ew "com""#));
        assert!(m(r#"active eq true"#));
        assert!(!m(r#"active eq false"#));
    }

    #[test]
    fn case_exact_attributes_compare_exactly() {
        assert!(!m(r#"externalId eq "ext-1""#));
        assert!(m(r#"externalId eq "Ext-1""#));
        assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
    }

    #[test]
    fn entra_dialect_forms() {
        assert!(m(r#"emails[type eq "work"].value eq "bjensen@example.com""#));
        assert!(!m(r#"emails[type eq "home"].value eq "bjensen@example.com""#));
        // legacy unquoted value
        assert!(m("externalId eq Ext-1"));
        let f = ScimFilter::parse(r#"emails[type eq "work"].value eq "x""#).unwrap();
        let (attr, eqs) = f.as_value_path_eqs().unwrap();
        assert_eq!(attr.name, "emails");
        assert_eq!(eqs, vec![("type", "work"), ("value", "x")]);
    }

    #[test]
    fn bad_filters_are_invalid_filter() {
        for bad in [
            "",
            "userName",
            "userName eq",
            "userName zz \"x\"",
            "(userName eq \"x\"",
            "userName eq \"x\")",
            "emails[type eq \"work\"",
            "emails[type[x eq 1] eq 1]",
            "userName eq \"unterminated",
            "1abc eq 2",
            "and or not",
            "active gt true",
        ] {
            let r = ScimFilter::parse(bad).and_then(|f| f.validate(ResourceKind::User));
            match r {
                Err(ScimError::BadRequest { scim_type: crate::error::ScimType::InvalidFilter, .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let deep = "(".repeat(100) + "a eq 1" + &")".repeat(100);
        assert!(ScimFilter::parse(&deep).is_err());
        let wide = vec!["a eq 1"; 1000].join(" and ");
        assert!(ScimFilter::parse(&wide).is_err());
    }

    #[test]
    fn gt_on_boolean_is_rejected_by_validation() {
        let f = ScimFilter::parse("active gt 1").unwrap();
        assert!(f.validate(ResourceKind::User).is_err());
        let f = ScimFilter::parse("emails[primary gt 1]").unwrap();
        assert!(f.validate(ResourceKind::User).is_err());
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("userName".to_string()),
            Just("emails".to_string()),
            Just("active".to_string()),
            "[a-zA-Z][a-zA-Z0-9_-]{0,8}",
        ]
        .prop_filter("keywords are not names", |s| !["and", "or", "not"].contains(&s.to_ascii_lowercase().as_str()))
    }

    fn arb_path() -> impl Strategy<Value = AttrPath> {
        (
            prop::option::of(Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string())),
            arb_name(),
            prop::option::of(arb_name()),
        )
            .prop_map(|(urn, name, sub)| AttrPath { urn, name, sub })
    }

    fn arb_value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            Just(CompValue::Null),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|n| CompValue::Number(n.into())),
            any::<String>().prop_map(CompValue::String),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop_oneof![
            Just(CompareOp::Eq),
            Just(CompareOp::Ne),
            Just(CompareOp::Co),
            Just(CompareOp::Sw),
            Just(CompareOp::Ew),
            Just(CompareOp::Gt),
            Just(CompareOp::Ge),
            Just(CompareOp::Lt),
            Just(CompareOp::Le),
        ]
    }

    fn arb_leaf(in_vp: bool) -> BoxedStrategy<ScimFilter> {
        let path: BoxedStrategy<AttrPath> =
            if in_vp { arb_name().prop_map(AttrPath::new).boxed() } else { arb_path().boxed() };
        prop_oneof![
            path.clone().prop_map(ScimFilter::Present),
            (path, arb_op(), arb_value()).prop_map(|(p, o, v)| ScimFilter::Compare(p, o, v)),
        ]
        .boxed()
    }

    fn arb_tree(leaf: BoxedStrategy<ScimFilter>) -> BoxedStrategy<ScimFilter> {
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| ScimFilter::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| ScimFilter::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| ScimFilter::Not(Box::new(a))),
            ]
        })
        .boxed()
    }

    fn arb_filter() -> BoxedStrategy<ScimFilter> {
        let vp = (arb_name(), arb_tree(arb_leaf(true)))
            .prop_map(|(n, f)| ScimFilter::ValuePath(AttrPath::new(n), Box::new(f)));
        arb_tree(prop_oneof![arb_leaf(false), vp].boxed())
    }

    proptest! {
        #[test]
        fn print_parse_round_trip(f in arb_filter()) {
            let printed = f.to_string();
            let parsed = ScimFilter::parse(&printed);
            prop_assert_eq!(parsed.as_ref().ok(), Some(&f), "printed: {}", printed);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            if let Ok(f) = ScimFilter::parse(&s) {
                let _ = f.matches(&user(), ResourceKind::User);
                let _ = f.validate(ResourceKind::User);
            }
        }

        #[test]
        fn parse_never_panics_on_filter_like_text(
            s in r#"[a-zA-Z. \[\]()"\\:0-9]{0,60}"#
        ) {
            if let Ok(f) = ScimFilter::parse(&s) {
                let _ = f.matches(&user(), ResourceKind::User);
                let again = ScimFilter::parse(&f.to_string());
                prop_assert!(again.is_ok());
            }
        }
    }
}
