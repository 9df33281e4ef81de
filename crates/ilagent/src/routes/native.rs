//! A fast path for the simplest jq forms, which most route fields are: paths (`.a.b`,
//! `$topic`), literals, string interpolation, `==`/`!=`/`<`..., `%` and `+` on integers,
//! `//`, `if ... then ... else ... end` and object literals.
//!
//! It works on the payload as serde_json reads it, the form the mapping checks take
//! anyway, and borrows wherever it only reads. jaq would need the payload parsed again
//! into its own values, evaluates every step through boxed iterators and allocates per
//! step, and its results have to be converted back: for the bench's route that was about
//! 5 µs a message, three times the flag mapping.
//!
//! The rule that keeps this safe: [`Native::eval`] answers only where its result is
//! certainly jq's, and says `None` otherwise (an input of another type, a float where
//! arithmetic needs an integer, an error jq would raise); the caller then asks jaq. So
//! error messages and every edge case stay jaq's, and a property test (`routes::tests`)
//! checks that both agree wherever this answers. Objects come out with their keys sorted
//! (serde_json's maps), not in jq's insertion order: the same JSON to ilert.

use std::borrow::Cow;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Value};

use crate::message::Metadata;

/// A compiled expression of the supported forms.
#[derive(Debug)]
pub(crate) enum Native {
    Id,
    Var(Variable),
    Lit(Value),
    Path(Box<Native>, Vec<String>),
    Interp(Vec<Piece>),
    Eq(Box<Native>, Box<Native>, bool),
    Ord(Box<Native>, Cmp, Box<Native>),
    Rem(Box<Native>, Box<Native>),
    Add(Box<Native>, Box<Native>),
    Alt(Box<Native>, Box<Native>),
    If(Vec<(Native, Native)>, Box<Native>),
    Obj(Vec<(String, Native)>),
}

/// The message's metadata variables (`$value` is the payload: [`Native::Id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variable {
    Topic,
    Key,
    Partition,
    Offset,
    Headers,
    Timestamp,
    RawValue,
}

#[derive(Debug)]
pub(crate) enum Piece {
    Text(String),
    Value(Native),
}

/// What the fast path reads: the payload as serde_json read it, its text and the
/// message's metadata (each variable made only when an expression reads it).
pub(crate) struct Scope<'a> {
    pub payload: &'a Value,
    pub text: &'a str,
    pub meta: &'a Metadata,
}

static NULL: Value = Value::Null;

impl Native {
    /// The native form of `source`, if every part of it has one.
    pub(crate) fn compile(source: &str) -> Option<Native> {
        let term = jaq_core::load::parse(source, |p| p.term())?;
        of_term(&term)
    }

    /// The expression's single output, or `None` where jaq must decide.
    pub(crate) fn eval<'a>(&'a self, scope: &Scope<'a>) -> Option<Cow<'a, Value>> {
        Some(match self {
            Native::Id => Cow::Borrowed(scope.payload),
            Native::Var(variable) => Cow::Owned(variable.value(scope.meta, scope.text)),
            Native::Lit(value) => Cow::Borrowed(value),
            Native::Path(base, keys) => {
                let mut value = base.eval(scope)?;
                for key in keys {
                    value = field(value, key)?;
                }
                value
            }
            Native::Interp(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(part) => text.push_str(part),
                        Piece::Value(native) => match native.eval(scope)?.as_ref() {
                            Value::String(part) => text.push_str(part),
                            Value::Number(n) => text.push_str(&int(n)?.to_string()),
                            Value::Null => text.push_str("null"),
                            Value::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
                            _ => return None,
                        },
                    }
                }
                Cow::Owned(Value::String(text))
            }
            Native::Eq(left, right, negated) => {
                let (l, r) = (left.eval(scope)?, right.eval(scope)?);
                Cow::Owned(Value::Bool(simple_eq(&l, &r)? != *negated))
            }
            Native::Ord(left, cmp, right) => {
                let (l, r) = (
                    int_of(left.eval(scope)?.as_ref())?,
                    int_of(right.eval(scope)?.as_ref())?,
                );
                Cow::Owned(Value::Bool(match cmp {
                    Cmp::Lt => l < r,
                    Cmp::Le => l <= r,
                    Cmp::Gt => l > r,
                    Cmp::Ge => l >= r,
                    Cmp::Eq | Cmp::Ne => return None,
                }))
            }
            Native::Rem(left, right) => {
                let (l, r) = (
                    int_of(left.eval(scope)?.as_ref())?,
                    int_of(right.eval(scope)?.as_ref())?,
                );
                // jq's remainder of negative numbers differs between implementations.
                if l < 0 || r <= 0 {
                    return None;
                }
                Cow::Owned(Value::from(l % r))
            }
            Native::Add(left, right) => add(left.eval(scope)?, right.eval(scope)?)?,
            Native::Alt(left, right) => {
                let value = left.eval(scope)?;
                if truthy(&value) {
                    value
                } else {
                    right.eval(scope)?
                }
            }
            Native::If(branches, otherwise) => {
                for (condition, then) in branches {
                    if truthy(condition.eval(scope)?.as_ref()) {
                        return then.eval(scope);
                    }
                }
                otherwise.eval(scope)?
            }
            Native::Obj(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(key.clone(), value.eval(scope)?.into_owned());
                }
                Cow::Owned(Value::Object(map))
            }
        })
    }
}

impl Variable {
    /// In the order of [`super::expr::VARIABLES`], which ends with `$value`.
    pub(crate) const ALL: [Variable; 7] = [
        Variable::Topic,
        Variable::Key,
        Variable::Partition,
        Variable::Offset,
        Variable::Headers,
        Variable::Timestamp,
        Variable::RawValue,
    ];

    fn of(name: &str) -> Option<Native> {
        Some(Native::Var(match name {
            "$topic" => Variable::Topic,
            "$key" => Variable::Key,
            "$partition" => Variable::Partition,
            "$offset" => Variable::Offset,
            "$headers" => Variable::Headers,
            "$timestamp" => Variable::Timestamp,
            "$rawValue" => Variable::RawValue,
            // The payload itself, whatever `.` is: the fast path has no form that
            // changes `.`.
            "$value" => return Some(Native::Id),
            _ => return None,
        }))
    }

    /// The variable's value, for the fast path and (converted) for jaq: the one place that
    /// says what each variable is.
    pub(crate) fn value(self, meta: &Metadata, text: &str) -> Value {
        match self {
            Variable::Topic => Value::from(&*meta.topic),
            Variable::Key => meta.key.as_deref().map_or(Value::Null, Value::from),
            Variable::Partition => meta.partition.map_or(Value::Null, Value::from),
            Variable::Offset => meta.offset.map_or(Value::Null, Value::from),
            Variable::Headers => Value::Object(
                meta.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(String::from_utf8_lossy(v))))
                    .collect(),
            ),
            Variable::Timestamp => meta
                .timestamp
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .map_or(Value::Null, Value::from),
            Variable::RawValue => Value::from(text),
        }
    }
}

/// `value.key`: `null` on `null`, `None` (jaq's error) on anything but an object.
fn field<'a>(value: Cow<'a, Value>, key: &str) -> Option<Cow<'a, Value>> {
    match value {
        Cow::Borrowed(Value::Object(map)) => Some(Cow::Borrowed(map.get(key).unwrap_or(&NULL))),
        Cow::Owned(Value::Object(mut map)) => {
            Some(Cow::Owned(map.remove(key).unwrap_or(Value::Null)))
        }
        Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => Some(Cow::Borrowed(&NULL)),
        _ => None,
    }
}

/// jq's `+` where it is certain: `null` on either side, integers, strings, objects.
fn add<'a>(left: Cow<'a, Value>, right: Cow<'a, Value>) -> Option<Cow<'a, Value>> {
    Some(match (left, right) {
        (value, null) | (null, value) if null.is_null() => value,
        (l, r) => match (l.into_owned(), r.as_ref()) {
            (Value::Number(l), Value::Number(r)) => {
                Cow::Owned(Value::from(int(&l)?.checked_add(int(r)?)?))
            }
            (Value::String(mut l), Value::String(r)) => {
                l.push_str(r);
                Cow::Owned(Value::String(l))
            }
            (Value::Object(mut l), Value::Object(r)) => {
                for (key, value) in r {
                    l.insert(key.clone(), value.clone());
                }
                Cow::Owned(Value::Object(l))
            }
            _ => return None,
        },
    })
}

/// Equality where every jq agrees: no numbers but integers, no containers.
fn simple_eq(l: &Value, r: &Value) -> Option<bool> {
    Some(match (l, r) {
        (Value::Number(l), Value::Number(r)) => int(l)? == int(r)?,
        (Value::Number(n), _) | (_, Value::Number(n)) => {
            int(n)?;
            false
        }
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            return None;
        }
        (l, r) => l == r,
    })
}

/// An integer jaq reads as one (an isize, written without fraction or exponent).
fn int(number: &serde_json::Number) -> Option<isize> {
    number.as_i64().and_then(|n| isize::try_from(n).ok())
}

fn int_of(value: &Value) -> Option<isize> {
    match value {
        Value::Number(n) => int(n),
        _ => None,
    }
}

/// jq's truth: everything but `false` and `null`.
fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

fn of_term(term: &Term<&str>) -> Option<Native> {
    Some(match term {
        Term::Id => Native::Id,
        Term::Num(text) => Native::Lit(Value::from(text.parse::<isize>().ok()?)),
        Term::Str(None, parts) => match literal(parts) {
            Some(text) => Native::Lit(Value::String(text)),
            None => Native::Interp(
                parts
                    .iter()
                    .map(|part| match part {
                        StrPart::Str(text) => Some(Piece::Text((*text).to_string())),
                        StrPart::Char(c) => Some(Piece::Text(c.to_string())),
                        StrPart::Term(term) => of_term(term).map(Piece::Value),
                    })
                    .collect::<Option<_>>()?,
            ),
        },
        Term::Var(name) => Variable::of(name)?,
        Term::Call(name, args) if args.is_empty() => match *name {
            "null" => Native::Lit(Value::Null),
            "true" => Native::Lit(Value::Bool(true)),
            "false" => Native::Lit(Value::Bool(false)),
            _ => return None,
        },
        Term::Path(base, path) => {
            let keys = path
                .0
                .iter()
                .map(|(part, opt)| match (part, opt) {
                    (Part::Index(Term::Str(None, parts)), Opt::Essential) => literal(parts),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let base = of_term(base)?;
            if keys.is_empty() {
                base
            } else {
                Native::Path(Box::new(base), keys)
            }
        }
        Term::BinOp(left, op, right) => {
            let (l, r) = (Box::new(of_term(left)?), Box::new(of_term(right)?));
            match op {
                BinaryOp::Cmp(Cmp::Eq) => Native::Eq(l, r, false),
                BinaryOp::Cmp(Cmp::Ne) => Native::Eq(l, r, true),
                BinaryOp::Cmp(cmp) => Native::Ord(l, *cmp, r),
                BinaryOp::Math(Math::Rem) => Native::Rem(l, r),
                BinaryOp::Math(Math::Add) => Native::Add(l, r),
                BinaryOp::Alt => Native::Alt(l, r),
                _ => return None,
            }
        }
        Term::IfThenElse(branches, otherwise) => Native::If(
            branches
                .iter()
                .map(|(c, t)| Some((of_term(c)?, of_term(t)?)))
                .collect::<Option<_>>()?,
            // `if c then t end` leaves its input as it is.
            Box::new(otherwise.as_deref().map_or(Some(Native::Id), of_term)?),
        ),
        Term::Obj(entries) => Native::Obj(
            entries
                .iter()
                .map(|(key, value)| match (key, value) {
                    (Term::Str(None, parts), Some(value)) => {
                        Some((literal(parts)?, of_term(value)?))
                    }
                    // `{a}` is `{a: .a}`.
                    (Term::Str(None, parts), None) => {
                        let key = literal(parts)?;
                        Some((key.clone(), Native::Path(Box::new(Native::Id), vec![key])))
                    }
                    // `{$x}` is `{x: $x}`.
                    (Term::Var(name), None) => {
                        Some((name.strip_prefix('$')?.to_string(), Variable::of(name)?))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// The text of a string without interpolation.
fn literal(parts: &[StrPart<&str, Term<&str>>]) -> Option<String> {
    let mut text = String::new();
    for part in parts {
        match part {
            StrPart::Str(s) => text.push_str(s),
            StrPart::Char(c) => text.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::expr::{Expr, Inputs};
    use crate::message::{Metadata, SourceKind};

    /// The bench route's and the examples' simple fields, and edge cases of each form.
    const EXPRESSIONS: [&str; 33] = [
        ".",
        ".state",
        ".customDetails.seq",
        "$topic",
        "$partition",
        r#".state != "ACK""#,
        r#".eventType == "CLEARED""#,
        r#"if .state == "CLEARED" then "RESOLVE" else "ALERT" end"#,
        r#"if .state == "CLEARED" then "RESOLVE" elif .state then .state end"#,
        r#""\(.machine): \(.text) (code \(.code))""#,
        r#""\(.alertKey): \(.summary) (seq \(.customDetails.seq)) \u00e9\n""#,
        r#"if .customDetails.key % 2 == 0 then "HIGH" else "LOW" end"#,
        r#"if (.severity // 3) <= 2 then "HIGH" else "LOW" end"#,
        ".code < .severity",
        ".code > 3",
        ".code >= .seq",
        ".code + .severity",
        ".text + .state",
        ".customDetails + {partition: $partition}",
        ".labels + .annotations",
        "{machine, code, $topic, state: .state}",
        ".severity // .code // \"none\"",
        "null == .x",
        "true != .onCall",
        "$value",
        "$value.code",
        "{$value, $key}",
        "$rawValue",
        "$offset + 1",
        "$headers",
        "$timestamp",
        ".code == .text",
        ".labels == null",
    ];

    #[test]
    fn the_variables_are_bound_for_jaq_in_the_order_of_their_names() {
        use super::super::expr::VARIABLES;
        use super::{Native, Variable};
        for (name, variable) in VARIABLES.iter().zip(Variable::ALL) {
            assert!(
                matches!(Variable::of(name), Some(Native::Var(v)) if v == variable),
                "{name}"
            );
        }
        assert_eq!(VARIABLES[Variable::ALL.len()..], ["$value"]);
    }

    #[test]
    fn the_bench_and_example_fields_take_the_fast_path() {
        for source in EXPRESSIONS {
            let expr = Expr::compile(source).unwrap();
            assert!(expr.is_native(), "{source} is not native");
        }
        for source in [
            r#"$topic | split("/")[1]"#,
            ".a[0]",
            ".a?",
            "1.5",
            "@base64 \"\\(.a)\"",
        ] {
            assert!(!Expr::compile(source).unwrap().is_native(), "{source}");
        }
    }

    /// Every expression, native and through jaq, on `payload`.
    fn agree(payload: &str) -> Result<(), TestCaseError> {
        let mut meta = Metadata::new(SourceKind::Kafka, "plant/line-1/alarms");
        meta.partition = Some(2);
        meta.offset = Some(41);
        meta.key = Some("line-1".into());
        meta.headers = vec![("site".into(), b"ham".to_vec())];
        meta.timestamp =
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123));
        let inputs = Inputs::new(payload.as_bytes(), &meta).unwrap();
        for source in EXPRESSIONS {
            let expr = Expr::compile(source).unwrap();
            prop_assert_eq!(
                expr.eval(&inputs),
                expr.eval_with_jaq(&inputs),
                "{} on {}",
                source,
                payload
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Wherever the fast path answers, it answers what jaq does (values and errors:
        /// where jaq fails, the fast path must leave the answer to it).
        #[test]
        fn the_fast_path_agrees_with_jaq(value in super::super::tests::json()) {
            agree(&value.to_string())?;
        }

        /// Numbers as producers write them (`-0`, `1.0`, `1e2`, beyond 64 bits), which a
        /// serialised serde_json value never has.
        #[test]
        fn the_fast_path_agrees_with_jaq_on_numbers_as_written(
            code in r"-?(0|[1-9][0-9]{0,21})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
            severity in r"-?(0|[1-9][0-9]{0,3})(\.0)?",
        ) {
            agree(&format!(r#"{{"code": {code}, "severity": {severity}, "seq": {code}, "text": "t"}}"#))?;
        }
    }
}
