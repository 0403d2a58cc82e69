//! Which topic patterns can match a topic WooCommerce sends, and for one that cannot, the nearest that can.
//! A store's plugins may send topics of their own, so such a pattern is allowed; but a typo in a route
//! (`orders.created`) would otherwise take no delivery and say nothing, and `hookgate check` warns instead.

use super::TopicPattern;
use crate::woocommerce::{ACTION_TOPIC_PREFIXES, RESOURCE_TOPICS, RESOURCES};

/// The events of [`RESOURCE_TOPICS`], for patterns such as `*.deleted`.
const EVENTS: [&str; 5] = ["created", "updated", "deleted", "restored", "published"];

/// A suggestion is made only this close (in single-character edits or swaps): further away, a guess is
/// more likely to mislead than help.
const MAX_SUGGESTION_DISTANCE: usize = 2;

impl TopicPattern {
    /// True when some topic WooCommerce sends matches the pattern: one of [`RESOURCE_TOPICS`], or an action
    /// topic under one of [`ACTION_TOPIC_PREFIXES`].
    pub fn matches_a_woocommerce_topic(&self) -> bool {
        RESOURCE_TOPICS.iter().any(|topic| self.matches(topic))
            || ACTION_TOPIC_PREFIXES.iter().any(|prefix| globs_intersect(self.text.as_bytes(), &action_glob(prefix)))
    }

    /// For a pattern that matches no WooCommerce topic, the nearest one that does, when one is close: the
    /// same in lower case, `resource.*` for a bare resource (`order`, `orders`), `*.event` for a bare event,
    /// or else the WooCommerce topic or glob at most [`MAX_SUGGESTION_DISTANCE`] edits away. No action hook
    /// is guessed at: `action.save_post` is not WooCommerce's to send under another name.
    pub fn nearest_woocommerce_pattern(&self) -> Option<String> {
        let text = self.text.to_ascii_lowercase();
        let matches = |text: &str| TopicPattern { text: text.to_owned() }.matches_a_woocommerce_topic();
        if text != self.text && matches(&text) {
            return Some(text);
        }
        if !text.contains(['.', '*']) {
            let singular = text.strip_suffix('s').unwrap_or(&text);
            if RESOURCES.contains(&singular) || singular == "action" {
                return Some(format!("{singular}.*"));
            }
            if EVENTS.contains(&text.as_str()) {
                return Some(format!("*.{text}"));
            }
        }
        let globs = RESOURCES.iter().chain(&["action"]).map(|resource| format!("{resource}.*"));
        let candidates =
            RESOURCE_TOPICS.iter().map(|t| t.to_string()).chain(globs).chain(EVENTS.map(|e| format!("*.{e}")));
        candidates
            .map(|candidate| (edit_distance(text.as_bytes(), candidate.as_bytes()), candidate))
            .filter(|(distance, _)| *distance <= MAX_SUGGESTION_DISTANCE)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, candidate)| candidate)
    }
}

/// The glob of every action topic under `prefix`.
fn action_glob(prefix: &str) -> Vec<u8> {
    let mut glob = prefix.as_bytes().to_vec();
    glob.push(b'*');
    glob
}

/// True when some text matches both globs (`*` is any run of characters, in either).
fn globs_intersect(a: &[u8], b: &[u8]) -> bool {
    // common[i][j]: the rest of `a` from i and the rest of `b` from j match a text in common.
    let mut common = vec![vec![false; b.len() + 1]; a.len() + 1];
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            common[i][j] = match (a.get(i), b.get(j)) {
                (None, None) => true,
                // A star matches nothing, or takes the other side's next character (or star) into its run.
                (Some(b'*'), other) => common[i + 1][j] || (other.is_some() && common[i][j + 1]),
                (other, Some(b'*')) => common[i][j + 1] || (other.is_some() && common[i + 1][j]),
                (Some(x), Some(y)) => x == y && common[i + 1][j + 1],
                _ => false,
            };
        }
    }
    common[0][0]
}

/// The optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`craeted`) each count one.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut distance = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in distance.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in distance[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (distance[i - 1][j] + 1).min(distance[i][j - 1] + 1).min(distance[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(distance[i - 2][j - 2] + 1);
            }
            distance[i][j] = best;
        }
    }
    distance[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TopicPattern {
        TopicPattern::parse(text).unwrap()
    }

    #[test]
    fn what_woocommerce_sends_is_matched() {
        for text in ["order.created", "order.*", "*.deleted", "*", "product.published", "action.*", "*add_to_cart"] {
            assert!(pattern(text).matches_a_woocommerce_topic(), "{text}");
        }
        for text in ["action.woocommerce_add_to_cart", "action.wc_custom_hook", "action.woo*", "*.wc_*"] {
            assert!(pattern(text).matches_a_woocommerce_topic(), "{text}");
        }
        for text in ["orders.created", "order", "customer.restored", "order.published", "action.save_post", "invoice.*"]
        {
            assert!(!pattern(text).matches_a_woocommerce_topic(), "{text}");
        }
    }

    #[test]
    fn the_nearest_pattern_is_suggested_when_one_is_close() {
        let nearest = |text: &str| pattern(text).nearest_woocommerce_pattern();
        assert_eq!(nearest("orders.created").as_deref(), Some("order.created"));
        assert_eq!(nearest("order.craeted").as_deref(), Some("order.created"), "a swap is one edit");
        assert_eq!(nearest("Order.Created").as_deref(), Some("order.created"));
        assert_eq!(nearest("order").as_deref(), Some("order.*"));
        assert_eq!(nearest("orders").as_deref(), Some("order.*"));
        assert_eq!(nearest("products").as_deref(), Some("product.*"));
        assert_eq!(nearest("deleted").as_deref(), Some("*.deleted"));
        assert_eq!(nearest("orders.*").as_deref(), Some("order.*"));
        assert_eq!(nearest("coupon.update").as_deref(), Some("coupon.updated"));
        assert_eq!(nearest("actions").as_deref(), Some("action.*"));
        assert_eq!(nearest("action.save_post"), None, "a hook WooCommerce does not send is not guessed at");
        assert_eq!(nearest("invoice.paid"), None, "nothing close: no guess");
        assert_eq!(nearest("customer.restored"), None);
    }

    #[test]
    fn globs_intersect_when_some_text_matches_both() {
        let intersect = |a: &str, b: &str| globs_intersect(a.as_bytes(), b.as_bytes());
        assert!(intersect("order.*", "*.created"));
        assert!(intersect("*", "action.wc_*"));
        assert!(intersect("a*c", "ab*"));
        assert!(intersect("*x*", "*y*"));
        assert!(!intersect("order.*", "coupon.*"));
        assert!(!intersect("a*b", "c*"));
        assert!(!intersect("ab", "abc*d"));
    }
}
