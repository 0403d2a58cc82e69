//! What a reload changed, for its log line: sources and routes added, removed or changed, and sources
//! whose secrets were rotated. Names only: secrets are compared (in constant time, like every comparison
//! of a secret here), never shown.

use std::collections::BTreeSet;

use subtle::ConstantTimeEq;

use crate::config::{Config, Source};
use crate::route::Route;

/// One phrase per kind of change (`routes added: coupons`), in a fixed order; empty when no source, route
/// or secret changed.
pub(super) fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    let old_sources: Vec<&Source> = old.sources.iter().map(|s| &**s).collect();
    let new_sources: Vec<&Source> = new.sources.iter().map(|s| &**s).collect();
    let (added, removed, kept) = compare(&old_sources, &new_sources, |s| &s.name);
    push(&mut changes, "sources added", added);
    push(&mut changes, "sources removed", removed);
    let rotated = kept.iter().filter(|(old, new)| !same_secrets(old, new)).map(|(_, new)| new.name.clone()).collect();
    push(&mut changes, "secrets rotated", rotated);
    let changed = kept.iter().filter_map(|(old, new)| source_change(old, new)).collect();
    push(&mut changes, "sources changed", changed);

    let old_routes: Vec<&Route> = old.routes.iter().collect();
    let new_routes: Vec<&Route> = new.routes.iter().collect();
    let (added, removed, kept) = compare(&old_routes, &new_routes, |r| &r.name);
    push(&mut changes, "routes added", added);
    push(&mut changes, "routes removed", removed);
    let changed = kept.iter().filter_map(|(old, new)| route_change(old, new)).collect();
    push(&mut changes, "routes changed", changed);
    changes
}

/// The names only in `new` and only in `old`, and the pairs in both (in `new`'s order).
fn compare<'a, T>(
    old: &[&'a T],
    new: &[&'a T],
    name: impl Fn(&T) -> &String,
) -> (Vec<String>, Vec<String>, Vec<(&'a T, &'a T)>) {
    let find = |list: &[&'a T], wanted: &String| list.iter().copied().find(|item| name(item) == wanted);
    let added = new.iter().filter(|n| find(old, name(n)).is_none()).map(|n| name(n).clone()).collect();
    let removed = old.iter().filter(|o| find(new, name(o)).is_none()).map(|o| name(o).clone()).collect();
    let kept = new.iter().filter_map(|n| Some((find(old, name(n))?, *n))).collect();
    (added, removed, kept)
}

fn push(changes: &mut Vec<String>, what: &str, names: Vec<String>) {
    if !names.is_empty() {
        changes.push(format!("{what}: {}", names.join(", ")));
    }
}

/// Whether a source kept its secrets: as many, each equal to the one in its place.
fn same_secrets(old: &Source, new: &Source) -> bool {
    old.secrets.len() == new.secrets.len()
        && old.secrets.iter().zip(&new.secrets).all(|(a, b)| bool::from(a.expose().ct_eq(b.expose())))
}

/// `name (what changed)` for a source whose path, algorithm, webhook ids or replay bound changed.
fn source_change(old: &Source, new: &Source) -> Option<String> {
    let mut what = BTreeSet::new();
    if old.path != new.path {
        what.insert("path");
    }
    if old.verifier.algorithm() != new.verifier.algorithm() {
        what.insert("algorithm");
    }
    if old.webhook_ids != new.webhook_ids {
        what.insert("webhook_ids");
    }
    if old.reject_older_than != new.reject_older_than {
        what.insert("reject_older_than");
    }
    described(&new.name, what)
}

/// `name (what changed)` for a route whose source, topics, upstream, timeout, `tls` or `headers` (their
/// names and where their values come from, never the values) changed.
fn route_change(old: &Route, new: &Route) -> Option<String> {
    let mut what = BTreeSet::new();
    if old.source != new.source {
        what.insert("source");
    }
    let topics = |route: &Route| route.topics.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
    if topics(old) != topics(new) {
        what.insert("topics");
    }
    if old.upstream != new.upstream {
        what.insert("upstream");
    }
    if old.timeout != new.timeout {
        what.insert("timeout");
    }
    let tls = |route: &Route| route.client.as_ref().map(|client| client.description().to_owned());
    if tls(old) != tls(new) {
        what.insert("tls");
    }
    if old.headers.summary() != new.headers.summary() {
        what.insert("headers");
    } else if !old.headers.same_values(&new.headers) {
        what.insert("header values rotated");
    }
    described(&new.name, what)
}

fn described(name: &str, what: BTreeSet<&str>) -> Option<String> {
    (!what.is_empty()).then(|| format!("{name} ({})", what.into_iter().collect::<Vec<_>>().join(", ")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(sources: &str, routes: &str) -> Config {
        let text = format!("delivery:\n  mode: proxy\nsources:\n{sources}routes:\n{routes}");
        Config::from_yaml(&text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn source(name: &str, secrets: &str) -> String {
        format!("  - name: {name}\n    path: /{name}\n    secrets: [{secrets}]\n")
    }

    fn route(name: &str, topics: &str, port: u16) -> String {
        format!("  - name: {name}\n    topics: [\"{topics}\"]\n    upstream: http://127.0.0.1:{port}/\n")
    }

    #[test]
    fn added_removed_changed_and_rotated_are_named_and_no_secret_is_shown() {
        let old = config(
            &format!("{}{}", source("main", "{value: OLDSECRET}"), source("gone", "{value: s}")),
            &format!("{}{}", route("orders", "order.*", 1), route("legacy", "*", 2)),
        );
        let new_sources =
            format!("{}{}", source("main", "{value: OLDSECRET}, {value: NEWSECRET}"), source("new", "{value: s}"));
        let new_routes = format!("{}{}", route("orders", "order.created", 3), route("coupons", "coupon.*", 2));
        let new = config(&new_sources, &new_routes);
        let found = changes(&old, &new);
        assert_eq!(
            found,
            [
                "sources added: new",
                "sources removed: gone",
                "secrets rotated: main",
                "routes added: coupons",
                "routes removed: legacy",
                "routes changed: orders (topics, upstream)",
            ]
        );
        assert!(!found.join(" ").contains("SECRET"));
        assert!(changes(&new, &config(&new_sources, &new_routes)).is_empty(), "the same file again changes nothing");
        let reordered =
            format!("{}{}", source("main", "{value: NEWSECRET}, {value: OLDSECRET}"), source("new", "{value: s}"));
        assert_eq!(changes(&new, &config(&reordered, &new_routes)), ["secrets rotated: main"]);
    }

    #[test]
    fn a_routes_header_value_rotated_is_named_and_never_shown() {
        let with_token = |token: &str| {
            let routes =
                format!("{}    headers:\n      Authorization: {{ value: \"{token}\" }}\n", route("orders", "*", 1));
            config(&source("main", "{value: s}"), &routes)
        };
        let found = changes(&with_token("Bearer OLDTOKEN"), &with_token("Bearer NEWTOKEN"));
        assert_eq!(found, ["routes changed: orders (header values rotated)"]);
        assert!(changes(&with_token("Bearer OLDTOKEN"), &with_token("Bearer OLDTOKEN")).is_empty());
    }
}
