//! Topic patterns: exact topics (`order.created`) or globs where `*` stands for any run of characters
//! (`order.*`, `*.deleted`, `action.*`, `*`).

use std::fmt;

/// The longest topic accepted from a request; WooCommerce's own are far shorter.
pub const MAX_TOPIC_BYTES: usize = 200;

/// A compiled topic pattern. Matching allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
}

impl TopicPattern {
    /// Compiles a pattern: letters, digits, `_`, `-`, `.` and the wildcard `*`.
    pub fn parse(text: &str) -> Result<TopicPattern, String> {
        if text.is_empty() {
            return Err(
                "a topic pattern is empty: write a topic such as \"order.created\" or a glob such as \"order.*\""
                    .into(),
            );
        }
        if let Some(bad) = text.chars().find(|&c| !(is_topic_char(c as u32) || c == '*')) {
            return Err(format!(
                "topic pattern {text:?} holds {bad:?}: only letters, digits, '_', '-', '.' and the wildcard '*' are allowed"
            ));
        }
        Ok(TopicPattern { text: text.to_owned() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when `topic` matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        glob_match(self.text.as_bytes(), topic.as_bytes(), |_| true)
    }

    /// True when every topic `other` matches is matched by `self` too (used to warn about hidden routes).
    /// A wildcard of `other` can only be covered by a wildcard of `self`, which makes the answer exact for
    /// the patterns people write and never claims a cover that does not hold.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        glob_match(self.text.as_bytes(), other.text.as_bytes(), |b| b != b'*')
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// Whether a byte may appear in a topic: WooCommerce topics are `resource.event` or `action.<hook name>`,
/// made of letters, digits, `_`, `-` and `.`.
fn is_topic_char(c: u32) -> bool {
    char::from_u32(c).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// True when a request's topic header is one a pattern could ever match: 1 to [`MAX_TOPIC_BYTES`] topic
/// characters. Anything else is refused before routing (and never logged as is).
pub fn is_valid_topic(topic: &[u8]) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && topic.iter().all(|&b| is_topic_char(u32::from(b)))
}

/// Glob matching with `*` in the pattern, in linear time (the classic two-pointer backtrack).
/// `literal_matches(b)` says whether a literal pattern byte may match the text byte `b` at all.
fn glob_match(pattern: &[u8], text: &[u8], literal_matches: impl Fn(u8) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] && literal_matches(text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TopicPattern {
        TopicPattern::parse(text).unwrap()
    }

    #[test]
    fn exact_topics_match_only_themselves() {
        assert!(pattern("order.created").matches("order.created"));
        assert!(!pattern("order.created").matches("order.created2"));
        assert!(!pattern("order.created").matches("order.update"));
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(pattern("order.*").matches("order.updated"));
        assert!(!pattern("order.*").matches("orders.updated"));
        assert!(pattern("*.deleted").matches("coupon.deleted"));
        assert!(!pattern("*.deleted").matches("coupon.deleted.x"));
        assert!(pattern("action.*").matches("action.woocommerce_add_to_cart"));
        assert!(pattern("*").matches("anything.at_all"));
        assert!(pattern("a*b*c").matches("axxbyyc"));
        assert!(!pattern("a*b*c").matches("axxbyy"));
        assert!(pattern("order.*").matches("order."));
    }

    #[test]
    fn refuses_bad_patterns() {
        assert!(TopicPattern::parse("").is_err());
        assert!(TopicPattern::parse("order.?").unwrap_err().contains("'?'"));
        assert!(TopicPattern::parse("order created").is_err());
    }

    #[test]
    fn coverage_between_patterns() {
        assert!(pattern("*").covers(&pattern("order.*")));
        assert!(pattern("order.*").covers(&pattern("order.created")));
        assert!(pattern("order.*").covers(&pattern("order.up*")));
        assert!(!pattern("order.created").covers(&pattern("order.*")));
        assert!(!pattern("order.*").covers(&pattern("*.deleted")));
        assert!(!pattern("*.deleted").covers(&pattern("order.*")));
    }

    #[test]
    fn topic_headers_are_checked() {
        assert!(is_valid_topic(b"action.woocommerce_add_to_cart"));
        assert!(!is_valid_topic(b""));
        assert!(!is_valid_topic(b"order created"));
        assert!(!is_valid_topic(b"order.*"));
        assert!(!is_valid_topic(&[b'a'; MAX_TOPIC_BYTES + 1]));
    }
}
