//! What the store's webhooks should be for one source, and how they stand against it: the plan
//! `hookgate store sync` carries out, and the findings `hookgate store status` prints. Both are worked out
//! here from what the store lists and what the gateway has seen, with no request made.
//!
//! A source wants one webhook per WooCommerce topic its routes take: the route globs expanded over
//! WooCommerce's resource topics, and `action.<hook>` only where a route names the hook (a glob such as
//! `action.*` names none). Sync names each `hookgate: <source> <topic>` and touches no webhook of another
//! name.

use std::collections::BTreeMap;

use crate::config::{Config, Source, StoreSettings};
use crate::seen::SeenReport;
use crate::woocommerce::RESOURCE_TOPICS;

use super::{Webhook, WebhookFields, WebhookStatus};

/// The payload version of the webhooks sync makes: WooCommerce gives it to every webhook made through its
/// v3 REST API (what that API returns for a resource), and the API neither shows nor changes it.
pub const API_VERSION: &str = "wp_api_v3";

/// The name sync gives the webhook of `topic` for `source`.
pub fn webhook_name(source: &str, topic: &str) -> String {
    format!("hookgate: {source} {topic}")
}

/// The topics `source`'s routes take, each with the routes that take it, in order.
pub fn wanted_topics(config: &Config, source: &str) -> BTreeMap<String, Vec<String>> {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for route in config.routes.iter().filter(|route| route.source.as_deref().is_none_or(|s| s == source)) {
        for pattern in &route.topics {
            let text = pattern.as_str();
            let named_action = (text.starts_with("action.") && !text.contains('*')).then(|| text.to_owned());
            let resource_topics = RESOURCE_TOPICS.iter().filter(|topic| pattern.matches(topic)).map(|t| t.to_string());
            for topic in resource_topics.chain(named_action) {
                let routes = wanted.entry(topic).or_default();
                if !routes.contains(&route.name) {
                    routes.push(route.name.clone());
                }
            }
        }
    }
    wanted
}

/// One change sync makes to the store.
#[derive(Debug)]
pub enum Change {
    /// A webhook for `topic` is created (WooCommerce pings it at once).
    Create {
        /// The topic.
        topic: String,
        /// Its fields, the secret among them.
        fields: WebhookFields,
    },
    /// Webhook `id` is set right, for `reasons`.
    Update {
        /// The webhook's id.
        id: u64,
        /// Its name.
        name: String,
        /// What was wrong, one phrase each (never a secret).
        reasons: Vec<String>,
        /// The fields set.
        fields: WebhookFields,
    },
    /// Webhook `id`, named by sync, is deleted: no route takes its topic any more (or it is a second one
    /// of the same name).
    Delete {
        /// The webhook's id.
        id: u64,
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create { topic, .. } => write!(f, "create webhook {:?} ({topic})", self.name()),
            Change::Update { id, name, reasons, .. } => {
                write!(f, "update webhook #{id} {name:?}: {}", reasons.join("; "))
            }
            Change::Delete { id, name, reason } => write!(f, "delete webhook #{id} {name:?}: {reason}"),
        }
    }
}

impl Change {
    fn name(&self) -> &str {
        match self {
            Change::Create { fields, .. } => fields.name.as_deref().unwrap_or_default(),
            Change::Update { name, .. } | Change::Delete { name, .. } => name,
        }
    }
}

/// Why webhook `id`'s secret must be set again, if it must. The store never shows a secret, so sync goes by
/// what the gateway saw (`None`: it could not be asked): a delivery refused since the last that verified,
/// or one that verified with a secret other than the first, says the secret is wrong. With one secret and
/// no such sign the secret is left alone (a wrong one would show as refused deliveries). While a rotation
/// is under way (`rotating`: more than one secret), a webhook not yet seen signing with the first secret
/// has it set, so that the old secret can go.
fn secret_to_set(seen: Option<&[SeenReport]>, id: u64, rotating: bool) -> Option<String> {
    let report = seen.and_then(|seen| seen.iter().find(|report| report.webhook_id == id));
    match report {
        Some(report) if report.refused_since_verified > 0 => Some(format!(
            "secret: {} deliveries failed verification since the last that verified",
            report.refused_since_verified
        )),
        Some(SeenReport { verified_with_secret: Some(1), .. }) => None,
        Some(SeenReport { verified_with_secret: Some(n), .. }) => {
            Some(format!("secret: its deliveries verify with secret {n}, not the first"))
        }
        Some(SeenReport { last_verified_at: Some(_), .. }) => {
            Some("secret: its deliveries verify with a secret no longer configured".to_owned())
        }
        _ if !rotating => None,
        _ if seen.is_none() => Some(
            "secret: set to the first, as the source has several (the gateway's admin listener did not answer, so \
             no delivery confirms it)"
                .to_owned(),
        ),
        _ => Some(
            "secret: set to the first, as the source has several (no delivery of it has verified since the gateway \
             started)"
                .to_owned(),
        ),
    }
}

/// The changes that make the store's `webhooks` match what `source` wants (`wanted`, from
/// [`wanted_topics`]), given what the gateway has seen (`None`: it could not be asked).
pub fn sync_plan(
    source: &Source,
    store: &StoreSettings,
    wanted: &BTreeMap<String, Vec<String>>,
    webhooks: &[Webhook],
    seen: Option<&[SeenReport]>,
) -> Vec<Change> {
    let delivery_url = store.delivery_url.to_string();
    let first_secret = source.secrets.first().cloned();
    let mut changes = Vec::new();
    let mut ours: Vec<&Webhook> =
        webhooks.iter().filter(|w| w.name.starts_with(&webhook_name(&source.name, ""))).collect();
    ours.sort_by_key(|webhook| webhook.id);
    for topic in wanted.keys() {
        let name = webhook_name(&source.name, topic);
        let mut same_name = ours.iter().filter(|webhook| webhook.name == name);
        let Some(webhook) = same_name.next() else {
            let fields = WebhookFields {
                name: Some(name),
                status: Some(WebhookStatus::Active),
                topic: Some(topic.clone()),
                delivery_url: Some(delivery_url.clone()),
                secret: first_secret.clone(),
            };
            changes.push(Change::Create { topic: topic.clone(), fields });
            continue;
        };
        for extra in same_name {
            let reason = format!("a second webhook of this name (#{} is kept)", webhook.id);
            changes.push(Change::Delete { id: extra.id, name: extra.name.clone(), reason });
        }
        let mut reasons = Vec::new();
        let mut fields = WebhookFields::default();
        if webhook.status != WebhookStatus::Active {
            reasons.push(format!("status: {} to active", status_name(webhook.status)));
            fields.status = Some(WebhookStatus::Active);
        }
        if &webhook.topic != topic {
            reasons.push(format!("topic: {} to {topic}", webhook.topic));
            fields.topic = Some(topic.clone());
        }
        if webhook.delivery_url != delivery_url {
            reasons.push(format!("delivery URL: {} to {delivery_url}", webhook.delivery_url));
            fields.delivery_url = Some(delivery_url.clone());
        }
        if let Some(reason) = secret_to_set(seen, webhook.id, source.secrets.len() > 1) {
            reasons.push(reason);
            fields.secret = first_secret.clone();
        }
        if !reasons.is_empty() {
            changes.push(Change::Update { id: webhook.id, name: webhook.name.clone(), reasons, fields });
        }
    }
    for webhook in ours {
        let topic = &webhook.name[webhook_name(&source.name, "").len()..];
        if !wanted.contains_key(topic) {
            let reason = "no route of this source takes its topic any more".to_owned();
            changes.push(Change::Delete { id: webhook.id, name: webhook.name.clone(), reason });
        }
    }
    changes
}

/// `active`, `paused` or `disabled`.
pub fn status_name(status: WebhookStatus) -> &'static str {
    match status {
        WebhookStatus::Active => "active",
        WebhookStatus::Paused => "paused",
        WebhookStatus::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(routes: &str) -> Config {
        let text = format!(
            "sources:\n  - name: shop\n    path: /hooks/shop\n    secrets:\n      - value: s3cret\n  - name: other\n    path: /hooks/other\n    secrets:\n      - value: s3cret\nroutes:\n{routes}delivery:\n  mode: proxy\n"
        );
        Config::from_yaml(&text, std::path::Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn route_globs_are_expanded_over_woocommerces_topics_and_actions_only_when_named() {
        let config = config(
            "  - name: orders\n    source: shop\n    topics: [\"order.*\", \"action.woocommerce_add_to_cart\", \"action.*\"]\n    upstream: http://127.0.0.1:9/\n  - name: deletions\n    topics: [\"*.deleted\"]\n    upstream: http://127.0.0.1:9/\n  - name: elsewhere\n    source: other\n    topics: [\"product.*\"]\n    upstream: http://127.0.0.1:9/\n",
        );
        let wanted = wanted_topics(&config, "shop");
        let topics: Vec<&str> = wanted.keys().map(String::as_str).collect();
        assert_eq!(
            topics,
            [
                "action.woocommerce_add_to_cart",
                "coupon.deleted",
                "customer.deleted",
                "order.created",
                "order.deleted",
                "order.restored",
                "order.updated",
                "product.deleted"
            ]
        );
        assert_eq!(wanted["order.deleted"], ["orders", "deletions"]);
        assert!(wanted_topics(&config, "other").contains_key("product.updated"));
    }
}
