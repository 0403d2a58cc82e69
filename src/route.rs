//! Routing: topic patterns, exact topics (`order.created`) or globs where `*` stands for any run of
//! characters (`order.*`, `*.deleted`, `action.*`, `*`); the routes built from them; and the lookups a
//! delivery takes (the first route that takes it in proxy mode, every one in queue mode). `known` says
//! which patterns can match a topic WooCommerce sends.

mod known;

use std::fmt;
use std::time::Duration;

use crate::upstream::{UpstreamClient, UpstreamHeaders};

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

/// A rule sending deliveries of some topics to one upstream.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name, used in logs and forwarded headers.
    pub name: String,
    /// When set, only deliveries from this source take the route.
    pub source: Option<String>,
    /// The topics taken, as exact topics or globs.
    pub topics: Vec<TopicPattern>,
    /// Where the delivery is POSTed.
    pub upstream: http::Uri,
    /// How long the upstream has to answer in full.
    pub timeout: Duration,
    /// The route's own pooled client when it has `tls` settings (a private CA, a client certificate),
    /// built when the configuration is loaded, so that a reload reads the files again; `None`: the client
    /// every other route shares.
    pub client: Option<UpstreamClient>,
    /// Headers added to every request to the upstream (`headers`), their values secrets.
    pub headers: UpstreamHeaders,
}

impl Route {
    /// True when a delivery from `source` with `topic` takes this route.
    pub fn matches(&self, source: &str, topic: &str) -> bool {
        self.source.as_deref().is_none_or(|s| s == source) && self.topics.iter().any(|p| p.matches(topic))
    }

    /// True when this route takes every delivery `later` would take, so that `later`, coming after it, never
    /// wins in proxy mode. `only_source` is the configuration's source when it has exactly one.
    pub fn hides(&self, later: &Route, only_source: Option<&str>) -> bool {
        let sources_covered = match (&self.source, &later.source) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            // A route for every source takes no more than one for the only source there is.
            (Some(a), None) => only_source == Some(a.as_str()),
        };
        sources_covered && later.topics.iter().all(|t| self.topics.iter().any(|e| e.covers(t)))
    }
}

/// The configured routes in file order, with the lookups a delivery takes: proxy mode sends it to the
/// first route that takes it, queue mode to every one.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Route>);

impl Routes {
    /// The first route, in file order, that takes a delivery from `source` with `topic` (proxy mode).
    pub fn first(&self, source: &str, topic: &str) -> Option<&Route> {
        self.0.iter().find(|r| r.matches(source, topic))
    }

    /// Every route that takes a delivery from `source` with `topic`, in file order (queue mode's fan-out).
    pub fn matching<'a>(&'a self, source: &'a str, topic: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.0.iter().filter(move |r| r.matches(source, topic))
    }

    /// The route with this name.
    pub fn by_name(&self, name: &str) -> Option<&Route> {
        self.0.iter().find(|r| r.name == name)
    }

    /// Every route, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.0.iter()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Route> for Routes {
    /// Routes in the order given, which is file order.
    fn from_iter<I: IntoIterator<Item = Route>>(routes: I) -> Routes {
        Routes(routes.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Routes {
    type Item = &'a Route;
    type IntoIter = std::slice::Iter<'a, Route>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
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

    fn route(name: &str, source: Option<&str>, topics: &[&str]) -> Route {
        Route {
            name: name.to_owned(),
            source: source.map(str::to_owned),
            topics: topics.iter().map(|t| pattern(t)).collect(),
            upstream: "http://127.0.0.1:3000/".parse().unwrap(),
            timeout: Duration::from_secs(10),
            client: None,
            headers: UpstreamHeaders::default(),
        }
    }

    #[test]
    fn lookups_follow_file_order() {
        let routes: Routes = [
            route("created", Some("shop"), &["order.created"]),
            route("orders", None, &["order.*"]),
            route("coupons", None, &["coupon.*"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(routes.first("shop", "order.created").unwrap().name, "created");
        assert_eq!(routes.first("other", "order.created").unwrap().name, "orders");
        assert!(routes.first("shop", "product.created").is_none());
        let all: Vec<&str> = routes.matching("shop", "order.created").map(|r| r.name.as_str()).collect();
        assert_eq!(all, ["created", "orders"]);
        assert_eq!(routes.by_name("coupons").unwrap().topics, [pattern("coupon.*")]);
        assert!(routes.by_name("missing").is_none());
    }

    #[test]
    fn an_earlier_route_hides_a_later_one_it_covers() {
        let every_source = route("orders", None, &["order.*"]);
        let one_source = route("created", Some("shop"), &["order.created"]);
        assert!(every_source.hides(&one_source, None));
        assert!(!one_source.hides(&every_source, None));
        let shop_orders = route("shop-orders", Some("shop"), &["order.*"]);
        assert!(shop_orders.hides(&route("again", None, &["order.updated"]), Some("shop")));
        assert!(!shop_orders.hides(&route("again", None, &["order.updated"]), None));
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
