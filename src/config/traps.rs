//! YAML traps in a secret's `value:`, read from the file's text (serde sees only what YAML made of it): a
//! plain value that YAML cuts short or reads as something else is parsed without an error, and a value
//! that YAML refuses gets a message about quoting instead of the parser's own. Nothing here ever shows
//! the value.

use std::path::Path;

use super::redact::key_at;

/// What a YAML error on a line with an unquoted `value:` says instead of the parser's message (which may
/// quote a character of the secret, and says nothing of the fix).
pub(super) const UNQUOTED_VALUE_PROBLEM: &str = "this secret's value cannot be read as written (not shown: it is the secret): unquoted, YAML gives a meaning to some characters (& starts an anchor, * an alias, ! a tag, | and > a block, [ and { a list or a mapping, \": \" a key, \" #\" a comment; @, ` and % are reserved) and an empty value is no string; write the secret in single quotes, '...' (a ' inside is written '')";

/// The unquoted scalar a `value:` key holds on `line`, when the line has one: `None` for a line without a
/// `value` key, a quoted value, a value in a flow mapping (`{value: x}`) and a value on the lines below
/// (a block scalar or an empty value).
fn unquoted_value(line: &str) -> Option<&str> {
    let rest = unquoted_value_or_empty(line)?;
    // A block scalar's header (`>-`, `|`) may carry a comment: the value is on the lines below.
    (!rest.is_empty() && !rest.starts_with(['|', '>'])).then_some(rest)
}

/// What follows `value:` on `line` when it is not quoted (empty when nothing follows), outside comments and
/// flow mappings.
fn unquoted_value_or_empty(line: &str) -> Option<&str> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let (at, rest) = key_at(line, "value")?;
    if line[..at].trim_end().ends_with(['{', ',', '[']) {
        return None;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    (!rest.starts_with(['"', '\''])).then_some(rest)
}

/// Whether `line` holds a `value:` whose value is written unquoted (empty included): a YAML error on it is
/// about how the secret is written.
pub(super) fn is_unquoted_value_line(line: &str) -> bool {
    unquoted_value_or_empty(line).is_some()
}

/// Warnings, each with its file and line, about unquoted secret values that YAML parses into something
/// other than what is written: cut at ` #` (the rest is a comment) or led by `&` or `!` (an anchor or a
/// tag, dropped from the value).
pub(super) fn secret_value_warnings(file: &Path, text: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(value) = unquoted_value(line) else { continue };
        let place = format!("{}:{}", file.display(), index + 1);
        if value.starts_with(['&', '!']) {
            warnings.push(format!(
                "{place}: this secret's value starts with & or !, which YAML reads as an anchor or a tag and leaves out of the secret: quote the value, value: '...' (a ' inside is written '')"
            ));
        } else if value.contains(" #") || value.contains("\t#") {
            warnings.push(format!(
                "{place}: this secret's value is unquoted and holds \" #\": YAML ends the value there and reads the rest as a comment, so the secret is cut short; if the # belongs to the secret, quote the value, value: '...'; if it is a comment, quote the value before it to silence this warning"
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(line: &str) -> Vec<String> {
        secret_value_warnings(Path::new("c.yaml"), &format!("secrets:\n{line}\n"))
    }

    #[test]
    fn a_value_cut_by_a_comment_or_led_by_an_anchor_is_warned_about_without_showing_it() {
        for line in ["  - value: SA #SB", "  - value: SA\t#SB", "  - value: &SA SB", "  - value: !SA SB"] {
            let found = warnings(line);
            assert_eq!(found.len(), 1, "{line:?}: {found:?}");
            assert!(found[0].starts_with("c.yaml:2: this secret's value"), "{}", found[0]);
            for part in ["SA", "SB"] {
                assert!(!found[0].contains(part), "the warning shows the secret: {}", found[0]);
            }
        }
    }

    #[test]
    fn quoted_values_comments_after_them_and_other_keys_are_no_trap() {
        for line in [
            "  - value: \"abc #def\"",
            "  - value: 'abc' # the old one",
            "  - value: abc#def",
            "  - {value: abc}",
            "  - env: VAR # rotated monthly",
            "  - file: /run/secrets/x # mounted",
            "  - value: >- # folded",
            "  - value:",
            "  # - value: abc #def",
        ] {
            assert!(warnings(line).is_empty(), "{line:?}: {:?}", warnings(line));
        }
    }

    #[test]
    fn an_unquoted_value_line_is_told_apart_from_a_quoted_one() {
        assert!(is_unquoted_value_line("      - value: &pss"));
        assert!(is_unquoted_value_line("      - value:"));
        assert!(!is_unquoted_value_line("      - value: '&pss'"));
        assert!(!is_unquoted_value_line("      - {value: x}"));
        assert!(!is_unquoted_value_line("      - env: X"));
    }
}
