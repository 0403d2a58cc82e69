//! A source's `store`: what a valid block builds, and each mistake refused with its line and a fix, never
//! showing the REST key.

use super::*;

/// MINIMAL with a `store` block for its source, whose lines are `lines` (each indented by six).
fn with_store(lines: &str) -> String {
    MINIMAL.replace("routes:\n", &format!("    store:\n{lines}routes:\n"))
}

const VALID: &str = "      url: \"http://127.0.0.1:18481\"
      consumer_key: { value: \"ck_0123456789abcdef\" }
      consumer_secret: { value: \"cs_fedcba9876543210\" }
      delivery_url: \"http://127.0.0.1:8080/hooks/shop\"
";

#[test]
fn a_valid_store_block_builds_its_settings_with_defaults() {
    let config = parse(&with_store(VALID)).unwrap_or_else(|e| panic!("{e}"));
    let store = config.sources[0].store.as_ref().expect("the source has a store");
    assert_eq!(store.url, "http://127.0.0.1:18481");
    assert_eq!(store.delivery_url, "http://127.0.0.1:8080/hooks/shop");
    assert_eq!(store.consumer_key.expose(), b"ck_0123456789abcdef");
    assert_eq!(store.consumer_secret.expose(), b"cs_fedcba9876543210");
    assert_eq!(store.watch, Some(DEFAULT_STORE_WATCH));
    assert!(store.reactivate && store.backfill);
    assert_eq!(store.trusts, "the bundled roots");
    assert!(parse(MINIMAL).unwrap().sources[0].store.is_none(), "a source without store has none");
}

#[test]
fn watch_zero_turns_watching_off_and_the_flags_are_read() {
    let text = with_store(&format!("{VALID}      watch: 0s\n      reactivate: false\n      backfill: false\n"));
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let store = config.sources[0].store.as_ref().unwrap();
    assert_eq!(store.watch, None);
    assert!(!store.reactivate && !store.backfill);
    let text = with_store(&format!("{VALID}      watch: 1m\n"));
    assert_eq!(parse(&text).unwrap().sources[0].store.as_ref().unwrap().watch, Some(Duration::from_secs(60)));
}

#[test]
fn the_key_is_never_shown_in_debug() {
    let config = parse(&with_store(VALID)).unwrap();
    let shown = format!("{:?}", config.sources[0]);
    assert!(!shown.contains("ck_0123") && !shown.contains("cs_fedc"), "{shown}");
    assert!(shown.contains("value (literal in the config file)"), "{shown}");
}

#[test]
fn a_missing_key_variable_is_named_and_its_neighbour_never_shown() {
    let text = with_store(&VALID.replace(
        "consumer_key: { value: \"ck_0123456789abcdef\" }",
        "consumer_key: { env: HOOKGATE_TEST_UNSET_STORE_KEY }",
    ));
    let problem = only_problem(&text);
    assert!(problem.contains("environment variable HOOKGATE_TEST_UNSET_STORE_KEY is not set"), "{problem}");
    assert!(problem.contains("store.consumer_key of source \"shop\""), "{problem}");
    assert!(!problem.contains("cs_fedc"), "the consumer secret on the next line is shown: {problem}");
}

#[test]
fn an_invalid_url_is_refused_with_its_key() {
    let problem = only_problem(&with_store(&VALID.replace("http://127.0.0.1:18481", "ftp://127.0.0.1")));
    assert!(
        problem.contains("sources[shop].store.url \"ftp://127.0.0.1\" must be an http:// or https:// URL"),
        "{problem}"
    );
    let problem = only_problem(&with_store(&VALID.replace("http://127.0.0.1:8080/hooks/shop", "not a url")));
    assert!(problem.contains("sources[shop].store.delivery_url"), "{problem}");
    let problem = only_problem(&with_store(&VALID.replace("http://127.0.0.1:18481", "http://admin:pa55@127.0.0.1")));
    assert!(problem.contains("holds credentials") && !problem.contains("pa55"), "{problem}");
}

#[test]
fn a_key_written_in_the_wrong_shape_is_never_shown() {
    // A plain string where { env | file | value } belongs: serde's own message would quote it.
    let text = with_store(&VALID.replace("{ value: \"cs_fedcba9876543210\" }", "\"cs_fedcba9876543210\""));
    let error = parse(&text).expect_err("a bare string is refused");
    let shown = error.to_string();
    assert!(!shown.contains("cs_fedc"), "{shown}");
    assert!(shown.contains("this secrets, headers or store key entry cannot be read"), "{shown}");
    // A problem elsewhere in the block shows its lines with the key redacted.
    let text = with_store(&format!("{VALID}      watch: soon\n"));
    let problem = only_problem(&text);
    assert!(problem.contains("sources[shop].store.watch"), "{problem}");
    assert!(!problem.contains("ck_0123") && !problem.contains("cs_fedc"), "{problem}");
}

#[test]
fn the_examples_store_block_parses_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut in_block = false;
    let uncommented: Vec<String> = text
        .lines()
        .map(|line| {
            if line == "    # store:" {
                in_block = true;
                return "    store:".to_owned();
            }
            match line.strip_prefix("    #   ") {
                Some(rest) if in_block => format!("      {rest}"),
                _ => {
                    in_block = false;
                    line.to_owned()
                }
            }
        })
        .collect();
    let uncommented = uncommented
        .join("\n")
        .replace("{ env: DEMO_STORE_WC_KEY }", "{ value: \"ck_example\" }")
        .replace("{ env: DEMO_STORE_WC_SECRET }", "{ value: \"cs_example\" }")
        // A CA file that exists only on a real host.
        .replace("ca_file: /etc/hookgate/store-ca.pem", "# ca_file");
    assert!(uncommented.contains("    store:\n      url:"), "the example holds a commented store block");
    let config = parse(&uncommented).unwrap_or_else(|e| panic!("{e}"));
    let store = config.sources[0].store.as_ref().expect("the uncommented block is read");
    assert_eq!(store.url, "https://shop.example.com");
    assert_eq!(store.watch, Some(DEFAULT_STORE_WATCH));
}

#[test]
fn a_delivery_url_off_the_sources_path_and_a_backfill_over_http_are_located_warnings() {
    let config = parse(&with_store(VALID)).unwrap_or_else(|e| panic!("{e}"));
    let warnings = config.warnings.join("\n");
    assert!(!warnings.contains("delivery_url ends in"), "the example's path is the source's: {warnings}");
    let in_queue_mode = !MINIMAL.contains("mode: proxy");
    assert_eq!(warnings.contains("store.url is plain http"), in_queue_mode, "{warnings}");

    let elsewhere = VALID.replace("/hooks/shop\"", "/hooks/other\"");
    let config = parse(&with_store(&elsewhere)).unwrap_or_else(|e| panic!("{e}"));
    let warning = config.warnings.iter().find(|w| w.contains("delivery_url ends in /hooks/other")).expect("a warning");
    assert!(warning.starts_with("test.yaml:") && warning.contains("not in the source's path /hooks/shop"), "{warning}");

    let https = VALID.replace("url: \"http://127.0.0.1:18481\"", "url: \"https://shop.example.com\"");
    let config = parse(&with_store(&https)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.warnings.iter().any(|w| w.contains("plain http")), "{:?}", config.warnings);
}
