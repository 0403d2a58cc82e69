//! The checks of `routes`: each route's name, source, topics, upstream and timeout (its `tls` and
//! `headers` in `upstream.rs`), each name used once; and the warnings about routes that are allowed but
//! probably not meant.

use std::collections::HashMap;
use std::path::Path;

use super::{Checker, is_plain_name};
use crate::config::raw::RawRoute;
use crate::config::{DEFAULT_ROUTE_TIMEOUT, DeliveryMode, WOOCOMMERCE_TIMEOUT};
use crate::route::{Route, TopicPattern};

impl Checker<'_> {
    /// The routes that check out, in file order, each with the line of its name; each name used once.
    pub(super) fn routes(&mut self, raw: &[RawRoute], source_names: &[&str]) -> Vec<(Route, u64)> {
        let mut routes = Vec::new();
        let mut route_lines: HashMap<String, u64> = HashMap::new();
        for raw_route in raw {
            let line = raw_route.name.referenced.line();
            if let Some(first) = route_lines.get(&raw_route.name.value) {
                self.problem(
                    &raw_route.name,
                    format!(
                        "route name {:?} is already used on line {first}: give each route its own name",
                        raw_route.name.value
                    ),
                );
            } else {
                route_lines.insert(raw_route.name.value.clone(), line);
            }
            if let Some(route) = self.route(raw_route, source_names) {
                routes.push((route, line));
            }
        }
        routes
    }

    /// One route: a plain name, a defined source if any, at least one topic pattern, an upstream URL, a
    /// timeout, and its `tls` and `headers` when given; `None` when anything is wrong (each problem
    /// recorded).
    fn route(&mut self, raw: &RawRoute, sources: &[&str]) -> Option<Route> {
        let before = self.problems.len();
        let name = raw.name.value.clone();
        if !is_plain_name(&name) {
            self.problem(&raw.name, format!("route name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.': it appears in logs, metrics and headers"));
        }
        if let Some(source) = &raw.source
            && !sources.contains(&source.value.as_str())
        {
            self.problem(source, format!("route {name:?} names source {:?}, which is not defined: use one of {sources:?}, or remove source: to take every source", source.value));
        }
        if raw.topics.value.is_empty() {
            self.problem(
                &raw.topics,
                format!(
                    "route {name:?} has no topics: list topics such as \"order.created\" or globs such as \"order.*\""
                ),
            );
        }
        let mut topics = Vec::new();
        for topic in &raw.topics.value {
            match TopicPattern::parse(&topic.value) {
                Ok(pattern) => topics.push(pattern),
                Err(message) => self.problem(topic, message),
            }
        }
        let upstream = match parse_upstream(&raw.upstream.value) {
            Ok(uri) => Some(uri),
            Err(message) => {
                self.problem(&raw.upstream, message);
                None
            }
        };
        let timeout = self.duration(raw.timeout.as_ref(), DEFAULT_ROUTE_TIMEOUT, "timeout");
        // An upstream that is not a URL is a problem already: its scheme is not judged again.
        let https = upstream.as_ref().is_none_or(|uri| uri.scheme_str() == Some("https"));
        let client = raw.tls.as_ref().and_then(|tls| self.upstream_tls(tls, &name, https));
        let headers = self.upstream_headers(raw.headers.as_ref(), &name);
        if self.problems.len() > before {
            return None;
        }
        let source = raw.source.as_ref().map(|s| s.value.clone());
        Some(Route { name, source, topics, upstream: upstream?, timeout, client, headers })
    }
}

impl Checker<'_> {
    /// Warnings about topic patterns that match no topic WooCommerce sends, each with its line and column
    /// and the nearest pattern that does when one is close. A warning, not a problem: a store's plugins
    /// can send topics of their own.
    pub(super) fn topic_warnings(&self, raw: &[RawRoute]) -> Vec<String> {
        let mut warnings = Vec::new();
        for route in raw {
            for topic in &route.topics.value {
                let Ok(pattern) = TopicPattern::parse(&topic.value) else { continue };
                if pattern.matches_a_woocommerce_topic() {
                    continue;
                }
                let hint = match pattern.nearest_woocommerce_pattern() {
                    Some(nearest) => format!("; did you mean {nearest:?}?"),
                    None => format!(": {WOOCOMMERCE_SENDS}."),
                };
                warnings.push(format!(
                    "{}:{}:{}: route {:?}: {:?} matches no WooCommerce topic{hint} (Ignore this if your store's plugins send it as a topic of their own.)",
                    self.file.display(),
                    topic.referenced.line(),
                    topic.referenced.column(),
                    route.name.value,
                    topic.value,
                ));
            }
        }
        warnings
    }
}

/// What WooCommerce sends, for a topic warning with nothing close to suggest.
const WOOCOMMERCE_SENDS: &str = "WooCommerce sends order, product and coupon .created, .updated, .deleted and .restored, customer .created, .updated and .deleted, product.published, and action.woocommerce_* and action.wc_* hooks";

/// Warnings about routes that check out, each with the line of its name: a timeout WooCommerce does not
/// wait for, and, in proxy mode, a route that an earlier one hides (it would never be used). Only a
/// configuration without problems is ever used, so its route names are unique and each line is its own.
pub(super) fn route_warnings(
    file: &Path,
    routes: &[(Route, u64)],
    mode: DeliveryMode,
    only_source: Option<&str>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, (route, line)) in routes.iter().enumerate() {
        if route.timeout > WOOCOMMERCE_TIMEOUT {
            warnings.push(format!(
                "{}:{line}: route {:?} has a timeout above WooCommerce's own 60 s: in proxy mode WooCommerce gives up first and counts a failure",
                file.display(),
                route.name
            ));
        }
        if mode == DeliveryMode::Proxy
            && let Some((earlier, earlier_line)) =
                routes[..index].iter().find(|(earlier, _)| earlier.hides(route, only_source))
        {
            warnings.push(format!(
                "{}:{line}: route {:?} is never used in proxy mode: route {:?} (line {earlier_line}) comes first and takes every delivery it would take",
                file.display(),
                route.name,
                earlier.name,
            ));
        }
    }
    warnings
}

/// An upstream URL: absolute, http or https, with a host, and no credentials in it.
fn parse_upstream(text: &str) -> Result<http::Uri, String> {
    let authority = text.split_once("://").map_or(text, |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if authority.contains('@') {
        // Never echo the URL here: what stands before '@' is a password.
        return Err(
            "upstream holds credentials (user:password@): hookgate does not send them; protect the service another way"
                .into(),
        );
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("upstream {text:?} is not a URL ({e}): write it in full, such as \"http://127.0.0.1:3000/woocommerce/orders\""))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("upstream {text:?} must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "upstream {text:?} has no host: write it in full, such as \"http://127.0.0.1:3000/woocommerce/orders\""
        ));
    };
    if authority.host().is_empty() {
        return Err(format!("upstream {text:?} has no host"));
    }
    Ok(uri)
}
