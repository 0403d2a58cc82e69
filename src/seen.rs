//! What the gateway has seen of each store webhook since it started, by the `X-WC-Webhook-ID` of its
//! deliveries: when one last verified and with which of the source's secrets, and how many failed
//! verification since. `hookgate store status` reads it from the admin listener (`GET /webhooks`) to say
//! whether a webhook's deliveries verify, and `store sync` to know whether it signs with the first secret.
//!
//! The id of a refused delivery is whatever its sender wrote, so anybody can add entries: each source
//! keeps at most [`MAX_WEBHOOKS_PER_SOURCE`], and makes room by forgetting first a webhook never verified.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::secret::Secret;

/// The most webhooks remembered per source: a store has a few dozen at most.
pub const MAX_WEBHOOKS_PER_SOURCE: usize = 256;

/// Per source, per webhook id, what was seen.
#[derive(Default)]
pub struct SeenWebhooks {
    sources: Mutex<HashMap<String, HashMap<u64, Seen>>>,
}

/// What was seen of one webhook.
#[derive(Default)]
struct Seen {
    /// When a delivery from it last verified (unix seconds).
    verified_at: Option<i64>,
    /// The secret that verified it (compared with the configuration when reported: a reload that
    /// reorders the secrets is then told right).
    verified_with: Option<Secret>,
    /// Deliveries refused as wrongly signed since the last one that verified.
    refused: u64,
    /// When one was last refused (unix seconds).
    refused_at: Option<i64>,
}

/// One webhook as `GET /webhooks` reports it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SeenReport {
    /// Its id in the store.
    pub webhook_id: u64,
    /// When a delivery from it last verified (unix seconds).
    pub last_verified_at: Option<i64>,
    /// Which secret that was, as the source's secrets stand now: 1 for the first, 2 for the second...;
    /// `None` when none verified, or the secret is no longer configured.
    pub verified_with_secret: Option<usize>,
    /// Deliveries refused as wrongly signed since the last one that verified.
    pub refused_since_verified: u64,
    /// When one was last refused (unix seconds).
    pub last_refused_at: Option<i64>,
}

impl SeenWebhooks {
    /// Notes that a delivery from `webhook_id` to `source` verified with `secret` at `now` (unix seconds).
    pub fn verified(&self, source: &str, webhook_id: u64, secret: &Secret, now: i64) {
        self.update(source, webhook_id, |seen| {
            seen.verified_at = Some(now);
            // On every verified delivery: the secret is copied only when it is not the one held already.
            let same = seen.verified_with.as_ref().is_some_and(|held| bool::from(held.expose().ct_eq(secret.expose())));
            if !same {
                seen.verified_with = Some(secret.clone());
            }
            seen.refused = 0;
        });
    }

    /// Notes that a delivery claiming to come from `webhook_id` to `source` was refused as wrongly signed.
    pub fn refused(&self, source: &str, webhook_id: u64, now: i64) {
        self.update(source, webhook_id, |seen| {
            seen.refused += 1;
            seen.refused_at = Some(now);
        });
    }

    fn update(&self, source: &str, webhook_id: u64, change: impl FnOnce(&mut Seen)) {
        let mut sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The source's name is copied only the first time it is seen.
        if !sources.contains_key(source) {
            sources.insert(source.to_owned(), HashMap::new());
        }
        let Some(webhooks) = sources.get_mut(source) else { return };
        if !webhooks.contains_key(&webhook_id) && webhooks.len() >= MAX_WEBHOOKS_PER_SOURCE {
            // Forget a webhook never verified (the oldest refused), else the one verified longest ago.
            let forgotten = webhooks
                .iter()
                .min_by_key(|(_, seen)| (seen.verified_at.is_some(), seen.verified_at.max(seen.refused_at)))
                .map(|(id, _)| *id);
            if let Some(id) = forgotten {
                webhooks.remove(&id);
            }
        }
        change(webhooks.entry(webhook_id).or_default());
    }

    /// What was seen of `source`'s webhooks, by id, its secrets read from `config`.
    pub fn report(&self, config: &Config, source: &str) -> Vec<SeenReport> {
        let secrets = config.sources.iter().find(|s| s.name == source).map_or(&[][..], |s| &s.secrets[..]);
        let sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reports: Vec<SeenReport> = sources
            .get(source)
            .into_iter()
            .flatten()
            .map(|(id, seen)| SeenReport {
                webhook_id: *id,
                last_verified_at: seen.verified_at,
                verified_with_secret: seen
                    .verified_with
                    .as_ref()
                    .and_then(|used| secrets.iter().position(|secret| bool::from(secret.expose().ct_eq(used.expose()))))
                    .map(|position| position + 1),
                refused_since_verified: seen.refused,
                last_refused_at: seen.refused_at,
            })
            .collect();
        reports.sort_by_key(|report| report.webhook_id);
        reports
    }
}
