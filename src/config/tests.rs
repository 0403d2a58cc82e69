use super::*;
use crate::verify::Algorithm;

const FILE: &str = "test.yaml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new(FILE))
}

/// The one problem a text has, asserting there is exactly one.
fn only_problem(text: &str) -> String {
    let error = parse(text).expect_err("the config should be refused");
    assert_eq!(error.problems.len(), 1, "{error}");
    error.problems[0].clone()
}

const MINIMAL: &str = "\
sources:
  - name: shop
    path: /hooks/shop
    secrets:
      - value: s3cret
routes:
  - name: orders
    topics: [\"order.*\"]
    upstream: http://127.0.0.1:3000/orders
";

#[test]
fn the_example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.delivery.mode(), DeliveryMode::Queue);
    let queue = config.delivery.queue().unwrap();
    assert_eq!(queue.spool.sqlite_path(), Some(path.parent().unwrap().join("./data/hookgate.db").as_path()));
    assert_eq!(queue.retry.max_backoff, DEFAULT_MAX_BACKOFF);
    assert_eq!(queue.dedupe.topics.len(), DEFAULT_DEDUPE_TOPICS.len());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn defaults_apply_to_a_minimal_config() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.limits.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(config.limits.body_timeout, DEFAULT_BODY_TIMEOUT);
    assert_eq!(config.routes.iter().next().unwrap().timeout, DEFAULT_ROUTE_TIMEOUT);
    assert_eq!(config.unrouted, Unrouted::Accept);
    assert_eq!(config.sources[0].verifier.algorithm(), Algorithm::Sha256);
    assert!(config.source_for_path("/hooks/shop").is_some());
    assert!(config.source_for_path("/hooks/shop/").is_none());
    assert_eq!(config.limits.max_unverified_bytes, DEFAULT_MAX_UNVERIFIED_BYTES);
    assert_eq!(config.limits.max_unverified_bytes_per_client, DEFAULT_MAX_UNVERIFIED_BYTES_PER_CLIENT);
    assert_eq!(config.limits.body_stall_timeout, DEFAULT_BODY_STALL_TIMEOUT);
    assert_eq!(config.limits.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert!(!config.http2, "HTTP/2 is off unless configured");
}

#[test]
fn an_unverified_budget_below_one_body_is_refused_with_its_line() {
    let text = format!("limits:\n  max_body_bytes: 2048\n  max_unverified_bytes: 1024\n{MINIMAL}");
    let problem = only_problem(&text);
    assert!(problem.contains("test.yaml:3:"), "{problem}");
    assert!(problem.contains("limits.max_unverified_bytes must be at least limits.max_body_bytes (2048)"), "{problem}");
}

#[test]
fn one_clients_share_of_unverified_bytes_lies_between_one_body_and_all_of_them() {
    let text = format!("limits:\n  max_body_bytes: 2048\n  max_unverified_bytes_per_client: 1024\n{MINIMAL}");
    let problem = only_problem(&text);
    assert!(problem.contains("test.yaml:3:"), "{problem}");
    assert!(
        problem.contains("max_unverified_bytes_per_client must be between limits.max_body_bytes (2048)"),
        "{problem}"
    );
    // Unset, it is a quarter of the default pool, but never less than one body, nor more than the pool.
    let config = parse(&format!("limits:\n  max_body_bytes: 33554432\n{MINIMAL}")).unwrap();
    assert_eq!(config.limits.max_unverified_bytes_per_client, 32 * 1024 * 1024);
    let config = parse(&format!("limits:\n  max_unverified_bytes: 8388608\n{MINIMAL}")).unwrap();
    assert_eq!(config.limits.max_unverified_bytes_per_client, 8 * 1024 * 1024);
}

#[test]
fn per_client_limits_default_to_what_a_store_and_a_load_test_never_reach() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.limits.max_requests_per_client, DEFAULT_MAX_REQUESTS_PER_CLIENT);
    const { assert!(DEFAULT_MAX_REQUESTS_PER_CLIENT >= 64, "a load test of 64 connections from one address") };
    assert!(config.trusted_proxies.is_empty(), "no proxy is trusted unless configured");
    let problem = only_problem(&format!("limits:\n  max_requests_per_client: 0\n{MINIMAL}"));
    assert!(problem.starts_with("test.yaml:2:28: limits.max_requests_per_client must be between 1"), "{problem}");
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let text = format!("{MINIMAL}trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.3\", \"2001:db8::/32\", \"::1\"]\n");
    let trusted = parse(&text).unwrap().trusted_proxies;
    for inside in ["10.1.2.3", "127.0.0.3", "2001:db8::7", "::1", "::ffff:10.0.0.1"] {
        assert!(trusted.contains(inside.parse().unwrap()), "{inside}");
    }
    for outside in ["11.0.0.1", "127.0.0.1", "2001:db9::7"] {
        assert!(!trusted.contains(outside.parse().unwrap()), "{outside}");
    }
}

#[test]
fn a_trusted_proxy_entry_that_is_not_what_was_meant_is_refused_with_its_line_and_fix() {
    let text = format!(
        "trusted_proxies:\n  - 10.0.0.0/33\n  - proxy.local\n  - 10.0.0.1/8\n  - 0.0.0.0/0\n  - \"::/0\"\n  - 10.0.0.1\n{MINIMAL}"
    );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.problems.len(), 5, "{error}");
    let expected = [
        "test.yaml:2:5: trusted_proxies: \"10.0.0.0/33\" is not an address or a CIDR range",
        "test.yaml:3:5: trusted_proxies: \"proxy.local\" is not an address or a CIDR range",
        "test.yaml:4:5: trusted_proxies: \"10.0.0.1/8\" has bits set past its /8 prefix: write \"10.0.0.0/8\" for the whole range, or \"10.0.0.1\" for the one address",
        "test.yaml:5:5: trusted_proxies: \"0.0.0.0/0\" trusts every address",
        "test.yaml:6:5: trusted_proxies: \"::/0\" trusts every address",
    ];
    for (problem, expected) in error.problems.iter().zip(expected) {
        assert!(problem.starts_with(expected), "{problem}");
    }
    assert!(error.problems[1].contains("write an address such as \"10.0.0.1\""), "{}", error.problems[1]);
}

#[test]
fn queue_mode_is_the_default_with_its_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.delivery.mode(), DeliveryMode::Queue);
    let queue = config.delivery.queue().unwrap();
    assert_eq!(queue.spool.sqlite_path(), Some(Path::new("./data/hookgate.db")));
    assert_eq!(queue.retry.initial_backoff, DEFAULT_INITIAL_BACKOFF);
    assert_eq!(queue.retry.max_backoff, DEFAULT_MAX_BACKOFF);
    assert_eq!(queue.retry.give_up_after, DEFAULT_GIVE_UP_AFTER);
    assert_eq!(queue.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(queue.max_spool_bytes, DEFAULT_MAX_SPOOL_BYTES);
    assert_eq!(queue.keep_delivered, DEFAULT_KEEP_DELIVERED);
    assert_eq!(queue.keep_unrouted, DEFAULT_KEEP_UNROUTED);
    assert_eq!(queue.dedupe.window, DEFAULT_DEDUPE_WINDOW);
    assert!(queue.dedupe.applies_to("order.created"));
    assert!(!queue.dedupe.applies_to("action.woocommerce_add_to_cart"));
    let off = parse(&format!("{MINIMAL}dedupe:\n  window: 0s\n")).unwrap();
    assert!(!off.delivery.queue().unwrap().dedupe.applies_to("order.created"), "a zero window turns dedupe off");
    let problem =
        only_problem(&format!("{MINIMAL}delivery:\n  retry:\n    initial_backoff: 10s\n    max_backoff: 1s\n"));
    assert!(problem.starts_with("test.yaml:13:18: delivery.retry.max_backoff is shorter"), "{problem}");
}

#[test]
fn proxy_mode_keeps_no_queue_settings_but_still_checks_their_keys() {
    let config =
        parse(&format!("{MINIMAL}delivery:\n  mode: proxy\n  spool_path: ./other.db\ndedupe:\n  window: 1m\n"))
            .unwrap();
    assert_eq!(config.delivery.mode(), DeliveryMode::Proxy);
    assert!(config.delivery.queue().is_none());
    let problem = only_problem(&format!("{MINIMAL}delivery:\n  mode: proxy\n  max_in_flight: 0\n"));
    assert!(problem.starts_with("test.yaml:12:18: delivery.max_in_flight must be between 1 and 1024"), "{problem}");
    let problem = only_problem(&format!("{MINIMAL}delivery:\n  mode: proxy\ndedupe:\n  window: soon\n"));
    assert!(problem.starts_with("test.yaml:13:11: dedupe.window: \"soon\" is not a duration"), "{problem}");
}

#[test]
fn an_unknown_key_names_its_line_and_the_keys_allowed() {
    let problem =
        only_problem(&MINIMAL.replace("    path: /hooks/shop\n", "    path: /hooks/shop\n    algoritm: sha1\n"));
    assert!(problem.starts_with("test.yaml:4:5: unknown field `algoritm`"), "{problem}");
    assert!(problem.contains("algorithm"), "{problem}");
}

#[test]
fn a_route_naming_an_unknown_source_is_refused_with_its_line() {
    let problem = only_problem(&MINIMAL.replace("    topics:", "    source: shopp\n    topics:"));
    assert!(problem.starts_with("test.yaml:8:13: route \"orders\" names source \"shopp\""), "{problem}");
    assert!(problem.contains("[\"shop\"]"), "{problem}");
    assert!(problem.contains("  8 |     source: shopp"), "the snippet shows the line: {problem}");
}

#[test]
fn duplicate_names_and_paths_are_refused() {
    let text = format!("{MINIMAL}  - name: orders\n    topics: [\"*\"]\n    upstream: http://127.0.0.1:3001/\n")
        .replace("routes:", "  - name: shop\n    path: /hooks/shop\n    secrets:\n      - value: other\nroutes:");
    let error = parse(&text).unwrap_err();
    let all = error.problems.join("\n");
    assert_eq!(error.problems.len(), 3, "{all}");
    assert!(all.contains("test.yaml:6:11: source name \"shop\" is already used on line 2"), "{all}");
    assert!(all.contains("test.yaml:7:11: path \"/hooks/shop\" is already the path of source \"shop\""), "{all}");
    assert!(all.contains("test.yaml:14:11: route name \"orders\" is already used on line 11"), "{all}");
}

#[test]
fn an_empty_secret_list_is_refused() {
    let problem = only_problem(&MINIMAL.replace("    secrets:\n      - value: s3cret\n", "    secrets: []\n"));
    assert!(problem.starts_with("test.yaml:4:14: source \"shop\" has no secrets"), "{problem}");
}

#[test]
fn a_missing_secrets_key_is_refused() {
    let problem = only_problem(&MINIMAL.replace("    secrets:\n      - value: s3cret\n", ""));
    assert!(problem.contains("missing field `secrets`"), "{problem}");
    assert!(problem.starts_with("test.yaml:3:5: missing field `secrets`"), "{problem}");
}

#[test]
fn an_unset_variable_and_an_unreadable_file_are_refused() {
    let text = MINIMAL.replace(
        "      - value: s3cret\n",
        "      - env: HOOKGATE_TEST_SURELY_UNSET_VARIABLE\n      - file: /nonexistent/hookgate/secret\n",
    );
    let error = parse(&text).unwrap_err();
    let all = error.problems.join("\n");
    assert_eq!(error.problems.len(), 2, "{all}");
    assert!(
        all.contains("test.yaml:5:9: environment variable HOOKGATE_TEST_SURELY_UNSET_VARIABLE is not set"),
        "{all}"
    );
    assert!(all.contains("test.yaml:6:9: cannot read secret file /nonexistent/hookgate/secret"), "{all}");
}

#[test]
fn a_secret_file_loses_one_trailing_newline_and_is_found_beside_the_config() {
    let dir = std::env::temp_dir().join(format!("hookgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "from-file\n").unwrap();
    let text = MINIMAL.replace("      - value: s3cret\n", "      - file: secret\n");
    let config = Config::from_yaml(&text, &dir.join("hookgate.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources[0].secrets[0].expose(), b"from-file");
    std::fs::write(dir.join("secret"), "two\n\n").unwrap();
    let config = Config::from_yaml(&text, &dir.join("hookgate.yaml")).unwrap();
    assert_eq!(config.sources[0].secrets[0].expose(), b"two\n");
    std::fs::write(dir.join("secret"), "\n").unwrap();
    let error = Config::from_yaml(&text, &dir.join("hookgate.yaml")).unwrap_err();
    assert!(error.problems[0].contains("is empty"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_urls_globs_and_durations_are_refused_with_their_lines() {
    let text = MINIMAL
        .replace("[\"order.*\"]", "[\"order.*\", \"order created\"]")
        .replace("http://127.0.0.1:3000/orders", "ftp://127.0.0.1/orders\n    timeout: 10 parsecs");
    let error = parse(&text).unwrap_err();
    let all = error.problems.join("\n");
    assert_eq!(error.problems.len(), 3, "{all}");
    assert!(all.contains("test.yaml:8:25: topic pattern \"order created\" holds ' '"), "{all}");
    assert!(
        all.contains("test.yaml:9:15: upstream \"ftp://127.0.0.1/orders\" must start with http:// or https://"),
        "{all}"
    );
    assert!(all.contains("test.yaml:10:14: timeout: \"10 parsecs\" is not a duration"), "{all}");
}

#[test]
fn an_upstream_with_credentials_is_refused_without_echoing_them() {
    let problem = only_problem(&MINIMAL.replace("http://127.0.0.1", "http://user:hunter2@127.0.0.1"));
    assert!(problem.starts_with("test.yaml:9:15: upstream holds credentials"), "{problem}");
    assert!(!problem.contains("hunter2"), "not in the message nor in the snippet: {problem}");
    assert!(problem.contains("http://<redacted>@127.0.0.1"), "{problem}");
    // An '@' in the path or query is no credential.
    let config = parse(&MINIMAL.replace("/orders", "/orders?notify=ops@example.com")).unwrap();
    assert_eq!(config.routes.iter().next().unwrap().upstream.query(), Some("notify=ops@example.com"));
}

#[test]
fn no_error_shows_a_literal_secret_from_the_lines_around_it() {
    // The problem is on the line after the secret; the snippet shows the lines before it.
    let text = MINIMAL.replace("      - value: s3cret\n", "      - value: \"TOPSECRET\"\n    webhook_ids: []\n");
    let problem = only_problem(&text);
    assert!(problem.contains("webhook_ids is empty"), "{problem}");
    assert!(problem.contains("- value: <redacted>"), "{problem}");
    assert!(!problem.contains("TOPSECRET"), "{problem}");
    // A secret written as a block scalar spans lines of its own: they are hidden too.
    let block = MINIMAL.replace(
        "      - value: s3cret\n",
        "      - value: >-\n          BLOCKSECRET-one\n          BLOCKSECRET-two\n    webhook_ids: []\n",
    );
    let problem = only_problem(&block);
    assert!(problem.contains("webhook_ids is empty"), "{problem}");
    assert!(!problem.contains("BLOCKSECRET"), "{problem}");
    let problem = only_problem(&block.replace("    webhook_ids: []\n", "    colour: blue\n"));
    assert!(problem.contains("unknown field `colour`") && !problem.contains("BLOCKSECRET"), "{problem}");
    // The same for an error found by the YAML parser itself.
    let problem =
        only_problem(&MINIMAL.replace("      - value: s3cret\n", "      - value: \"TOPSECRET\"\n    colour: blue\n"));
    assert!(problem.contains("unknown field `colour`"), "{problem}");
    assert!(!problem.contains("TOPSECRET"), "{problem}");
}

/// Found by the `config` fuzz target: serde-saphyr crops long snippet lines around the error's column, and
/// a cropped line (`…lue: "SECRET"`) had lost the `value:` that marked it for redaction.
#[test]
fn a_cropped_snippet_line_still_hides_its_secret() {
    let long = format!("# {}\u{0}{}\n", "x".repeat(70), "y".repeat(60));
    let text = MINIMAL.replace(
        "      - value: s3cret\n",
        &format!("      - value: \"{}CROPPEDSECRET\"\n{long}", " ".repeat(40).replace(' ', "z")),
    );
    let problem = only_problem(&text);
    assert!(problem.contains("unexpected character"), "{problem}");
    assert!(!problem.contains("CROPPEDSECRET"), "{problem}");
    assert!(problem.contains("value: <redacted>"), "{problem}");
    // A credential in an upstream URL, on a line cropped before its `://`.
    let text = MINIMAL.replace("http://127.0.0.1", &format!("http://{}:CROPPEDPASS@127.0.0.1", "u".repeat(60)))
        + &format!("# {}\u{0}\n", "x".repeat(90));
    let problem = only_problem(&text);
    assert!(!problem.contains("CROPPEDPASS"), "{problem}");
}

/// Found in review: the snippet's redaction looked only for the text `value:`, so a secret written in
/// another YAML spelling was shown.
#[test]
fn a_secret_in_any_yaml_spelling_stays_out_of_error_snippets() {
    let cases = [
        "      - \"value\": \"QSECRET\"\n    colour: blue\n",
        "      - 'value': QSECRET\n    colour: blue\n",
        "      - {\"value\": \"QSECRET\", x: 1}\n",
        "      - value : QSECRET\n    colour: blue\n",
        "      - value: \"QSECRET-first-line\nQSECRET-second-line\"\n    colour: blue\n",
        "      - value: 'QSECRET-first-line\n  QSECRET-second-line'\n    colour: blue\n",
        "      - \"QSECRET\"\n",
        "      - QSECRET\n",
    ];
    for case in cases {
        let text = MINIMAL.replace("      - value: s3cret\n", case);
        let error = parse(&text).expect_err(case).to_string();
        assert!(!error.contains("QSECRET"), "{case:?} showed the secret:\n{error}");
    }
    // A secrets list in flow style on one line.
    let text = MINIMAL.replace("    secrets:\n      - value: s3cret\n", "    secrets: [\"QSECRET\"]\n");
    let error = parse(&text).expect_err("a string is no secret entry").to_string();
    assert!(!error.contains("QSECRET"), "{error}");
    // What is not a secret is still shown, so the snippet keeps its use.
    let error =
        parse(&MINIMAL.replace("    path: /hooks/shop\n", "    path: /hooks/shop\n    colour: blue\n")).unwrap_err();
    assert!(error.to_string().contains("colour: blue"), "{error}");
}

#[test]
fn yaml_syntax_errors_name_the_file_line_and_column() {
    let problem = only_problem("sources: [\n");
    assert!(problem.starts_with("test.yaml:1:10: "), "{problem}");
    assert!(problem.contains("--> test.yaml:1:10"), "{problem}");
}

#[test]
fn log_settings_are_checked() {
    let config = parse(&format!("log:\n  format: json\n  level: debug\n{MINIMAL}")).unwrap();
    assert_eq!(config.log.format, Some(LogFormat::Json));
    assert_eq!(config.log.level, "debug");
    assert_eq!(parse(MINIMAL).unwrap().log.format, None, "chosen at start: text on a terminal, JSON otherwise");
    let problem = only_problem(&format!("log:\n  level: \"info,[\"\n{MINIMAL}"));
    assert!(problem.starts_with("test.yaml:2:10: log.level"), "{problem}");
    let problem = only_problem(&format!("log:\n  format: xml\n{MINIMAL}"));
    assert!(problem.contains("unknown variant `xml`"), "{problem}");
}

#[test]
fn a_wrong_value_type_names_its_line() {
    let problem = only_problem(&format!("limits:\n  max_body_bytes: lots\n{MINIMAL}"));
    assert!(problem.starts_with("test.yaml:2:19: "), "{problem}");
    let problem = only_problem(&format!("limits:\n  max_body_bytes: 0\n{MINIMAL}"));
    assert!(problem.starts_with("test.yaml:2:19: limits.max_body_bytes must be between 1 and"), "{problem}");
    let problem = only_problem(&format!("delivery:\n  mode: fast\n{MINIMAL}"));
    assert!(problem.starts_with("test.yaml:2:9: unknown variant `fast`"), "{problem}");
}

#[test]
fn check_warns_about_a_route_hidden_by_an_earlier_one() {
    let text = format!(
        "{MINIMAL}  - name: created\n    source: shop\n    topics: [\"order.created\"]\n    upstream: http://127.0.0.1:3001/\n  - name: coupons\n    topics: [\"coupon.*\"]\n    upstream: http://127.0.0.1:3002/\n"
    );
    // In queue mode every matching route receives the delivery: nothing is hidden.
    assert!(parse(&text).unwrap().warnings.is_empty());
    let config = parse(&format!("{text}delivery:\n  mode: proxy\n")).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("route \"created\" is never used in proxy mode: route \"orders\" (line 7)"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_route_for_every_source_is_hidden_by_one_for_the_only_source() {
    let text = format!(
        "{MINIMAL}  - name: again\n    topics: [\"order.updated\"]\n    upstream: http://127.0.0.1:3001/\ndelivery:\n  mode: proxy\n"
    )
    .replace("    topics: [\"order.*\"]", "    source: shop\n    topics: [\"order.*\"]");
    let config = parse(&text).unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("route \"again\" is never used"), "{:?}", config.warnings);
}

#[test]
fn unrouted_deliveries_are_kept_in_queue_mode_and_never_answered_200_and_dropped_unless_the_file_says_so() {
    assert_eq!(parse(MINIMAL).unwrap().unrouted, Unrouted::Accept, "queue mode keeps them");
    let keep = parse(&format!("{MINIMAL}delivery:\n  keep_unrouted: 2h\n")).unwrap();
    assert_eq!(keep.delivery.queue().unwrap().keep_unrouted, Duration::from_secs(7200));
    let problem = only_problem(&format!("{MINIMAL}delivery:\n  keep_unrouted: 0s\n"));
    assert!(problem.contains("delivery.keep_unrouted must be longer than zero"), "{problem}");
    let proxy = format!("{MINIMAL}delivery:\n  mode: proxy\n");
    let config = parse(&proxy).unwrap();
    assert_eq!(config.unrouted, Unrouted::Reject, "proxy mode has no spool: 404 unless told otherwise");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let config = parse(&format!("{proxy}unrouted: discard\n")).unwrap();
    assert_eq!(config.unrouted, Unrouted::Discard);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // `accept` promises a delivery kept, which proxy mode cannot keep: it rejects them, and says so.
    let config = parse(&format!("{proxy}unrouted: accept\n")).unwrap();
    assert_eq!(config.unrouted, Unrouted::Reject);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("test.yaml:12: unrouted: accept keeps a delivery no route takes in the spool, and proxy mode has none: such deliveries are answered 404"),
        "{:?}",
        config.warnings
    );
    let problem = only_problem(&format!("{MINIMAL}unrouted: keep\n"));
    assert!(problem.starts_with("test.yaml:10:11: unknown variant `keep`"), "{problem}");
}

#[test]
fn a_topic_no_woocommerce_store_sends_is_a_located_warning_with_the_nearest_one() {
    let text = MINIMAL.replace("[\"order.*\"]", "[\"orders.created\", \"order\", \"invoice.paid\", \"*.deleted\"]");
    let config = parse(&text).unwrap();
    assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with(
            "test.yaml:8:14: route \"orders\": \"orders.created\" matches no WooCommerce topic; did you mean \"order.created\"? (Ignore this"
        ),
        "{:?}",
        config.warnings
    );
    assert!(
        config.warnings[1].starts_with(
            "test.yaml:8:32: route \"orders\": \"order\" matches no WooCommerce topic; did you mean \"order.*\"?"
        ),
        "{:?}",
        config.warnings
    );
    assert!(
        config.warnings[2]
            .contains("\"invoice.paid\" matches no WooCommerce topic: WooCommerce sends order, product and coupon"),
        "{:?}",
        config.warnings
    );
    // A custom topic is allowed: the file still loads, and the routes take what they name.
    assert!(config.routes.first("shop", "invoice.paid").is_some());
}

#[test]
fn first_route_is_the_first_match_in_file_order() {
    let text = MINIMAL.replace("[\"order.*\"]", "[\"order.created\"]")
        + "  - name: rest\n    topics: [\"*\"]\n    upstream: http://127.0.0.1:3001/\n";
    let config = parse(&text).unwrap();
    assert_eq!(config.routes.first("shop", "order.created").unwrap().name, "orders");
    assert_eq!(config.routes.first("shop", "order.updated").unwrap().name, "rest");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "listen: nowhere\nsources:\n  - name: a b\n    path: hooks\n    secrets: []\nroutes:\n  - name: r\n    source: x\n    topics: []\n    upstream: nope\n";
    let error = parse(text).unwrap_err();
    assert_eq!(error.problems.len(), 7, "{error}");
    let shown = error.to_string();
    assert!(shown.starts_with("test.yaml has 7 problems:"), "{shown}");
}

#[test]
fn an_admin_listener_on_the_webhook_listeners_address_is_refused_with_its_line() {
    let problem = only_problem(&format!("listen: \"0.0.0.0:8080\"\nadmin_listen: \"127.0.0.1:8080\"\n{MINIMAL}"));
    assert!(
        problem.starts_with("test.yaml:2:15: admin_listen 127.0.0.1:8080 is the webhook listener's address"),
        "{problem}"
    );
    assert!(problem.contains("such as \"127.0.0.1:9090\""), "{problem}");
    // admin_listen left at its default, and listen taking it: the listen line is the one to change.
    let problem = only_problem(&format!("listen: \"127.0.0.1:9090\"\n{MINIMAL}"));
    assert!(
        problem.starts_with("test.yaml:1:9: listen 127.0.0.1:9090 takes the admin listener's default address"),
        "{problem}"
    );
    // Apart: other ports, other addresses, other families, or ports the system picks.
    for (listen, admin) in [
        ("0.0.0.0:8080", "127.0.0.1:9090"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("127.0.0.2:8080", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "[::1]:8080"),
    ] {
        let text = format!("listen: \"{listen}\"\nadmin_listen: \"{admin}\"\n{MINIMAL}");
        assert!(parse(&text).is_ok(), "{listen} and {admin}");
    }
    assert!(parse(&format!("listen: \"[::]:8080\"\nadmin_listen: \"127.0.0.1:8080\"\n{MINIMAL}")).is_err());
}

#[test]
fn a_secret_value_yaml_cannot_read_is_explained_as_a_quoting_matter_without_showing_it() {
    for value in ["&pss", "*pss", "@pss", "pss: more", "|pss", ""] {
        let text = MINIMAL.replace("value: s3cret", &format!("value: {value}"));
        let problem = only_problem(&text);
        assert!(problem.starts_with("test.yaml:5:"), "{value:?}: {problem}");
        assert!(problem.contains("write the secret in single quotes, '...'"), "{value:?}: {problem}");
        assert!(!problem.contains("<redacted> ("), "the fix is shown whole: {problem}");
        assert!(!problem.contains("pss"), "{value:?} shown: {problem}");
    }
    // Quoted, the same secret is read whole.
    let config = parse(&MINIMAL.replace("value: s3cret", "value: '&pss'")).unwrap();
    assert_eq!(config.sources[0].secrets[0].expose(), b"&pss");
}

#[test]
fn a_secret_value_yaml_reads_as_something_else_is_warned_about_with_its_line() {
    let config = parse(&MINIMAL.replace("value: s3cret", "value: s3cret #tail")).unwrap();
    assert_eq!(config.sources[0].secrets[0].expose(), b"s3cret", "YAML read a comment");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("test.yaml:5: this secret's value is unquoted and holds \" #\""));
    assert!(!config.warnings[0].contains("s3cret") && !config.warnings[0].contains("tail"));
    let config = parse(&MINIMAL.replace("value: s3cret", "value: &anchor s3cret")).unwrap();
    assert_eq!(config.sources[0].secrets[0].expose(), b"s3cret", "YAML read an anchor");
    assert!(config.warnings[0].starts_with("test.yaml:5: this secret's value starts with & or !"));
    let config = parse(&MINIMAL.replace("value: s3cret", "value: \"s3cret #tail\" # the March one")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

mod store;
mod upstream;

#[test]
fn the_postgres_spool_takes_one_url_and_never_shows_it() {
    let with = |delivery: &str| format!("{MINIMAL}delivery:\n  mode: queue\n{delivery}");
    let config =
        parse(&with("  postgres:\n    url: \"postgres://hg:pw-9@127.0.0.1:5432/hg\"\n    max_connections: 3\n"))
            .unwrap();
    let SpoolLocation::Postgres(postgres) = &config.delivery.queue().unwrap().spool else { panic!("not postgres") };
    assert_eq!((postgres.max_connections, postgres.url_from.as_str()), (3, "url"));
    assert_eq!(postgres.url.expose(), b"postgres://hg:pw-9@127.0.0.1:5432/hg");
    assert!(!format!("{postgres:?}").contains("pw-9"), "Debug shows no password");
    assert!(!config.delivery.queue().unwrap().spool.describe().contains("pw-9"));

    let both = only_problem(&with("  spool_path: ./s.db\n  postgres:\n    url: \"postgres://hg:pw-9@h/hg\"\n"));
    assert!(both.contains("delivery.spool_path and delivery.postgres are both set"), "{both}");
    assert!(!both.contains("pw-9"), "{both}");
    let none = only_problem(&with("  postgres:\n    max_connections: 3\n"));
    assert!(none.contains("delivery.postgres needs its URL: give exactly one of url_env"), "{none}");
    let two = only_problem(&with("  postgres:\n    url_env: A_VAR\n    url: \"postgres://hg:pw-9@h/hg\"\n"));
    assert!(two.contains("more than one URL") && !two.contains("pw-9"), "{two}");
    let unset = only_problem(&with("  postgres:\n    url_env: HOOKGATE_TEST_SURELY_UNSET_URL\n"));
    assert!(unset.contains("environment variable HOOKGATE_TEST_SURELY_UNSET_URL is not set"), "{unset}");
    let garbled = only_problem(&with("  postgres:\n    url: \"postgres://hg:pw-9@h:notaport/hg\"\n"));
    assert!(garbled.contains("the PostgreSQL URL from url cannot be read"), "{garbled}");
    assert!(!garbled.contains("pw-9"), "neither the message nor the snippet shows the password: {garbled}");
}
