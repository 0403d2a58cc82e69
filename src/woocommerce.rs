//! The sender's contract, as WooCommerce 11 keeps it: the `X-WC-Webhook-*` header names, the webhook ids
//! it writes, the unsigned ping body, and what hookgate reads of a signed payload (the resource's `id` and
//! its `date_modified_gmt`, also inside a `legacy_v3` wrapper).
//!
//! Everything here is pure: no I/O, no configuration. The payload is read at most once per delivery
//! ([`Payload`] caches what it found), however many steps ask.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The signature header; WooCommerce sends exactly one.
pub static X_WC_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("x-wc-webhook-signature");
/// The webhook's numeric id, checked against `webhook_ids`.
pub static X_WC_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-wc-webhook-id");
/// The topic that routes a delivery.
pub static X_WC_WEBHOOK_TOPIC: HeaderName = HeaderName::from_static("x-wc-webhook-topic");
/// Logged to tie a line to WooCommerce's delivery log.
pub static X_WC_WEBHOOK_DELIVERY_ID: HeaderName = HeaderName::from_static("x-wc-webhook-delivery-id");
/// Prefix of every header WooCommerce sends about a delivery; all of them are forwarded.
pub const HEADER_PREFIX: &str = "x-wc-webhook-";

/// WooCommerce's ping body is `webhook_id=<id>`; an unsigned request with a larger body cannot be one,
/// so it is refused without reading more than this.
pub const MAX_PING_BODY_BYTES: u64 = 64;

/// The resource topics WooCommerce 11 sends: `WC_Webhook::get_default_topic_hooks()`. There is no
/// `customer.restored` (WooCommerce refuses to save a webhook for it) and `published` is products' only.
pub const RESOURCE_TOPICS: [&str; 16] = [
    "order.created",
    "order.updated",
    "order.deleted",
    "order.restored",
    "product.created",
    "product.updated",
    "product.deleted",
    "product.restored",
    "product.published",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "coupon.created",
    "coupon.updated",
    "coupon.deleted",
    "coupon.restored",
];

/// The resources of [`RESOURCE_TOPICS`].
pub const RESOURCES: [&str; 4] = ["order", "product", "customer", "coupon"];

/// An action topic is `action.<hook name>`, and WooCommerce saves a webhook for one only when the hook's
/// name starts with one of these (`wc_is_webhook_valid_topic`).
pub const ACTION_TOPIC_PREFIXES: [&str; 2] = ["action.woocommerce_", "action.wc_"];

/// A header's value when it is present exactly once.
pub fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The id in a ping body: exactly `webhook_id=` and the id.
pub fn ping_webhook_id(body: &[u8]) -> Option<u64> {
    parse_webhook_id(body.strip_prefix(b"webhook_id=")?)
}

/// A webhook id as WooCommerce writes it: 1 to 19 ASCII digits (every such number fits in a u64), no sign,
/// no space, no leading zero; anything else matches no allow-list.
pub fn parse_webhook_id(digits: &[u8]) -> Option<u64> {
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && digits.len() > 1)
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The resource's id in a payload: WooCommerce writes a number; a string is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceId {
    /// `"id": 727`
    Number(u64),
    /// `"id": "a-1"`
    Text(String),
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceId::Number(n) => write!(f, "{n}"),
            ResourceId::Text(t) => f.write_str(t),
        }
    }
}

/// What hookgate reads of a signed payload, read lazily and at most once: the resource's `id` and when it
/// was last modified. Never the rest: the body is forwarded byte for byte, not interpreted.
#[derive(Debug, Default)]
pub struct Payload {
    peeked: OnceLock<Peeked>,
}

#[derive(Debug, Default)]
struct Peeked {
    id: Option<ResourceId>,
    modified_at: Option<i64>,
}

impl Payload {
    /// The resource's id: the top-level `id` (REST API v1 to v3), or the one inside a `legacy_v3` wrapper
    /// (`{"order":{"id":727,...}}`). `None` when the payload has none (actions, error objects) or is not JSON.
    pub fn resource_id(&self, body: &[u8]) -> Option<ResourceId> {
        // WooCommerce's REST representation starts with the id: `{"id":727,...}`. Read it without parsing
        // the rest (the common case, on every queued delivery); anything else takes the full peek.
        if self.peeked.get().is_none()
            && let Some(rest) = body.strip_prefix(b"{\"id\":")
        {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if (1..=19).contains(&digits)
                && matches!(rest.get(digits), Some(b',' | b'}'))
                && let Some(id) = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse().ok())
            {
                return Some(ResourceId::Number(id));
            }
        }
        self.peek(body).id.clone()
    }

    /// When the resource was last modified, in unix seconds: `date_modified_gmt` at the top level (REST API
    /// v2 and v3), or `updated_at` one level down in a `legacy_v3` wrapper
    /// (`{"order":{...,"updated_at":"2026-11-21T13:03:09Z"}}`). `None` when the payload carries no such
    /// date (deleted resources, actions, error objects, API v1's local-time dates) or not in the form
    /// `YYYY-MM-DDTHH:MM:SS[Z]`.
    pub fn modified_at(&self, body: &[u8]) -> Option<i64> {
        self.peek(body).modified_at
    }

    fn peek(&self, body: &[u8]) -> &Peeked {
        self.peeked.get_or_init(|| peek(body))
    }
}

/// One parse of the top level; a second only when the top level has neither an id nor a date (a
/// `legacy_v3` wrapper, or not a WooCommerce resource at all).
fn peek(body: &[u8]) -> Peeked {
    // Each field is read leniently: an `id` or a date of another JSON type reads as absent instead of
    // failing the whole parse (so an odd `date_modified_gmt` never hides a good `id`, nor the reverse).
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Date {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    struct Top {
        id: Option<Id>,
        date_modified_gmt: Option<Date>,
    }
    #[derive(serde::Deserialize)]
    struct Wrapped {
        id: Option<Id>,
        updated_at: Option<Date>,
    }
    let id_of = |id: Option<Id>| match id? {
        Id::Number(n) => Some(ResourceId::Number(n)),
        Id::Text(t) => Some(ResourceId::Text(t)),
        Id::Other(_) => None,
    };
    let date_of = |date: Option<Date>| match date? {
        Date::Text(t) => Some(t),
        Date::Other(_) => None,
    };
    let (mut id, mut date) = match serde_json::from_slice::<Top>(body) {
        Ok(top) => (id_of(top.id), date_of(top.date_modified_gmt)),
        Err(_) => (None, None),
    };
    if id.is_none() || date.is_none() {
        // A legacy_v3 wrapper: `{"order":{...}}`. A field counts only when exactly one wrapped value has it.
        let wrapped: Option<std::collections::HashMap<String, Wrapped>> = serde_json::from_slice(body).ok();
        if let Some(wrapped) = wrapped {
            let (mut ids, mut dates) = (Vec::new(), Vec::new());
            for inner in wrapped.into_values() {
                ids.extend(id_of(inner.id));
                dates.extend(date_of(inner.updated_at));
            }
            if id.is_none() && ids.len() == 1 {
                id = ids.pop();
            }
            if date.is_none() && dates.len() == 1 {
                date = dates.pop();
            }
        }
    }
    Peeked { id, modified_at: date.as_deref().and_then(parse_gmt) }
}

/// Parses WooCommerce's GMT date `YYYY-MM-DDTHH:MM:SS` (an optional trailing `Z` allowed) into unix seconds.
pub fn parse_gmt(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text).as_bytes();
    if text.len() != 19
        || text[4] != b'-'
        || text[7] != b'-'
        || text[10] != b'T'
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &text[range];
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month[(month - 1) as usize] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_bodies() {
        assert_eq!(ping_webhook_id(b"webhook_id=535"), Some(535));
        assert_eq!(ping_webhook_id(b"webhook_id=9999999999999999999"), Some(9_999_999_999_999_999_999));
        assert_eq!(ping_webhook_id(b"webhook_id=99999999999999999999"), None);
        assert_eq!(ping_webhook_id(b"webhook_id="), None);
        assert_eq!(ping_webhook_id(b"webhook_id=12&x=1"), None);
        assert_eq!(ping_webhook_id(b"webhook_id=-1"), None);
        assert_eq!(ping_webhook_id(b"id=1"), None);
    }

    #[test]
    fn woocommerce_gmt_dates() {
        assert_eq!(parse_gmt("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse_gmt("2026-11-21T13:03:09"), Some(1_795_266_189));
        assert_eq!(parse_gmt("2026-11-21T13:03:09Z"), Some(1_795_266_189));
        assert_eq!(parse_gmt("2024-02-29T23:59:59"), Some(1_709_251_199));
        assert_eq!(parse_gmt("2023-02-29T00:00:00"), None, "not a leap year");
        assert_eq!(parse_gmt("2026-13-01T00:00:00"), None);
        assert_eq!(parse_gmt("2026-11-21 13:03:09"), None);
        assert_eq!(parse_gmt("2026-11-21T13:03:09+02:00"), None, "WooCommerce's GMT dates carry no offset");
        assert_eq!(parse_gmt("+026-11-21T13:03:09"), None);
        assert_eq!(parse_gmt(""), None);
    }

    #[test]
    fn resource_ids() {
        let id = |body: &[u8]| Payload::default().resource_id(body).map(|id| id.to_string());
        assert_eq!(id(br#"{"id":727,"x":1}"#).as_deref(), Some("727"));
        assert_eq!(id(br#"{"id":9}"#).as_deref(), Some("9"));
        assert_eq!(id(br#"{"x":1,"id":"a-1"}"#).as_deref(), Some("a-1"));
        assert_eq!(id(br#"{"order":{"id":5,"total":"1.00"}}"#).as_deref(), Some("5"), "legacy_v3");
        assert_eq!(id(br#"{"id":72x}"#), None, "not JSON");
        assert_eq!(id(br#"{"code":"woocommerce_rest_cannot_view"}"#), None);
        assert_eq!(id(b"[]"), None);
        assert_eq!(id(br#"{"a":{"id":1},"b":{"id":2}}"#), None, "two wrapped ids say nothing for certain");
        assert_eq!(id(br#"{"id":4,"date_modified_gmt":17}"#).as_deref(), Some("4"), "an odd date hides no id");
    }

    #[test]
    fn one_peek_answers_both_questions() {
        let body = br#"{"x":1,"id":3,"date_modified_gmt":"2026-11-21T13:03:09"}"#;
        let payload = Payload::default();
        assert_eq!(payload.modified_at(body), Some(1_795_266_189));
        assert!(payload.peeked.get().is_some());
        assert_eq!(payload.resource_id(body), Some(ResourceId::Number(3)));
    }
}
