//! Expressions: the jq language (through the `jaq` crates) for route conditions and
//! field mappings, compiled once at start and evaluated per message.
//!
//! jq because operators already read and write it (`jq` on the shell, Camunda's and
//! Vector's users know its paths), and jaq because it is a maintained, pure-Rust, `#![forbid
//! (unsafe_code)]` implementation that compiles a filter once and runs it on many inputs.
//!
//! An expression sees the payload as `.` (Camunda's `value`) and the message's metadata as
//! variables: `$topic`, `$key`, `$partition`, `$offset`, `$headers` (an object of strings),
//! `$timestamp` (milliseconds since the epoch), `$rawValue` (the payload as text) and
//! `$value` (the payload again). A payload that is not JSON is its text (as in Camunda's
//! connectors). Only its first output counts; none counts as `null`.
//!
//! Cost on hostile input is bounded by what the language is allowed to do: the generators
//! that loop without data to bound them (`repeat`, `while`, `until`, `range`,
//! `recurse(f)`) and function definitions (the only other way to recurse) are refused at
//! compile time, and so are the filters that read the agent's environment or other inputs
//! (`env`, `$ENV`, `input`, `inputs`, `input_filename`) or write to its output (`debug`,
//! `stderr`, `halt`, `halt_error`). What remains walks the payload, whose size the sources
//! cap (`--mqtt_max_packet_size`, Kafka's `message.max.bytes`, `--http_max_body`).

use jaq_core::load::lex::{StrPart, Tok, Token};
use jaq_core::load::{Arena, File, Lexer, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

use std::cell::OnceCell;

use serde::Deserialize;

use super::native::{Scope, Variable};
use crate::message::Metadata;

/// The variables every expression may use, in the order jaq binds them ([`Inputs`]).
pub(crate) const VARIABLES: [&str; 8] = [
    "$topic",
    "$key",
    "$partition",
    "$offset",
    "$headers",
    "$timestamp",
    "$rawValue",
    "$value",
];

/// Filters refused at compile time, and why.
const REFUSED: [(&str, &str); 12] = [
    (
        "def",
        "defining functions is not allowed (it allows unbounded recursion)",
    ),
    ("repeat", "`repeat` loops without bound"),
    ("while", "`while` loops without bound"),
    ("until", "`until` loops without bound"),
    ("range", "`range` loops as far as its argument says"),
    ("env", "`env` would read the agent's environment"),
    ("input", "`input` reads other inputs"),
    ("inputs", "`inputs` reads other inputs"),
    ("input_filename", "`input_filename` reads other inputs"),
    ("debug", "`debug` writes to the agent's output"),
    ("stderr", "`stderr` writes to the agent's output"),
    ("halt_error", "`halt_error` would stop the evaluation"),
];

type Data = data::JustLut<Val>;

/// A compiled expression and its source (for messages).
pub(crate) struct Expr {
    source: String,
    filter: jaq_core::Filter<Data>,
    /// The fast path, for the forms it has ([`super::native`]).
    native: Option<super::native::Native>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// Why an expression does not compile, and where (a byte offset into its source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError {
    pub message: String,
    pub offset: usize,
}

/// How deeply a payload may nest for routes. serde_json refuses deeper payloads; jaq's
/// reader recurses without a limit, so a payload of a few hundred thousand `[` would
/// overflow the stack: such a payload is invalid, with this reason, before jaq sees it.
pub(crate) const MAX_NESTING: usize = 128;

/// What one message offers its expressions.
pub(crate) struct Inputs<'m> {
    meta: &'m Metadata,
    text: &'m str,
    /// The payload as serde_json reads it, for the fast path; `None` when serde_json does
    /// not take it as JSON (then every expression runs on jaq, which decides what it is).
    json: Option<serde_json::Value>,
    /// The payload and the variables as jaq's values: made on the first expression that
    /// needs jaq, then shared by the route's other expressions.
    jaq: OnceCell<(Val, Vars<Val>)>,
}

impl<'m> Inputs<'m> {
    /// The payload is parsed as JSON when it is JSON; otherwise `.` is its text (so is
    /// `$rawValue`, always). Fails, with the reason, for a payload that is not UTF-8 or
    /// nests deeper than [`MAX_NESTING`].
    pub(crate) fn new(payload: &'m [u8], meta: &'m Metadata) -> Result<Inputs<'m>, String> {
        let text =
            std::str::from_utf8(payload).map_err(|_| crate::mapping::not_utf8_reason(payload))?;
        // jaq reads `-0` as the integer 0, serde_json as the float -0.0: a payload with a
        // negative zero goes to jaq whole, so that the fast path never answers otherwise.
        let json = serde_json::from_slice(payload)
            .ok()
            .filter(|json| !has_negative_zero(json));
        if json.is_none() && nests_deeper_than(payload, MAX_NESTING) {
            return Err(format!(
                "payload nests deeper than {MAX_NESTING} levels of arrays and objects"
            ));
        }
        Ok(Inputs {
            meta,
            text,
            json,
            jaq: OnceCell::new(),
        })
    }

    /// What the fast path reads, if serde_json took the payload.
    fn scope(&self) -> Option<Scope<'_>> {
        Some(Scope {
            payload: self.json.as_ref()?,
            text: self.text,
            meta: self.meta,
        })
    }

    /// The payload and the variables (in the order of [`VARIABLES`]) as jaq's values.
    fn jaq(&self) -> &(Val, Vars<Val>) {
        self.jaq.get_or_init(|| {
            let text = self.text;
            // As Camunda does: the parsed JSON if it is JSON, else the text itself.
            let value = jaq_json::read::parse_single(text.as_bytes())
                .unwrap_or_else(|_| Val::utf8_str(text.to_string()));
            // Every value serde_json holds has a jaq form.
            let jaq_value =
                |value: serde_json::Value| Val::deserialize(&value).unwrap_or(Val::Null);
            let values = Variable::ALL
                .iter()
                .map(|variable| jaq_value(variable.value(self.meta, text)))
                .chain([value.clone()]);
            (value, Vars::new(values))
        })
    }
}

fn has_negative_zero(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()),
        Value::Array(items) => items.iter().any(has_negative_zero),
        Value::Object(map) => map.values().any(has_negative_zero),
        _ => false,
    }
}

/// Whether the arrays and objects of `payload` (JSON or not) nest deeper than `limit`:
/// brackets outside strings, counted without parsing.
fn nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in payload {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Expr {
    pub(crate) fn compile(source: &str) -> Result<Expr, CompileError> {
        let tokens = Lexer::new(source).lex().map_err(|errors| {
            let (expected, found) = errors
                .first()
                .map(|(e, found)| (e.as_str(), *found))
                .unwrap_or(("token", source));
            CompileError {
                message: format!("expected {expected}"),
                offset: offset_in(source, found),
            }
        })?;
        refuse_unbounded(source, &tokens)?;

        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errors| load_error(source, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(VARIABLES)
            .compile(modules)
            .map_err(|errors| {
                let (name, undefined) = errors
                    .into_iter()
                    .flat_map(|(_, errors)| errors)
                    .next()
                    .map(|(name, undefined)| (name, undefined.as_str()))
                    .unwrap_or((source, "filter"));
                CompileError {
                    message: format!("undefined {undefined} `{name}`"),
                    offset: offset_in(source, name),
                }
            })?;
        Ok(Expr {
            source: source.to_string(),
            filter,
            native: super::native::Native::compile(source),
        })
    }

    /// The first output of the expression (`null` if it has none), or the error it
    /// raised, as a message. The forms [`super::native`] has are evaluated there.
    pub(crate) fn eval(&self, inputs: &Inputs) -> Result<serde_json::Value, String> {
        if let Some(native) = &self.native
            && let Some(scope) = inputs.scope()
            && let Some(value) = native.eval(&scope)
        {
            return Ok(value.into_owned());
        }
        self.eval_with_jaq(inputs)
    }

    /// Whether the fast path has this expression's form.
    #[cfg(test)]
    pub(crate) fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// [`Expr::eval`] without the fast path.
    pub(crate) fn eval_with_jaq(&self, inputs: &Inputs) -> Result<serde_json::Value, String> {
        let (payload, vars) = inputs.jaq();
        let ctx = Ctx::<Data>::new(&self.filter.lut, vars.clone());
        let mut outputs = self
            .filter
            .id
            .run((ctx, payload.clone()))
            .map(jaq_core::unwrap_valr);
        match outputs.next() {
            None => Ok(serde_json::Value::Null),
            Some(Ok(value)) => to_json(&value),
            Some(Err(error)) => Err(crate::printable::reason(error.to_string())),
        }
    }
}

/// A jaq value as serde_json's, walked directly (fewer allocations than a round trip
/// through JSON text, in a path that is allocation-bound: see the bench notes).
fn to_json(value: &Val) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(jaq_json::Num::Int(i)) => Value::from(*i as i64),
        Val::Num(jaq_json::Num::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("the result is NaN or infinite, which JSON cannot hold")?,
        // Big integers and decimals keep their digits.
        Val::Num(other) => serde_json::from_str(&other.to_string())
            .map_err(|e| format!("the result's number has no JSON form ({e})"))?,
        Val::TStr(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Val::BStr(_) => return Err("the result is a byte string, which JSON cannot hold".into()),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Val::Obj(map) => {
            let mut object = serde_json::Map::with_capacity(map.len());
            for (key, value) in map.iter() {
                let Val::TStr(key) = key else {
                    return Err("the result has an object key that is not a string".into());
                };
                object.insert(String::from_utf8_lossy(key).into_owned(), to_json(value)?);
            }
            Value::Object(object)
        }
    })
}

fn refuse_unbounded(source: &str, tokens: &[Token<&str>]) -> Result<(), CompileError> {
    for Token(text, tok) in tokens {
        match tok {
            Tok::Word => {
                if let Some((_, why)) = REFUSED.iter().find(|(name, _)| name == text) {
                    return Err(CompileError {
                        message: why.to_string(),
                        offset: offset_in(source, text),
                    });
                }
            }
            Tok::Var if *text == "$ENV" => {
                return Err(CompileError {
                    message: "`$ENV` would read the agent's environment".into(),
                    offset: offset_in(source, text),
                });
            }
            Tok::Block(inner) => refuse_unbounded(source, inner)?,
            Tok::Str(parts) => {
                for part in parts {
                    if let StrPart::Term(token) = part {
                        refuse_unbounded(source, std::slice::from_ref(token))?;
                    }
                }
            }
            _ => {}
        }
    }
    // `recurse(f)` may never end; `recurse` and `..` walk the payload and do.
    let words: Vec<&Token<&str>> = tokens.iter().collect();
    for pair in words.windows(2) {
        if let [Token(name, Tok::Word), Token(next, Tok::Block(_))] = pair
            && *name == "recurse"
            && next.starts_with('(')
        {
            return Err(CompileError {
                message: "`recurse(f)` loops as long as `f` yields: use `..` or `recurse`".into(),
                offset: offset_in(source, name),
            });
        }
    }
    Ok(())
}

fn load_error(source: &str, errors: jaq_core::load::Errors<&str, ()>) -> CompileError {
    use jaq_core::load::Error;
    let first = errors.into_iter().map(|(_, e)| e).next();
    match first {
        Some(Error::Lex(errors)) => match errors.first() {
            Some((expected, found)) => CompileError {
                message: format!("expected {}", expected.as_str()),
                offset: offset_in(source, found),
            },
            None => unknown(source),
        },
        Some(Error::Parse(errors)) => match errors.first() {
            Some((expected, found)) => CompileError {
                message: format!(
                    "expected {}, found {}",
                    expected.as_str(),
                    if found.is_empty() { "the end" } else { found }
                ),
                offset: offset_in(source, found),
            },
            None => unknown(source),
        },
        Some(Error::Io(errors)) => CompileError {
            message: errors
                .first()
                .map_or_else(|| "cannot load".to_string(), |(_, e)| e.clone()),
            offset: 0,
        },
        None => unknown(source),
    }
}

fn unknown(source: &str) -> CompileError {
    CompileError {
        message: "does not compile".into(),
        offset: source.len(),
    }
}

/// Where `part` (a slice of `source`, or an empty string at its end) starts in `source`.
fn offset_in(source: &str, part: &str) -> usize {
    let (start, end) = (source.as_ptr() as usize, part.as_ptr() as usize);
    if end >= start && end <= start + source.len() {
        end - start
    } else {
        source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Metadata, SourceKind};
    use serde_json::json;

    fn eval(source: &str, payload: &str) -> Result<serde_json::Value, String> {
        let mut meta = Metadata::new(SourceKind::Kafka, "plc-alarms");
        meta.key = Some("line-1".into());
        meta.partition = Some(2);
        meta.offset = Some(41);
        meta.headers = vec![("site".into(), b"ham".to_vec())];
        let inputs = Inputs::new(payload.as_bytes(), &meta).unwrap();
        Expr::compile(source).unwrap().eval(&inputs)
    }

    #[test]
    fn an_expression_reads_the_payload_and_the_message_s_metadata() {
        let payload = r#"{"machine": "press-4", "code": 17}"#;
        assert_eq!(
            eval(r#""\(.machine)/\(.code)""#, payload),
            Ok(json!("press-4/17"))
        );
        assert_eq!(
            eval(
                "[$topic, $key, $partition, $offset, $headers.site]",
                payload
            ),
            Ok(json!(["plc-alarms", "line-1", 2, 41, "ham"]))
        );
        assert_eq!(eval("$value.code + 1", payload), Ok(json!(18)));
        assert_eq!(eval("$rawValue | length", "A;17"), Ok(json!(4)));
        assert_eq!(
            eval(r#"split(";")"#, "A;17"),
            Ok(json!(["A", "17"])),
            "not JSON: text"
        );
    }

    #[test]
    fn results_keep_their_json_types_and_big_numbers() {
        assert_eq!(
            eval(
                r#"{a: 1, b: 1.5, c: "x", d: [true, null], e: 123456789012345678901234567890}"#,
                "{}"
            ),
            Ok(json!({"a": 1, "b": 1.5, "c": "x", "d": [true, null],
                      "e": serde_json::from_str::<serde_json::Value>("123456789012345678901234567890").unwrap()}))
        );
        assert!(eval("nan", "{}").is_err());
    }

    #[test]
    fn only_the_first_output_counts_and_none_is_null() {
        assert_eq!(eval(".[]", "[1, 2]"), Ok(json!(1)));
        assert_eq!(eval("empty", "{}"), Ok(json!(null)));
    }

    #[test]
    fn a_runtime_error_is_a_message_not_a_panic() {
        let error = eval(".a + 1", r#"{"a": "x"}"#).unwrap_err();
        assert!(error.contains("cannot"), "{error}");
        assert!(
            eval(r#"error("custom")"#, "{}")
                .unwrap_err()
                .contains("custom")
        );
    }

    #[test]
    fn a_syntax_error_names_its_position() {
        let error = Expr::compile(".a | | .b").unwrap_err();
        assert_eq!(error.offset, 5, "{error:?}");
        let error = Expr::compile(".a | nosuchfn").unwrap_err();
        assert_eq!(error.offset, 5, "{error:?}");
        assert!(error.message.contains("nosuchfn"), "{error:?}");
        assert!(Expr::compile("$nosuchvar").is_err());
    }

    #[test]
    fn unbounded_loops_and_the_environment_are_refused_at_compile_time() {
        for source in [
            "def f: f; f",
            "repeat(.)",
            "last(range(.n))",
            "[.[] | until(false; .)]",
            "recurse(. + 1)",
            "env.HOME",
            "$ENV.HOME",
            r#""\(env)""#,
            "[inputs]",
        ] {
            assert!(Expr::compile(source).is_err(), "{source} compiled");
        }
        for source in ["[..]", "recurse", "limit(3; .[])", r#"{"def": 1}"#] {
            assert!(Expr::compile(source).is_ok(), "{source} refused");
        }
    }
}
