//! The store's REST API (`/wp-json/wc/v3`), reached with the REST key of a source's `store`: HTTP Basic
//! over https, OAuth 1.0a ([`oauth`]) over plain http so the consumer secret never travels in clear. Its
//! webhooks are listed, created, updated and deleted here. Errors name the store and the endpoint, never
//! the key.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::config::StoreSettings;
use crate::secret::Secret;
use crate::upstream::{HttpsClient, UpstreamClient};

pub mod backfill;
pub mod commands;
pub mod oauth;
pub mod plan;
pub mod status;

/// A REST request (and reading its answer) that takes longer than this has failed: the store answers a
/// page of webhooks in well under a second, and a watch must not hang on a store that does not answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The most WooCommerce gives on one page.
const PER_PAGE: u32 = 100;
/// The largest answer read: a page of 100 resources is well under a megabyte; a store answering more is
/// answering something else, and memory stays bounded.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// The most pages followed, so a store answering nonsense cannot keep a watch busy for ever.
pub(crate) const MAX_PAGES: u32 = 1_000;
/// Where WooCommerce's REST API lists its webhooks.
const WEBHOOKS: &str = "/wp-json/wc/v3/webhooks";

/// What a webhook is doing, as WooCommerce says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Delivering.
    Active,
    /// Turned off by someone.
    Paused,
    /// Turned off by WooCommerce after failures in a row.
    Disabled,
}

/// A webhook as the store lists it (its secret is never returned: it can be set, not read).
#[derive(Debug, Clone, Deserialize)]
pub struct Webhook {
    /// The id WooCommerce gave it (`X-WC-Webhook-ID` on its deliveries).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Active, paused or disabled.
    pub status: WebhookStatus,
    /// `order.created`, `action.woocommerce_add_to_cart`, ...
    pub topic: String,
    /// Where it delivers.
    pub delivery_url: String,
    /// The payload's API version, when the answer says: WooCommerce 11's v3 API does not (it sets
    /// `wp_api_v3` on every webhook made through it, and takes no other).
    #[serde(default)]
    pub api_version: Option<String>,
}

/// The fields of a webhook to set, at creation or update; those left `None` are not sent. `Debug` never
/// shows the secret.
#[derive(Debug, Default)]
pub struct WebhookFields {
    /// Its name.
    pub name: Option<String>,
    /// Active, paused or disabled.
    pub status: Option<WebhookStatus>,
    /// The topic it delivers.
    pub topic: Option<String>,
    /// Where it delivers.
    pub delivery_url: Option<String>,
    /// The secret it signs with.
    pub secret: Option<Secret>,
}

impl WebhookFields {
    /// The JSON body; the secret is in it, so the body is never logged.
    fn json(&self) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        let mut put = |key: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                object.insert(key.to_owned(), value);
            }
        };
        put("name", self.name.clone().map(Into::into));
        put("status", self.status.map(|status| serde_json::to_value(status).expect("a status serialises")));
        put("topic", self.topic.clone().map(Into::into));
        put("delivery_url", self.delivery_url.clone().map(Into::into));
        put("secret", self.secret.as_ref().map(|secret| String::from_utf8_lossy(secret.expose()).into_owned().into()));
        serde_json::to_vec(&object).expect("a map of strings serialises")
    }
}

/// Why a request to the store failed. Each names the store and the endpoint (a path, never the query,
/// which holds the signed parameters), never the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or the connection failed.
    #[error("store {store}: {method} {endpoint} failed: {reason}")]
    Unreachable {
        /// The store's URL.
        store: String,
        /// The request's method.
        method: Method,
        /// The request's path.
        endpoint: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The store did not answer in time.
    #[error("store {store}: {method} {endpoint} got no answer within {timeout:?}")]
    Timeout {
        /// The store's URL.
        store: String,
        /// The request's method.
        method: Method,
        /// The request's path.
        endpoint: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The store answered with an error status (401: the key is wrong or lacks permission).
    #[error("store {store}: {method} {endpoint} answered {status}: {message}")]
    Status {
        /// The store's URL.
        store: String,
        /// The request's method.
        method: Method,
        /// The request's path.
        endpoint: String,
        /// The HTTP status.
        status: http::StatusCode,
        /// WooCommerce's `code` and `message`, or the start of the body.
        message: String,
    },
    /// The store answered 2xx with something that is not what WooCommerce sends.
    #[error("store {store}: {method} {endpoint} answered what is not WooCommerce's REST API: {reason}")]
    Unexpected {
        /// The store's URL.
        store: String,
        /// The request's method.
        method: Method,
        /// The request's path.
        endpoint: String,
        /// What did not fit.
        reason: String,
    },
}

/// A client of one store's REST API. Cloning it shares its connections and its key.
#[derive(Clone)]
pub struct StoreClient {
    client: HttpsClient,
    /// The home URL, without a trailing `/`.
    home: String,
    /// Over https the key goes as HTTP Basic; over http each request is signed (OAuth 1.0a).
    https: bool,
    key: Arc<(Secret, Secret)>,
    timeout: Duration,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient").field("home", &self.home).finish_non_exhaustive()
    }
}

impl StoreClient {
    /// A client of the store `settings` describes, trusting its roots (the bundled ones and `ca_file`).
    pub fn new(settings: &StoreSettings) -> Result<StoreClient, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(settings.roots.clone())
            .with_no_client_auth();
        let client = UpstreamClient::with_tls_or_http(tls, settings.trusts.clone()).client().clone();
        Ok(StoreClient {
            client,
            home: settings.url.to_string().trim_end_matches('/').to_owned(),
            https: settings.url.scheme_str() == Some("https"),
            key: Arc::new((settings.consumer_key.clone(), settings.consumer_secret.clone())),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client, giving up on a request after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> StoreClient {
        self.timeout = timeout;
        self
    }

    /// Every webhook of the store, page after page (`X-WP-TotalPages`), 100 a page.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let mut webhooks = Vec::new();
        let mut page = 1;
        loop {
            let parameters = [("per_page", PER_PAGE.to_string()), ("page", page.to_string())];
            let (headers, body) = self.send(Method::GET, WEBHOOKS, &parameters, None).await?;
            let mut listed: Vec<Webhook> = self.parse(Method::GET, WEBHOOKS, &body)?;
            webhooks.append(&mut listed);
            if page >= total_pages(&headers).min(MAX_PAGES) {
                return Ok(webhooks);
            }
            page += 1;
        }
    }

    /// Creates a webhook (WooCommerce pings its delivery URL at once) and returns it as the store saved it.
    pub async fn create_webhook(&self, fields: &WebhookFields) -> Result<Webhook, StoreError> {
        let (_, body) = self.send(Method::POST, WEBHOOKS, &[], Some(fields.json())).await?;
        self.parse(Method::POST, WEBHOOKS, &body)
    }

    /// Sets `fields` of webhook `id` and returns it as the store saved it.
    pub async fn update_webhook(&self, id: u64, fields: &WebhookFields) -> Result<Webhook, StoreError> {
        let endpoint = format!("{WEBHOOKS}/{id}");
        let (_, body) = self.send(Method::PUT, &endpoint, &[], Some(fields.json())).await?;
        self.parse(Method::PUT, &endpoint, &body)
    }

    /// Deletes webhook `id` for good (`force=true`: webhooks have no trash).
    pub async fn delete_webhook(&self, id: u64) -> Result<(), StoreError> {
        let endpoint = format!("{WEBHOOKS}/{id}");
        self.send(Method::DELETE, &endpoint, &[("force", "true".to_owned())], None).await?;
        Ok(())
    }

    /// One page (100 a page, from 1) of the store's `resources` (`orders`, `products`, `coupons`,
    /// `customers`, of every role) in the order of their ids, each as the bytes the store sent, and how many
    /// pages there are. With `modified_after` (unix seconds, UTC), only those modified after it; the
    /// customers endpoint has no such filter, so all are listed and the caller filters them.
    pub async fn list_page(
        &self,
        resources: &str,
        modified_after: Option<i64>,
        page: u32,
    ) -> Result<(Vec<Box<serde_json::value::RawValue>>, u32), StoreError> {
        let endpoint = format!("/wp-json/wc/v3/{resources}");
        let mut parameters = vec![
            ("per_page", PER_PAGE.to_string()),
            ("page", page.to_string()),
            ("orderby", "id".to_owned()),
            ("order", "asc".to_owned()),
        ];
        if resources == "customers" {
            // Its default is `customer`: the store's other users (shop managers who buy too) would be left out.
            parameters.push(("role", "all".to_owned()));
        }
        if let Some(after) = modified_after {
            let at = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(after).unwrap_or(0));
            parameters.push(("modified_after", humantime::format_rfc3339_seconds(at).to_string()));
            parameters.push(("dates_are_gmt", "true".to_owned()));
        }
        let (headers, body) = self.send(Method::GET, &endpoint, &parameters, None).await?;
        let items = self.parse(Method::GET, &endpoint, &body)?;
        Ok((items, total_pages(&headers)))
    }

    /// POSTs `body` to `endpoint` of the REST API (`/wp-json/wc/v3/orders`, say) and returns the store's
    /// answer: for what the webhook methods do not cover (the tests create orders with it).
    pub async fn post_json(&self, endpoint: &str, body: &serde_json::Value) -> Result<serde_json::Value, StoreError> {
        let json = serde_json::to_vec(body).expect("a JSON value serialises");
        let (_, answer) = self.send(Method::POST, endpoint, &[], Some(json)).await?;
        self.parse(Method::POST, endpoint, &answer)
    }

    /// Sends one request with the key, within the timeout, and returns the headers and body of a 2xx answer.
    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        parameters: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(http::HeaderMap, Bytes), StoreError> {
        let request = self.request(&method, endpoint, parameters, body);
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| self.unreachable(&method, endpoint, &e))?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| self.unreachable(&method, endpoint, &*e))?
                .to_bytes();
            Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange).await.map_err(|_| StoreError::Timeout {
            store: self.home.clone(),
            method: method.clone(),
            endpoint: endpoint.to_owned(),
            timeout: self.timeout,
        })??;
        if !parts.status.is_success() {
            return Err(StoreError::Status {
                store: self.home.clone(),
                method,
                endpoint: endpoint.to_owned(),
                status: parts.status,
                message: error_message(&body),
            });
        }
        Ok((parts.headers, body))
    }

    /// The request, with the key as HTTP Basic (https) or the signed `oauth_*` parameters (http).
    fn request(
        &self,
        method: &Method,
        endpoint: &str,
        parameters: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Request<Full<Bytes>> {
        let (consumer_key, consumer_secret) = (&self.key.0, &self.key.1);
        let parameters: Vec<(String, String)> = parameters.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let url = format!("{}{endpoint}", self.home);
        let query = if self.https {
            parameters
                .iter()
                .map(|(k, v)| format!("{}={}", oauth::rfc3986(k), oauth::rfc3986(v)))
                .collect::<Vec<_>>()
                .join("&")
        } else {
            let stamp = oauth::Stamp::now();
            oauth::signed_query(method.as_str(), &url, &parameters, consumer_key, consumer_secret, &stamp)
        };
        let uri = if query.is_empty() { url } else { format!("{url}?{query}") };
        let mut builder = Request::builder().method(method.clone()).uri(uri).header("accept", "application/json");
        if self.https {
            let mut credentials = zeroize::Zeroizing::new(consumer_key.expose().to_vec());
            credentials.push(b':');
            credentials.extend_from_slice(consumer_secret.expose());
            let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*credentials));
            let mut value = HeaderValue::from_str(&format!("Basic {}", &*encoded))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).expect("the home URL was checked as a URL and the endpoint is a path")
    }

    /// `body` as a `T`, or why it is not what WooCommerce sends.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        body: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(body).map_err(|e| StoreError::Unexpected {
            store: self.home.clone(),
            method,
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })
    }

    /// An error that kept the request from being answered, with its causes.
    fn unreachable(&self, method: &Method, endpoint: &str, error: &dyn std::error::Error) -> StoreError {
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        StoreError::Unreachable {
            store: self.home.clone(),
            method: method.clone(),
            endpoint: endpoint.to_owned(),
            reason,
        }
    }
}

/// How many pages a listing has, as `X-WP-TotalPages` says (1 when it does not).
fn total_pages(headers: &http::HeaderMap) -> u32 {
    headers
        .get("x-wp-totalpages")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .unwrap_or(1)
}

/// What an error answer says: WooCommerce's `code` and `message` when it sent JSON, else the start of the
/// body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct WooCommerceError {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<WooCommerceError>(body) {
        Ok(error) => format!("{} ({})", error.message, error.code),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let start: String = text.chars().take(200).collect();
            if start.is_empty() { "an empty body".to_owned() } else { start }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> StoreSettings {
        StoreSettings {
            url: url.parse().unwrap(),
            consumer_key: Secret::new(b"ck_key".to_vec()),
            consumer_secret: Secret::new(b"cs_secret".to_vec()),
            key_origins: ("env KEY".to_owned(), "env SECRET".to_owned()),
            delivery_url: "https://hooks.example.com/webhooks/shop".parse().unwrap(),
            watch: None,
            reactivate: true,
            backfill: true,
            roots: crate::upstream::bundled_roots(),
            trusts: "the bundled roots".to_owned(),
        }
    }

    #[test]
    fn over_https_the_key_goes_as_http_basic_and_nothing_is_signed() {
        let store = StoreClient::new(&settings("https://shop.example.com/")).unwrap();
        let request = store.request(&Method::GET, WEBHOOKS, &[("per_page", "100".to_owned())], None);
        assert_eq!(request.uri(), "https://shop.example.com/wp-json/wc/v3/webhooks?per_page=100");
        let authorization = &request.headers()[AUTHORIZATION];
        // base64("ck_key:cs_secret")
        assert_eq!(authorization, "Basic Y2tfa2V5OmNzX3NlY3JldA==");
        assert!(authorization.is_sensitive());
        assert!(!format!("{store:?}").contains("cs_secret"));
    }

    #[test]
    fn over_http_each_request_is_signed_in_its_query_and_carries_no_authorization() {
        let store = StoreClient::new(&settings("http://shop.example.com")).unwrap();
        let request =
            store.request(&Method::DELETE, "/wp-json/wc/v3/webhooks/7", &[("force", "true".to_owned())], None);
        let query = request.uri().query().unwrap();
        assert!(query.starts_with("force=true&oauth_consumer_key=ck_key&oauth_nonce="), "{query}");
        assert!(query.contains("&oauth_signature="), "{query}");
        assert!(!query.contains("cs_secret"));
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn an_error_answer_says_woocommerces_code_and_message() {
        let body = br#"{"code":"woocommerce_rest_authentication_error","message":"Invalid signature - provided signature does not match.","data":{"status":401}}"#;
        assert_eq!(
            error_message(body),
            "Invalid signature - provided signature does not match. (woocommerce_rest_authentication_error)"
        );
        assert_eq!(error_message(b""), "an empty body");
    }
}
