//! OAuth 1.0a, one-legged, as WooCommerce's REST API checks it over plain http (`check_oauth_signature`
//! in WooCommerce 11.0.1's `class-wc-rest-authentication.php`): the `oauth_*` parameters go in the query
//! string beside the request's own, and the signature covers all of them, the method and the URL. A JSON
//! body is not part of what is signed.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// The signature method: WooCommerce takes HMAC-SHA1 and HMAC-SHA256; SHA-256 is the stronger.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA256";

/// `wc_rest_urlencode_rfc3986`: PHP's `rawurlencode`, which leaves only letters, digits and `-_.~` as
/// they are.
pub fn rfc3986(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The string WooCommerce signs: `METHOD&rawurlencode(url)&` and the parameters (without
/// `oauth_signature`) sorted by key as bytes (`uksort` with `strcmp`), each key and value encoded, each
/// `key=value` encoded again, joined with `%26`. `url` is the home URL followed by the request's path,
/// without a query.
pub fn base_string(method: &str, url: &str, parameters: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = parameters.iter().filter(|(key, _)| key != "oauth_signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let joined: Vec<String> =
        sorted.iter().map(|(key, value)| rfc3986(&format!("{}={}", rfc3986(key), rfc3986(value)))).collect();
    format!("{}&{}&{}", method.to_ascii_uppercase(), rfc3986(url), joined.join("%26"))
}

/// The signature of `base_string`, HMAC-SHA256 keyed with the consumer secret and `&` (one-legged: no
/// token secret), in standard base64.
pub fn signature(base_string: &str, consumer_secret: &Secret) -> String {
    let mut key = zeroize::Zeroizing::new(consumer_secret.expose().to_vec());
    key.push(b'&');
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(base_string.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What makes one request's signature: the clock and a nonce the store has not seen within 15 minutes.
pub struct Stamp {
    /// Seconds since the Unix epoch; the store refuses one more than 15 minutes from its own clock.
    pub timestamp: u64,
    /// 32 letters and digits, new for each request.
    pub nonce: String,
}

impl Stamp {
    /// Now, with a fresh nonce.
    pub fn now() -> Stamp {
        let timestamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let nonce = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
        Stamp { timestamp, nonce }
    }
}

/// The query string of a signed request: `parameters` (the request's own, such as `per_page`) and the
/// `oauth_*` ones with the signature, each encoded. `url` is the home URL followed by the path.
pub fn signed_query(
    method: &str,
    url: &str,
    parameters: &[(String, String)],
    consumer_key: &Secret,
    consumer_secret: &Secret,
    stamp: &Stamp,
) -> String {
    let mut all = parameters.to_vec();
    all.extend([
        ("oauth_consumer_key".to_owned(), String::from_utf8_lossy(consumer_key.expose()).into_owned()),
        ("oauth_nonce".to_owned(), stamp.nonce.clone()),
        ("oauth_signature_method".to_owned(), SIGNATURE_METHOD.to_owned()),
        ("oauth_timestamp".to_owned(), stamp.timestamp.to_string()),
    ]);
    let signature = signature(&base_string(method, url, &all), consumer_secret);
    all.push(("oauth_signature".to_owned(), signature));
    all.iter().map(|(key, value)| format!("{}={}", rfc3986(key), rfc3986(value))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request WooCommerce would check, with parameters that need encoding (a space, `~`, `&`, a
    /// non-ASCII letter, keys out of order).
    fn parameters() -> Vec<(String, String)> {
        [
            ("per_page", "100"),
            ("oauth_consumer_key", "ck_test"),
            ("oauth_nonce", "abcdefghijklmnopqrstuvwxyz012345"),
            ("oauth_signature_method", "HMAC-SHA256"),
            ("oauth_timestamp", "1764547200"),
            ("search", "a b~c&d=é"),
            ("page", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The expected values come from PHP running the lines of WooCommerce 11.0.1's
    /// `check_oauth_signature`, `normalize_parameters`, `join_with_equals_sign` and
    /// `wc_rest_urlencode_rfc3986` on the same input (php from ../shared/woocommerce-site):
    ///
    /// ```sh
    /// php -r 'function enc($v){return is_array($v)?array_map("enc",$v):str_replace(array("+","%7E"),array(" ","~"),rawurlencode($v));}
    ///   $p=array("per_page"=>"100","oauth_consumer_key"=>"ck_test","oauth_nonce"=>"abcdefghijklmnopqrstuvwxyz012345",
    ///   "oauth_signature_method"=>"HMAC-SHA256","oauth_timestamp"=>"1764547200","search"=>"a b~c&d=é","page"=>"2");
    ///   uksort($p,"strcmp"); $p=array_combine(enc(array_keys($p)),enc(array_values($p))); $q=array();
    ///   foreach($p as $k=>$v){$q[]=enc($k."=".$v);}
    ///   $s="GET&".rawurlencode("http://127.0.0.1:18481/wp-json/wc/v3/webhooks")."&".implode("%26",$q);
    ///   echo $s,"\n",base64_encode(hash_hmac("sha256",$s,"cs_secret"."&",true)),"\n";'
    /// ```
    #[test]
    fn the_signature_is_the_one_woocommerce_computes() {
        let base = base_string("get", "http://127.0.0.1:18481/wp-json/wc/v3/webhooks", &parameters());
        assert_eq!(base, EXPECTED_BASE);
        assert_eq!(signature(&base, &Secret::new(b"cs_secret".to_vec())), EXPECTED_SIGNATURE);
    }

    #[test]
    fn a_signed_query_carries_every_parameter_encoded_and_the_signature() {
        let stamp = Stamp { timestamp: 1_764_547_200, nonce: "n".repeat(32) };
        let query = signed_query(
            "GET",
            "http://shop/wp-json/wc/v3/webhooks",
            &[("per_page".to_owned(), "100".to_owned())],
            &Secret::new(b"ck_key".to_vec()),
            &Secret::new(b"cs_secret".to_vec()),
            &stamp,
        );
        assert!(query.starts_with("per_page=100&oauth_consumer_key=ck_key&oauth_nonce=nnnn"), "{query}");
        assert!(query.contains("&oauth_signature_method=HMAC-SHA256&oauth_timestamp=1764547200&oauth_signature="));
        assert!(!query.contains("cs_secret"), "the secret never travels: {query}");
        assert_eq!(Stamp::now().nonce.len(), 32);
    }

    /// What PHP printed for the test above (the command is in its doc comment).
    const EXPECTED_BASE: &str = "GET&http%3A%2F%2F127.0.0.1%3A18481%2Fwp-json%2Fwc%2Fv3%2Fwebhooks&oauth_consumer_key%3Dck_test%26oauth_nonce%3Dabcdefghijklmnopqrstuvwxyz012345%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1764547200%26page%3D2%26per_page%3D100%26search%3Da%2520b~c%2526d%253D%25C3%25A9";
    const EXPECTED_SIGNATURE: &str = "ROkvhnQOkptmmZ9Qi9mcodZG/n9RpsuSFnzf9Mv1Wyg=";
}
