//! Webhook secrets: kept out of logs, zeroed when dropped, decoded the way WooCommerce decodes them, and
//! resolved from where they are kept (an environment variable, a file or the value itself) by one function
//! that the configuration and `hookgate sign` share.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// A webhook secret's bytes. Its `Debug` and `Display` print a redaction, and the bytes are zeroed on drop,
/// so a secret cannot end up in a log line or an error message by accident.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps the bytes of a secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The raw bytes, for keying an HMAC. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as a shared buffer, without a copy: every clone of it refers to the same memory, which is
    /// zeroed when the last one is dropped (a header value made from a secret, sent on many requests).
    pub fn into_shared_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.0)
    }

    /// True when the secret holds no byte at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key WooCommerce signs with when this secret is stored: `wp_specialchars_decode($secret, ENT_QUOTES)`.
    /// `None` when decoding changes nothing, so callers need not try the same key twice.
    pub fn entity_decoded(&self) -> Option<Secret> {
        wp_specialchars_decode(&self.0).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret is kept. A literal value is held as a [`Secret`], so even this is never printed.
#[derive(Debug, Clone)]
pub enum SecretOrigin {
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret; one trailing newline is not part of it.
    File(PathBuf),
    /// The secret itself.
    Value(Secret),
}

/// Why a secret could not be resolved. The messages say where it was looked for, never what it holds.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    /// The file cannot be read.
    #[error("cannot read secret file {}: {error}", path.display())]
    Unreadable {
        /// The file, as given.
        path: PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// The secret has no byte at all (after the file's trailing newline is removed).
    #[error("the secret is empty: WooCommerce never signs with an empty secret")]
    Empty,
}

/// Reads the secret kept at `origin`. It is never empty: WooCommerce never signs with an empty secret, so
/// an empty one is a mistake (an unset value, an empty file) and is refused.
pub fn resolve(origin: &SecretOrigin) -> Result<Secret, ResolveError> {
    let secret = match origin {
        SecretOrigin::Env(var) => {
            let value = std::env::var_os(var).ok_or_else(|| ResolveError::EnvUnset(var.clone()))?;
            Secret::new(value.into_encoded_bytes())
        }
        SecretOrigin::File(path) => {
            let mut bytes =
                std::fs::read(path).map_err(|error| ResolveError::Unreadable { path: path.clone(), error })?;
            strip_one_newline(&mut bytes);
            Secret::new(bytes)
        }
        SecretOrigin::Value(secret) => secret.clone(),
    };
    if secret.is_empty() {
        return Err(ResolveError::Empty);
    }
    Ok(secret)
}

/// Removes one trailing newline (`\n` or `\r\n`) from a secret read from a file: files written by `echo`
/// or an editor end with one, and it is not part of the secret.
fn strip_one_newline(bytes: &mut Vec<u8>) {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
}

/// WordPress's `wp_specialchars_decode($text, ENT_QUOTES)`, which WooCommerce applies to a stored secret
/// before it keys the HMAC.
///
/// WordPress first normalises numeric spellings (`&#39;`, `&#0039;`, `&#x27;`, ...) and then decodes in a
/// single `strtr` pass, so `&amp;lt;` becomes `&lt;`, not `<`. Only these entities are decoded:
/// `&amp; &lt; &gt; &quot;` and the numeric forms of `' " < > &` listed in WordPress's source; any other
/// entity is left as written. Returns `None` when the text holds nothing to decode.
pub fn wp_specialchars_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'&') {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'&'
            && let Some((decoded, consumed)) = decode_entity(rest)
        {
            out.push(decoded);
            rest = &rest[consumed..];
            changed = true;
            continue;
        }
        out.push(first);
        rest = tail;
    }
    changed.then_some(out)
}

/// Decodes one entity at the start of `text` (which starts with `&`): the byte it stands for and how many
/// bytes it spans.
fn decode_entity(text: &[u8]) -> Option<(u8, usize)> {
    const NAMED: [(&[u8], u8); 4] = [(b"&amp;", b'&'), (b"&lt;", b'<'), (b"&gt;", b'>'), (b"&quot;", b'"')];
    for (name, byte) in NAMED {
        if text.starts_with(name) {
            return Some((byte, name.len()));
        }
    }
    let numeric = text.strip_prefix(b"&#")?;
    let (hex, digits_start) = match numeric.first() {
        Some(b'x' | b'X') => (true, 3),
        _ => (false, 2),
    };
    let after_marker = &text[digits_start..];
    let zeros = after_marker.iter().take_while(|&&b| b == b'0').count();
    let significant = &after_marker[zeros..];
    // WordPress's patterns: decimal &#0*39; &#0*34; &#0*60; &#0*62; &#0*38; and hex &#x0*27; &#x0*22; &#x0*26;.
    let table: &[(&[u8], u8)] = if hex {
        &[(b"27;", b'\''), (b"22;", b'"'), (b"26;", b'&')]
    } else {
        &[(b"39;", b'\''), (b"34;", b'"'), (b"60;", b'<'), (b"62;", b'>'), (b"38;", b'&')]
    };
    table
        .iter()
        .find(|(digits, _)| significant.starts_with(digits))
        .map(|(digits, byte)| (*byte, digits_start + zeros + digits.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> String {
        String::from_utf8(wp_specialchars_decode(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec())).unwrap()
    }

    #[test]
    fn decodes_the_entities_wordpress_decodes() {
        assert_eq!(decode("abc&amp;def&quot;ghi"), "abc&def\"ghi");
        assert_eq!(decode("&lt;&gt;&#039;&#39;&#x27;&#X27;&#0000039;"), "<>'''''");
        assert_eq!(decode("&#34;&#x22;&#60;&#62;&#38;&#x26;"), "\"\"<>&&");
    }

    #[test]
    fn decodes_in_one_pass_like_strtr() {
        assert_eq!(decode("&amp;lt;"), "&lt;");
        assert_eq!(decode("&amp;amp;"), "&amp;");
    }

    #[test]
    fn leaves_other_entities_and_stray_ampersands_alone() {
        assert_eq!(decode("&nbsp;&#x3c;&#3c;&apos;a&b&"), "&nbsp;&#x3c;&#3c;&apos;a&b&");
        assert!(wp_specialchars_decode(b"no entity & here").is_none());
        assert!(wp_specialchars_decode(b"plain").is_none());
    }

    #[test]
    fn resolves_from_a_file_without_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("hookgate-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        let from_file = |text: &str| {
            std::fs::write(&file, text).unwrap();
            resolve(&SecretOrigin::File(file.clone()))
        };
        assert_eq!(from_file("abc\r\n").unwrap().expose(), b"abc");
        assert_eq!(from_file("abc\n\n").unwrap().expose(), b"abc\n");
        assert!(matches!(from_file("\n"), Err(ResolveError::Empty)));
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = resolve(&SecretOrigin::File(file.clone())).unwrap_err().to_string();
        assert!(missing.starts_with(&format!("cannot read secret file {}: ", file.display())), "{missing}");
    }

    #[test]
    fn refuses_an_unset_variable_and_an_empty_value() {
        let unset = resolve(&SecretOrigin::Env("HOOKGATE_TEST_SURELY_UNSET_VARIABLE".into())).unwrap_err();
        assert_eq!(unset.to_string(), "environment variable HOOKGATE_TEST_SURELY_UNSET_VARIABLE is not set");
        assert!(matches!(resolve(&SecretOrigin::Value(Secret::new(Vec::new()))), Err(ResolveError::Empty)));
        assert_eq!(resolve(&SecretOrigin::Value(Secret::new(b"k".to_vec()))).unwrap().expose(), b"k");
    }

    #[test]
    fn never_prints_the_secret() {
        let secret = Secret::new(b"hunter2".to_vec());
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
    }
}
