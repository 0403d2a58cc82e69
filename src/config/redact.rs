//! Secrets kept out of error snippets: which lines of the file may hold a secret (never shown), and how a
//! shown line is redacted (a literal `value:` and the credentials of a URL).

use std::collections::HashSet;

/// What a YAML or type error on a line that may hold a secret says instead of serde's own message.
pub(super) const SECRET_ENTRY_PROBLEM: &str = "this secrets, headers or store key entry cannot be read (its text is not shown: it may be a secret); each secret, each header's value and each part of a store's REST key is one of env (a variable), file (a path) or value (the secret itself), as in config.example.yaml";

/// The (1-based) numbers of the lines never shown in an error, because they may hold a secret:
/// - every line of a `secrets` block (its entries, however they are written: `- "value": x`, `- {value: x}`,
///   `- "x"`), except a plain `value:` line, which is shown as `value: <redacted>`;
/// - every line of a route's `headers` block, whose values are secrets too (and whose names could be, if
///   a credential was written in the wrong place), and of a store's `consumer_key` and `consumer_secret`;
/// - a `value` key written any other way (quoted, `value :`, in a flow mapping), wherever it is;
/// - the lines that continue a secret: a block scalar, a scalar folded over several lines, and a quoted
///   scalar up to its closing quote, whatever its indentation.
pub(super) fn secret_lines(text: &str) -> HashSet<usize> {
    let mut hidden = HashSet::new();
    // The column of a `secrets` or `headers` key whose block is being read (and whether its plain `value:`
    // lines are hidden too), and of a `value` key whose scalar may go on.
    let mut secrets_column: Option<(usize, bool)> = None;
    let mut value_column: Option<usize> = None;
    let mut open_quote: Option<u8> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(quote) = open_quote {
            hidden.insert(number);
            if closing_quote(line.as_bytes(), quote).is_some() {
                open_quote = None;
            }
            continue;
        }
        let indentation = line.len() - line.trim_start().len();
        let blank = line.trim().is_empty() || line.trim_start().starts_with('#');
        if let Some(column) = value_column {
            // A comment at the key's indentation or less ends a scalar; an empty line does not.
            if line.trim().is_empty() || indentation > column {
                hidden.insert(number);
                continue;
            }
            value_column = None;
        }
        if let Some((column, _)) = secrets_column {
            let inside = blank || indentation > column || (indentation == column && line.trim_start().starts_with('-'));
            if !inside {
                secrets_column = None;
            }
        }
        if let Some((at, rest, every_line)) = secret_block_at(line) {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                hidden.insert(number);
            }
            secrets_column = Some((at, every_line));
        }
        let plain_value = line.contains("value:");
        if let Some((at, rest)) = key_at(line, "value") {
            value_column = Some(at);
            let rest = rest.trim_start();
            if let Some(&quote @ (b'"' | b'\'')) = rest.as_bytes().first()
                && closing_quote(&rest.as_bytes()[1..], quote).is_none()
            {
                open_quote = Some(quote);
                hidden.insert(number);
                continue;
            }
            if !plain_value {
                hidden.insert(number);
            }
        }
        let every_line = secrets_column.is_some_and(|(_, every_line)| every_line);
        if secrets_column.is_some() && (!plain_value || every_line) && !blank && secret_block_at(line).is_none() {
            hidden.insert(number);
        }
    }
    hidden
}

/// Where a block of secrets starts on `line`, what follows its key, and whether every line of it is hidden:
/// a source's `secrets` (whose plain `value:` lines are shown redacted), or a route's `headers` (every line).
fn secret_block_at(line: &str) -> Option<(usize, &str, bool)> {
    if let Some((at, rest)) = key_at(line, "secrets") {
        return Some((at, rest, false));
    }
    // A store's REST key: both parts are secrets, written like one (`consumer_secret: { value: ... }`).
    ["headers", "consumer_key", "consumer_secret"]
        .into_iter()
        .find_map(|key| key_at(line, key))
        .map(|(at, rest)| (at, rest, true))
}

/// Where `key` stands as a mapping key on `line` (bare or quoted, with or without spaces before the
/// colon, at the start of a line, after `- `, or in a flow mapping): the column where it starts, and what
/// follows the colon.
pub(super) fn key_at<'a>(line: &'a str, key: &str) -> Option<(usize, &'a str)> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(found) = line[from..].find(key).map(|i| from + i) {
        from = found + key.len();
        let (mut start, mut end) = (found, found + key.len());
        if start > 0 && matches!(bytes[start - 1], b'"' | b'\'') {
            start -= 1;
            if bytes.get(end) != Some(&bytes[start]) {
                continue;
            }
            end += 1;
        }
        let before_ok = start == 0 || matches!(bytes[start - 1], b' ' | b'\t' | b'{' | b',' | b'-' | b'[');
        let after = line[end..].trim_start_matches([' ', '\t']);
        if before_ok && let Some(rest) = after.strip_prefix(':') {
            return Some((start, rest));
        }
    }
    None
}

/// Where the quote that closes a quoted scalar is, in what follows its opening quote.
fn closing_quote(bytes: &[u8], quote: u8) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A snippet line as serde-saphyr renders it (`  9 | text`), hidden when it continues a secret. A line of
/// the file that holds a secret or credentials is shown redacted from the file's own text: serde-saphyr
/// crops long lines around the error's column (`…lue: "s3cret"`), and a cropped line may have lost the
/// `value:` or `://` that marks what to hide.
pub(super) fn redact_snippet_line(line: &str, hidden: &HashSet<usize>, original: &[&str]) -> String {
    let (gutter, _) = line.split_once('|').unwrap_or((line, ""));
    let number = gutter.trim().parse::<usize>().ok();
    match number {
        Some(number) if hidden.contains(&number) => format!("{gutter}| <redacted>"),
        Some(number) => match number.checked_sub(1).and_then(|index| original.get(index)) {
            Some(text) if redact_line(text) != *text => format!("{gutter}| {}", redact_line(text)),
            _ => redact_line(line),
        },
        None => redact_line(line),
    }
}

/// A line of the config file as shown in an error: a literal secret (`value: ...`) and the credentials of a
/// URL (`://user:password@`) are replaced, so no error message shows a secret.
pub(super) fn redact_line(line: &str) -> String {
    let mut line = match line.find("value:") {
        Some(at) => format!("{} <redacted>", &line[..at + "value:".len()]),
        None => line.to_owned(),
    };
    let mut from = 0;
    while let Some(scheme) = line[from..].find("://").map(|i| from + i + 3) {
        let authority_end = line[scheme..].find(['/', '?', '#', ' ', '"', '\'']).map_or(line.len(), |i| scheme + i);
        if let Some(at) = line[scheme..authority_end].rfind('@') {
            line.replace_range(scheme..scheme + at, "<redacted>");
        }
        from = scheme.min(line.len());
    }
    line
}
