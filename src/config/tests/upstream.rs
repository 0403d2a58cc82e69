//! A route's `tls` and `headers`: what they build, and each mistake refused with its line and a fix,
//! never showing a key or a header's value.

use super::*;

/// A private CA, a certificate it signed (for 127.0.0.1), and a key that fits neither, as PEM files in a
/// fresh folder.
fn certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookgate-config-upstream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("client.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("other.key"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    dir
}

/// MINIMAL with its route's upstream on https and `lines` added to the route (each indented by four).
fn route_with(lines: &str) -> String {
    MINIMAL.replace("http://127.0.0.1:3000/orders", "https://127.0.0.1:3000/orders") + lines
}

fn problems(text: &str, dir: &Path) -> String {
    let error = Config::from_yaml(text, &dir.join(FILE)).expect_err("the config should be refused");
    error.problems.join("\n")
}

#[test]
fn a_route_with_tls_gets_a_client_of_its_own_and_its_files_are_watched() {
    let dir = certificates("built");
    let tls =
        "    tls:\n      ca_file: ca.pem\n      client_cert_file: client.pem\n      client_key_file: client.key\n";
    let text = route_with(tls) + "  - name: plain\n    topics: [\"*\"]\n    upstream: https://example.com/\n";
    let config = Config::from_yaml(&text, &dir.join(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let route = config.routes.by_name("orders").unwrap();
    let client = route.client.as_ref().expect("a client of its own");
    let expected = format!(
        "trusts the bundled roots and {}; presents {}",
        dir.join("ca.pem").display(),
        dir.join("client.pem").display()
    );
    assert_eq!(client.description(), expected);
    assert!(config.routes.by_name("plain").unwrap().client.is_none(), "no tls: the shared client");
    for file in ["ca.pem", "client.pem", "client.key"] {
        assert!(config.files.contains(&dir.join(file)), "{file} is watched: {:?}", config.files);
    }
    let only = route_with("    tls:\n      ca_file: ca.pem\n      only_ca_file: true\n");
    let config = Config::from_yaml(&only, &dir.join(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let client = config.routes.by_name("orders").unwrap().client.clone().unwrap();
    assert_eq!(client.description(), format!("trusts only {}", dir.join("ca.pem").display()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_mistakes_name_their_line_and_the_fix() {
    let dir = certificates("mistakes");
    let cases = [
        ("    tls:\n      ca_file: missing.pem\n", "test.yaml:11:16: cannot read routes[orders].tls.ca_file"),
        ("    tls:\n      ca_file: client.key\n", "test.yaml:11:16: routes[orders].tls.ca_file"),
        (
            "    tls:\n      client_cert_file: client.pem\n",
            "test.yaml:11:25: routes[orders].tls.client_cert_file is set without client_key_file: give both",
        ),
        (
            "    tls:\n      client_key_file: client.key\n",
            "test.yaml:11:24: routes[orders].tls.client_key_file is set without client_cert_file",
        ),
        (
            "    tls:\n      client_cert_file: client.pem\n      client_key_file: other.key\n",
            "test.yaml:12:24: the client key does not fit the client certificate",
        ),
        (
            "    tls:\n      only_ca_file: true\n",
            "test.yaml:11:21: routes[orders].tls.only_ca_file is set without ca_file",
        ),
        ("    tls: {}\n", "routes[orders].tls sets nothing"),
    ];
    for (lines, expected) in cases {
        let all = problems(&route_with(lines), &dir);
        assert!(all.contains(expected), "{lines:?}:\n{all}");
        assert!(!all.contains("PRIVATE KEY"), "a key is never shown: {all}");
    }
    assert!(problems(&route_with("    tls:\n      ca_file: client.key\n"), &dir).contains("holds no certificate"));
    let http = MINIMAL.to_owned() + "    tls:\n      ca_file: ca.pem\n";
    let all = problems(&http, &dir);
    assert!(all.contains("test.yaml:11:7: routes[orders].tls applies to an https:// upstream only"), "{all}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn headers_are_secrets_whose_names_hookgate_does_not_own() {
    let dir = certificates("headers");
    std::fs::write(dir.join("token"), "Bearer FILETOKEN-9s8d\n").unwrap();
    let text = route_with(
        "    headers:\n      Authorization: { file: token }\n      X-Api-Key:\n        value: \"LITERALKEY-4k2j\"\n",
    );
    let config = Config::from_yaml(&text, &dir.join(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let route = config.routes.by_name("orders").unwrap();
    let headers: Vec<(&str, &[u8], bool)> =
        route.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes(), v.is_sensitive())).collect();
    assert_eq!(
        headers,
        [("authorization", &b"Bearer FILETOKEN-9s8d"[..], true), ("x-api-key", &b"LITERALKEY-4k2j"[..], true)]
    );
    assert!(config.files.contains(&dir.join("token")), "the file is watched: {:?}", config.files);
    let debug = format!("{config:?}");
    assert!(!debug.contains("FILETOKEN") && !debug.contains("LITERALKEY"), "{debug}");

    let refused = [
        ("Host", "hookgate sets it from the upstream URL"),
        ("content-length", "hookgate sets it from the upstream URL"),
        ("Connection", "it is hop-by-hop"),
        ("X-WC-Webhook-Topic", "hookgate forwards WooCommerce's own"),
        ("X-Hookgate-Route", "hookgate sets it itself"),
    ];
    for (name, why) in refused {
        let all = problems(&route_with(&format!("    headers:\n      {name}: {{ value: x }}\n")), &dir);
        let expected = format!("test.yaml:11:7: routes[orders].headers: {name} cannot be set by a route: {why}");
        assert!(all.contains(&expected), "{name}:\n{all}");
    }
    let twice = route_with("    headers:\n      X-Key: { value: a }\n      x-key: { value: b }\n");
    assert!(
        problems(&twice, &dir).contains("test.yaml:12:7: routes[orders].headers: x-key is already given on line 11")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_header_error_shows_its_value() {
    let dir = certificates("header-values");
    let cases = [
        ("      Authorization: \"Bearer BARESECRET\"\n", "this secrets, headers or store key entry cannot be read"),
        ("      Authorization: { value: \"Bearer BAD\\nSECRET\" }\n", "is not a valid header value"),
        ("      \"Bearer NAMESECRET\": { env: X }\n", "this name is not a header name"),
        ("      Authorization: { value: \"\" }\n", "the value of header Authorization of route \"orders\""),
        ("      Authorization: { env: HOOKGATE_TEST_SURELY_UNSET_VARIABLE }\n", "is not set (header Authorization"),
        ("      Authorization: { file: missing-token }\n", "cannot read the file"),
    ];
    for (line, expected) in cases {
        let all = problems(&route_with(&format!("    headers:\n{line}")), &dir);
        assert!(all.contains(expected), "{line:?}:\n{all}");
        assert!(all.contains("test.yaml:11:"), "located on the header's line: {all}");
        assert!(!all.contains("SECRET"), "{line:?} showed the value:\n{all}");
    }
    // Every line of a headers block is hidden, a plain `value:` line too: its name could be a credential
    // written in the wrong place.
    let block = route_with(
        "    headers:\n      Authorization:\n        value: \"Bearer BLOCKSECRET\"\n      Host: { env: X }\n",
    );
    let all = problems(&block, &dir);
    assert!(all.contains("test.yaml:13:7: routes[orders].headers: Host cannot be set by a route"), "{all}");
    assert!(!all.contains("SECRET") && !all.contains("Authorization"), "{all}");
    std::fs::remove_dir_all(&dir).unwrap();
}
