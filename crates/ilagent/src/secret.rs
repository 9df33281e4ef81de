//! A string that must never be shown in full: integration keys, API keys, passwords.
//!
//! Logs, metrics and error messages only ever see a short prefix (`il1api12…`), so a
//! pasted log line cannot leak a credential. The full value is reachable only through
//! [`Secret::expose`], which makes every place that puts a secret on the wire easy to find.

use std::fmt;

/// A credential. `Debug` and `Display` show a short prefix only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The full value, for the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The part that may be shown: at most 8 characters, and never more than a quarter
    /// of the value, so short secrets reveal almost nothing.
    pub fn prefix(&self) -> String {
        let len = self.0.chars().count();
        let shown = (len / 4).min(8);
        let mut prefix: String = self.0.chars().take(shown).collect();
        prefix.push('…');
        prefix
    }
}

/// `text` (a URL as the user typed it, valid or not) with any password in its user info
/// masked: `https://user:****@host`. A user info without a password may be a token, so it
/// is masked whole.
///
/// A URL that parses is read as the URL standard reads it, so an `@` in its path stays.
/// One that does not (or has no host) may hold a password the parser never got to, with
/// a `/`, `?` or `#` in it, or no scheme before it: everything up to its last `@` is
/// taken for the user info.
pub fn mask_url_credentials(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let at = match reqwest::Url::parse(text.trim()) {
        Ok(url) if url.has_host() => {
            if url.username().is_empty() && url.password().is_none() {
                return text.to_string();
            }
            let authority_end = text[start..]
                .find(['/', '?', '#', '\\'])
                .map_or(text.len(), |i| start + i);
            text[start..authority_end].rfind('@')
        }
        _ => text[start..].rfind('@'),
    };
    let Some(at) = at else {
        return text.to_string();
    };
    let user_info = &text[start..start + at];
    let masked = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:****"),
        None => "****".to_string(),
    };
    format!("{}{masked}{}", &text[..start], &text[start + at..])
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.prefix())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_valid_or_not() {
        assert_eq!(
            mask_url_credentials("https://user:hunter2@api.ilert.com/x"),
            "https://user:****@api.ilert.com/x"
        );
        assert_eq!(
            mask_url_credentials("https://tok3n@ho st"),
            "https://****@ho st"
        );
        assert_eq!(
            mask_url_credentials("https://api.ilert.com/a@b"),
            "https://api.ilert.com/a@b"
        );
        assert_eq!(mask_url_credentials("not a url"), "not a url");
    }

    #[test]
    fn a_password_the_url_parser_never_reached_is_masked_too() {
        for (text, shown) in [
            ("https://user:pa/ss@host:x", "https://user:****@host:x"),
            ("https://user:pa?ss@host:x", "https://user:****@host:x"),
            ("https://user:pa#ss@host:x", "https://user:****@host:x"),
            ("https://user:pass@", "https://user:****@"),
            ("user:pass@api.ilert.com", "user:****@api.ilert.com"),
            (
                " https://user:pass@exa mple.com/x",
                " https://user:****@exa mple.com/x",
            ),
            ("ftp://user:pass@host", "ftp://user:****@host"),
        ] {
            assert_eq!(mask_url_credentials(text), shown, "{text}");
        }
    }

    #[test]
    fn display_and_debug_show_only_a_short_prefix() {
        let key = Secret::new("il1api1234567890abcdef1234567890");
        assert_eq!(key.to_string(), "il1api12…");
        assert_eq!(format!("{key:?}"), "Secret(il1api12…)");
        assert!(!format!("{key} {key:?}").contains("1234567890abcdef"));
    }

    #[test]
    fn short_secrets_reveal_at_most_a_quarter() {
        assert_eq!(Secret::new("hunter2").to_string(), "h…");
        assert_eq!(Secret::new("abc").to_string(), "…");
        assert_eq!(Secret::new("").to_string(), "…");
    }

    #[test]
    fn expose_returns_the_full_value() {
        assert_eq!(Secret::new("il1hbt0001").expose(), "il1hbt0001");
    }
}
