//! No configured secret ever leaves hookgate: every log line (at debug level) and every metric of a full
//! run of the real binary (start-up, deliveries, rejections, a reload, a refused reload, stop), plus the
//! output of `check` and `diagnose`, is searched for each secret as written, decoded, base64 (standard and
//! URL-safe, padded or not, at any alignment) and hex.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

const ENV_SECRET: &str = "env-secret-7fQ2mZ9xLw3R";
const FILE_SECRET: &str = "file-secret-Vb8Nn4Kp1Tq6";
const ENTITY_SECRET: &str = "ent&amp;ity-Zx93Lq&quot;";
const ENTITY_DECODED: &str = "ent&ity-Zx93Lq\"";
const SHA1_SECRET: &str = "sha1-secret-Ym4Rt7Px";
const ROTATED_SECRET: &str = "rotated-secret-Hs5Jd2Wq";

fn config(upstream: &str, spool: &std::path::Path, extra_secret: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
log:
  format: json
sources:
  - name: main
    path: /hooks/main
    secrets:
      - value: "{FIXTURE_SECRET}"
      - env: HOOKGATE_TEST_SECRET
      - file: secret.txt
      - value: '{ENTITY_SECRET}'{extra_secret}
  - name: legacy
    path: /hooks/legacy
    algorithm: sha1
    secrets:
      - value: "{SHA1_SECRET}"
routes:
  - name: all
    topics: ["*"]
    upstream: "{upstream}"
delivery:
  mode: queue
  spool_path: {}
"#,
        spool.display()
    )
}

/// Every form in which `secret` could leak: itself, and its base64 and hex encodings. Base64 is taken at
/// each of the three alignments, keeping only the characters that depend on the secret alone, so a secret
/// inside a longer encoded blob is found too.
pub(crate) fn encodings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("{b:02X}")).collect(),
    ];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes));
        for offset in 1..3 {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            let core = encoded.trim_end_matches('=');
            // Skip the first group (it mixes in the prefix) and the last (it may mix in what follows).
            forms.push(core[4..core.len() - 4].to_owned());
        }
    }
    forms
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [FIXTURE_SECRET, ENV_SECRET, FILE_SECRET, ENTITY_SECRET, ENTITY_DECODED, SHA1_SECRET, ROTATED_SECRET]
    {
        for form in encodings(secret) {
            assert!(
                !text.contains(&form),
                "{what} holds the secret {secret:?} (as {form:?}):\n{}",
                text.lines().find(|l| l.contains(&form)).unwrap_or_default()
            );
        }
    }
}

fn hookgate(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .env("HOOKGATE_TEST_SECRET", ENV_SECRET)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

// Over 80 lines: one binary taken through every kind of input while its whole output is kept to search.
#[tokio::test]
async fn no_secret_reaches_a_log_line_a_metric_or_a_command_output() {
    let dir = temp_dir("secrets-leak");
    let upstream = Upstream::start().await;
    let spool = dir.join("data/spool.db");
    std::fs::write(dir.join("secret.txt"), format!("{FILE_SECRET}\n")).unwrap();
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config(&upstream.url("/in"), &spool, "")).unwrap();

    let mut process =
        HookgateProcess::start_with_env(&file, &[("RUST_LOG", "debug"), ("HOOKGATE_TEST_SECRET", ENV_SECRET)]);
    let addr = process.addr;
    let admin = process.admin_addr();
    let fixture = Fixture::load("order-created");
    // Accepted, rejected in every way, and a ping.
    assert_eq!(send_raw(addr, &fixture.request("/hooks/main")).await.status, 200);
    assert_eq!(send_raw(addr, &Fixture::load("ping").request("/hooks/main")).await.status, 200);
    assert_eq!(send_raw(addr, &Fixture::load("tampered-body").request("/hooks/main")).await.status, 401);
    assert_eq!(send_raw(addr, &Fixture::load("order-created").request("/hooks/legacy")).await.status, 401);
    assert_eq!(send_raw(addr, &signed_request("/hooks/main", "order.updated", b"{\"id\":1}")).await.status, 200);
    let unsigned = raw_request("POST", "/hooks/main", "HTTP/1.0", &[], b"{\"id\":2}");
    assert_eq!(send_raw(addr, &unsigned).await.status, 401);
    assert_eq!(send_raw(addr, b"GET /nowhere HTTP/1.0\r\n\r\n").await.status, 404);
    eventually(Duration::from_secs(20), "both deliveries arrive", || upstream.received().len() == 2).await;
    let metrics = send_raw(admin, b"GET /metrics HTTP/1.0\r\n\r\n").await.text();
    assert!(metrics.contains("hookgate_requests_total"), "{metrics}");

    // A reload that rotates a secret in, then one that is refused (its error quotes the file).
    std::fs::write(&file, config(&upstream.url("/in"), &spool, &format!("\n      - value: \"{ROTATED_SECRET}\"")))
        .unwrap();
    process.signal("HUP");
    process.wait_for_log("the reload", |l| l["message"] == "configuration reloaded");
    let rotated = hookgate::verify::sign(
        hookgate::verify::Algorithm::Sha256,
        &hookgate::secret::Secret::new(ROTATED_SECRET.as_bytes().to_vec()),
        b"{\"id\":3}",
    );
    let request = raw_request(
        "POST",
        "/hooks/main",
        "HTTP/1.0",
        &[("X-WC-Webhook-Topic".into(), "order.updated".into()), ("X-WC-Webhook-Signature".into(), rotated)],
        b"{\"id\":3}",
    );
    assert_eq!(send_raw(addr, &request).await.status, 200, "the rotated secret is in force");
    std::fs::write(
        &file,
        config(&upstream.url("/in"), &spool, &format!("\n      - value: \"{ROTATED_SECRET}\"\n    colour: blue")),
    )
    .unwrap();
    process.signal("HUP");
    process.wait_for_log("the refused reload", |l| l["message"].as_str().is_some_and(|m| m.contains("reload refused")));
    let metrics_after = send_raw(admin, b"GET /metrics HTTP/1.0\r\n\r\n").await.text();

    process.signal("TERM");
    let (status, log) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let log = log.join("\n");
    assert!(log.contains("\"level\":\"DEBUG\""), "debug lines were captured");
    assert!(log.contains("colour"), "the refused reload's error is in the log");

    // The commands an operator runs on the same file.
    let check_bad = hookgate(&["check", "--config", file.to_str().unwrap()]);
    assert!(check_bad.contains("colour"), "{check_bad}");
    std::fs::write(&file, config(&upstream.url("/in"), &spool, &format!("\n      - value: \"{ROTATED_SECRET}\"")))
        .unwrap();
    let check_good = hookgate(&["check", "--config", file.to_str().unwrap()]);
    assert!(check_good.contains("main"), "{check_good}");
    let body = dir.join("body");
    std::fs::write(&body, &fixture.body).unwrap();
    let diagnose = hookgate(&[
        "diagnose",
        "--config",
        file.to_str().unwrap(),
        "--source",
        "main",
        "--signature",
        Fixture::load("tampered-body").field("signature"),
        "--body-file",
        body.to_str().unwrap(),
    ]);
    assert!(!diagnose.is_empty());

    for (what, text) in [
        ("the log", log.as_str()),
        ("the metrics", metrics.as_str()),
        ("the metrics after the reloads", metrics_after.as_str()),
        ("check on a broken file", check_bad.as_str()),
        ("check", check_good.as_str()),
        ("diagnose", diagnose.as_str()),
    ] {
        assert_no_secret(what, text);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The search itself finds a secret in each form it claims to.
#[test]
fn the_search_finds_every_encoding() {
    let text = format!(
        "x={} y={} z=AAAA{}",
        STANDARD.encode(FILE_SECRET),
        FILE_SECRET.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
        URL_SAFE_NO_PAD.encode(format!("ab{ENV_SECRET}cd"))
    );
    for secret in [FILE_SECRET, ENV_SECRET] {
        assert!(encodings(secret).iter().any(|form| text.contains(form)), "{secret} not found in {text}");
    }
}
