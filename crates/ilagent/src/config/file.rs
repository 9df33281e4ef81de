//! The configuration file (`--config FILE`, or `ILAGENT_CONFIG`): TOML that says what the
//! flags say, by the flags' long names (`kafka_brokers = "localhost:9092"`,
//! `event_topic = ["alarms"]`), plus `[[route]]` tables ([`crate::routes`]).
//!
//! The file fills in what the command line and the environment leave unset: a flag given
//! either way wins over the file, so one `Config` comes out of all three and the flags keep
//! working alone. Each value is checked by the flag's own parser here, so an unknown key or
//! a value of the wrong type fails at start with the file, line and column.
//!
//! A string `env:NAME` is read from the environment variable `NAME`, and `file:/path` from
//! that file (its content, one trailing newline dropped): secrets need never be inline.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::ArgAction;
use toml::Spanned;

use crate::routes::spec::RouteSpec;

/// Where a problem in the file is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct FileError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The file's text, for turning byte spans into lines and columns.
#[derive(Debug, Clone)]
pub struct Located {
    path: PathBuf,
    text: String,
}

impl Located {
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> FileError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        FileError {
            path: self.path.display().to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// How many quote characters open the string value at `span` (1, or 3 for `"""`).
    pub(crate) fn quote_len(&self, span: Range<usize>) -> usize {
        let text = self.text.get(span).unwrap_or_default();
        if text.starts_with("\"\"\"") || text.starts_with("'''") {
            3
        } else {
            1
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A read and checked configuration file.
#[derive(Debug)]
pub struct ConfigFile {
    pub located: Located,
    /// The flags it sets: long name (with where it is written) and value, in the order
    /// written.
    flags: Vec<(Spanned<String>, Spanned<toml::Value>)>,
    routes: Vec<RouteSpec>,
}

/// The `[[route]]` tables (the other keys are the flags, read apart with their spans).
#[derive(serde::Deserialize)]
struct Routes {
    #[serde(default)]
    route: Vec<RouteSpec>,
}

impl ConfigFile {
    /// Reads and parses `path`; the flags are checked by [`ConfigFile::args_for`].
    pub fn read(path: &Path) -> Result<ConfigFile, FileError> {
        let at_start = |message: String| FileError {
            path: path.display().to_string(),
            line: 1,
            column: 1,
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            at_start(format!(
                "cannot read the configuration file ({e}): check --config / ILAGENT_CONFIG"
            ))
        })?;
        let located = Located {
            path: path.to_path_buf(),
            text,
        };
        let parse_error = |e: toml::de::Error| {
            let message = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => located.error(span, message),
                None => at_start(message),
            }
        };
        let top: SpannedTop = toml::from_str(&located.text).map_err(parse_error)?;
        let routes: Routes = toml::from_str(&located.text).map_err(parse_error)?;
        let mut flags: Vec<(Spanned<String>, Spanned<toml::Value>)> = top
            .0
            .into_iter()
            .filter(|(key, _)| key.get_ref() != "route")
            .collect();
        flags.sort_by_key(|(_, v)| v.span().start);
        Ok(ConfigFile {
            located,
            flags,
            routes: routes.route,
        })
    }

    /// The routes as written (compiled with the flag mapping by [`crate::routes`]).
    pub(crate) fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The command-line arguments that say what the file says, for the flags `matches`
    /// (the command line and the environment) left unset: the global flags apart from
    /// the `daemon` flags, whatever the command (`map` and `check` read the mapping flags
    /// from the file too). Each value is checked by its flag's parser.
    pub fn args_for(
        &self,
        command: &clap::Command,
        matches: &clap::ArgMatches,
    ) -> Result<FileArgs, FileError> {
        const DAEMON: &str = "daemon";
        let daemon = command.find_subcommand(DAEMON);
        let daemon_matches = matches.subcommand_matches(DAEMON);
        let mut out = FileArgs::default();
        for (spanned_key, value) in &self.flags {
            let key = spanned_key.get_ref();
            let found = daemon
                .and_then(|d| find_arg(d, key).map(|a| (a, daemon_matches, true)))
                .or_else(|| find_arg(command, key).map(|a| (a, Some(matches), false)));
            let Some((arg, owner_matches, is_daemon)) = found else {
                // At the key: the value is not what is wrong.
                return Err(self.located.error(
                    spanned_key.span(),
                    format!(
                        "unknown key `{key}`: the file takes the long names of the daemon's flags (see `ilagent daemon --help`) and [[route]] tables"
                    ),
                ));
            };
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version" | "config") {
                return Err(self
                    .located
                    .error(value.span(), format!("`{key}` cannot be set in the file")));
            }
            let values = self.values_of(key, value, arg)?;
            for text in &values {
                if let Err(error) = check_value(arg, text) {
                    return Err(self
                        .located
                        .error(value.span(), format!("`{key}`: {}", clap_message(&error))));
                }
            }
            let set_already = owner_matches
                .and_then(|m| m.value_source(id))
                .is_some_and(|source| source != clap::parser::ValueSource::DefaultValue);
            if set_already {
                continue;
            }
            let args = if is_daemon {
                &mut out.daemon
            } else {
                &mut out.global
            };
            let long = arg.get_long().unwrap_or(id);
            match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => {
                    if values.first().is_some_and(|v| v == "true") {
                        args.push(OsString::from(format!("--{long}")));
                    }
                }
                ArgAction::Count => {
                    let times = values
                        .first()
                        .and_then(|v| v.parse::<u8>().ok())
                        .unwrap_or(0);
                    for _ in 0..times {
                        args.push(OsString::from(format!("--{long}")));
                    }
                }
                _ => {
                    for text in values {
                        args.push(OsString::from(format!("--{long}={text}")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// A TOML value as the flag's text values, `env:`/`file:` references read.
    fn values_of(
        &self,
        key: &str,
        value: &Spanned<toml::Value>,
        arg: &clap::Arg,
    ) -> Result<Vec<String>, FileError> {
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), ArgAction::Append);
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let is_count = matches!(arg.get_action(), ArgAction::Count);
        let wrong = |expected: &str| {
            self.located.error(
                value.span(),
                format!(
                    "`{key}` must be {expected}, not {}",
                    type_of(value.get_ref())
                ),
            )
        };
        let scalar = |v: &toml::Value| -> Result<String, FileError> {
            match v {
                toml::Value::String(s) => resolve(s)
                    .map_err(|m| self.located.error(value.span(), format!("`{key}`: {m}"))),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(wrong("a string or a number")),
            }
        };
        match value.get_ref() {
            toml::Value::Boolean(b) if is_switch => Ok(vec![b.to_string()]),
            _ if is_switch => Err(wrong("true or false")),
            toml::Value::Integer(i) if is_count => Ok(vec![i.to_string()]),
            _ if is_count => Err(wrong("a number")),
            toml::Value::Array(items) if many => items.iter().map(scalar).collect(),
            toml::Value::Array(_) => Err(wrong("a single value")),
            other => Ok(vec![scalar(other)?]),
        }
    }
}

/// The file's flags as arguments: the global ones, and the daemon's.
#[derive(Debug, Default, Clone)]
pub struct FileArgs {
    pub global: Vec<OsString>,
    pub daemon: Vec<OsString>,
}

/// Top-level keys with their spans.
#[derive(serde::Deserialize)]
struct SpannedTop(std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>);

/// `env:NAME` and `file:PATH` read; any other string as it is.
pub(crate) fn resolve(text: &str) -> Result<String, String> {
    if let Some(name) = text.strip_prefix("env:") {
        return std::env::var(name)
            .map_err(|_| format!("`env:{name}`: the environment variable {name} is not set"));
    }
    if let Some(path) = text.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
            .map_err(|e| format!("`file:{path}`: cannot read it ({e})"));
    }
    Ok(text.to_string())
}

/// Runs the flag's own parser on one value, through a command that has only that flag.
fn check_value(arg: &clap::Arg, text: &str) -> Result<(), clap::Error> {
    let switch = matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    );
    if switch {
        return Ok(());
    }
    let long = arg.get_long().unwrap_or(arg.get_id().as_str());
    clap::Command::new("ilagent")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(arg.clone().required(false).global(false))
        .try_get_matches_from([format!("--{long}={text}")])
        .map(|_| ())
}

fn find_arg<'c>(command: &'c clap::Command, key: &str) -> Option<&'c clap::Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(key)
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&key))
    })
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn type_of(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}
