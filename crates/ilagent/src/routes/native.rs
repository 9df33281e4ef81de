//! A fast path for the simplest jq forms, which most route fields are: paths (`.a.b`,
//! `$topic`), literals, string interpolation, `==`/`!=`/`<`..., `%` and `+` on integers,
//! `//`, `if ... then ... else ... end` and object literals.
//!
//! jaq evaluates every step through boxed iterators and allocates per step; for these
//! forms that costs several microseconds per field (a string interpolation about 4 µs on
//! the bench machine), which limits a routed backlog's rate. Evaluated here instead, they
//! cost a few hundred nanoseconds.
//!
//! The rule that keeps this safe: [`Native::eval`] answers only where its result is
//! certainly jq's, and says `None` otherwise (an input of another type, a float, an error
//! jq would raise); the caller then asks jaq. So error messages and every edge case stay
//! jaq's, and a property test (`routes::tests`) checks that both agree wherever this
//! answers.

use bytes::Bytes;
use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use jaq_json::{Num, Val};

use super::expr::VARIABLES;

/// A compiled expression of the supported forms.
#[derive(Debug)]
pub(crate) enum Native {
    Id,
    Var(usize),
    Lit(Literal),
    Path(Box<Native>, Vec<Bytes>),
    Interp(Vec<Piece>),
    Eq(Box<Native>, Box<Native>, bool),
    Ord(Box<Native>, Cmp, Box<Native>),
    Rem(Box<Native>, Box<Native>),
    Add(Box<Native>, Box<Native>),
    Alt(Box<Native>, Box<Native>),
    If(Vec<(Native, Native)>, Box<Native>),
    Obj(Vec<(Bytes, Native)>),
}

/// A constant. Not a [`Val`], which is not `Sync` (routes are shared by threads).
#[derive(Debug)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(isize),
    Str(Bytes),
}

impl Literal {
    fn val(&self) -> Val {
        match self {
            Literal::Null => Val::Null,
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Int(n) => Val::Num(Num::Int(*n)),
            Literal::Str(text) => Val::utf8_str(text.clone()),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Piece {
    Text(String),
    Value(Native),
}

impl Native {
    /// The native form of `source`, if every part of it has one.
    pub(crate) fn compile(source: &str) -> Option<Native> {
        let term = jaq_core::load::parse(source, |p| p.term())?;
        of_term(&term)
    }

    /// The expression's single output, or `None` where jaq must decide.
    pub(crate) fn eval(&self, input: &Val, vars: &[Val]) -> Option<Val> {
        Some(match self {
            Native::Id => input.clone(),
            Native::Var(index) => vars.get(*index)?.clone(),
            Native::Lit(literal) => literal.val(),
            Native::Path(base, keys) => {
                let mut value = base.eval(input, vars)?;
                for key in keys {
                    value = match &value {
                        Val::Obj(map) => map
                            .get(&Val::utf8_str(key.clone()))
                            .cloned()
                            .unwrap_or(Val::Null),
                        Val::Null => Val::Null,
                        _ => return None,
                    };
                }
                value
            }
            Native::Interp(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(part) => text.push_str(part),
                        Piece::Value(native) => match native.eval(input, vars)? {
                            Val::TStr(bytes) => text.push_str(std::str::from_utf8(&bytes).ok()?),
                            Val::Num(Num::Int(n)) => text.push_str(&n.to_string()),
                            Val::Null => text.push_str("null"),
                            Val::Bool(b) => text.push_str(if b { "true" } else { "false" }),
                            _ => return None,
                        },
                    }
                }
                Val::utf8_str(text)
            }
            Native::Eq(left, right, negated) => {
                let (l, r) = (left.eval(input, vars)?, right.eval(input, vars)?);
                if !(simple(&l) && simple(&r)) {
                    return None;
                }
                Val::Bool((l == r) != *negated)
            }
            Native::Ord(left, cmp, right) => {
                let (l, r) = (
                    int(&left.eval(input, vars)?)?,
                    int(&right.eval(input, vars)?)?,
                );
                Val::Bool(match cmp {
                    Cmp::Lt => l < r,
                    Cmp::Le => l <= r,
                    Cmp::Gt => l > r,
                    Cmp::Ge => l >= r,
                    Cmp::Eq | Cmp::Ne => return None,
                })
            }
            Native::Rem(left, right) => {
                let (l, r) = (
                    int(&left.eval(input, vars)?)?,
                    int(&right.eval(input, vars)?)?,
                );
                // jq's remainder of negative numbers differs between implementations.
                if l < 0 || r <= 0 {
                    return None;
                }
                Val::Num(Num::Int(l % r))
            }
            Native::Add(left, right) => match (left.eval(input, vars)?, right.eval(input, vars)?) {
                (Val::Null, other) | (other, Val::Null) => other,
                (Val::Num(Num::Int(l)), Val::Num(Num::Int(r))) => {
                    Val::Num(Num::Int(l.checked_add(r)?))
                }
                (Val::TStr(l), Val::TStr(r)) => {
                    let mut text = std::str::from_utf8(&l).ok()?.to_string();
                    text.push_str(std::str::from_utf8(&r).ok()?);
                    Val::utf8_str(text)
                }
                (Val::Obj(l), Val::Obj(r)) => {
                    let mut map = (*l).clone();
                    for (key, value) in r.iter() {
                        map.insert(key.clone(), value.clone());
                    }
                    Val::obj(map)
                }
                _ => return None,
            },
            Native::Alt(left, right) => {
                let value = left.eval(input, vars)?;
                if truthy(&value) {
                    value
                } else {
                    right.eval(input, vars)?
                }
            }
            Native::If(branches, otherwise) => {
                for (condition, then) in branches {
                    if truthy(&condition.eval(input, vars)?) {
                        return then.eval(input, vars);
                    }
                }
                otherwise.eval(input, vars)?
            }
            Native::Obj(entries) => {
                let mut map = jaq_json::Map::default();
                for (key, value) in entries {
                    map.insert(Val::utf8_str(key.clone()), value.eval(input, vars)?);
                }
                Val::obj(map)
            }
        })
    }
}

/// Values whose equality is the same in every jq: no numbers but integers, no containers.
fn simple(value: &Val) -> bool {
    matches!(
        value,
        Val::Null | Val::Bool(_) | Val::TStr(_) | Val::Num(Num::Int(_))
    )
}

fn int(value: &Val) -> Option<isize> {
    match value {
        Val::Num(Num::Int(n)) => Some(*n),
        _ => None,
    }
}

/// jq's truth: everything but `false` and `null`.
fn truthy(value: &Val) -> bool {
    !matches!(value, Val::Null | Val::Bool(false))
}

fn of_term(term: &Term<&str>) -> Option<Native> {
    Some(match term {
        Term::Id => Native::Id,
        Term::Num(text) => Native::Lit(Literal::Int(text.parse().ok()?)),
        Term::Str(None, parts) => match literal(parts) {
            Some(text) => Native::Lit(Literal::Str(Bytes::from(text))),
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
        Term::Var(name) => Native::Var(VARIABLES.iter().position(|v| v == name)?),
        Term::Call(name, args) if args.is_empty() => match *name {
            "null" => Native::Lit(Literal::Null),
            "true" => Native::Lit(Literal::Bool(true)),
            "false" => Native::Lit(Literal::Bool(false)),
            _ => return None,
        },
        Term::Path(base, path) => {
            let keys = path
                .0
                .iter()
                .map(|(part, opt)| match (part, opt) {
                    (Part::Index(Term::Str(None, parts)), Opt::Essential) => {
                        literal(parts).map(Bytes::from)
                    }
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
                        Some((Bytes::from(literal(parts)?), of_term(value)?))
                    }
                    // `{a}` is `{a: .a}`.
                    (Term::Str(None, parts), None) => {
                        let key = Bytes::from(literal(parts)?);
                        Some((key.clone(), Native::Path(Box::new(Native::Id), vec![key])))
                    }
                    // `{$x}` is `{x: $x}`.
                    (Term::Var(name), None) => Some((
                        Bytes::from(name.strip_prefix('$')?.to_string()),
                        Native::Var(VARIABLES.iter().position(|v| v == name)?),
                    )),
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
    const EXPRESSIONS: [&str; 24] = [
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
    ];

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Wherever the fast path answers, it answers what jaq does (values and errors:
        /// where jaq fails, the fast path must leave the answer to it).
        #[test]
        fn the_fast_path_agrees_with_jaq(value in super::super::tests::json()) {
            let payload = value.to_string();
            let mut meta = Metadata::new(SourceKind::Kafka, "plant/line-1/alarms");
            meta.partition = Some(2);
            let inputs = Inputs::new(payload.as_bytes(), &meta).unwrap();
            for source in EXPRESSIONS {
                let expr = Expr::compile(source).unwrap();
                prop_assert_eq!(
                    expr.eval(&inputs),
                    expr.eval_with_jaq(&inputs),
                    "{} on {}", source, payload
                );
            }
        }
    }
}
