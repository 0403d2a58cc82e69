//! The `hookgate` binary itself: `check`, `sign` and `serve`, run as a user would run them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_hookgate");

fn hookgate(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args).env_remove("HOOKGATE_CONFIG").env_remove("RUST_LOG");
    command
}

fn run_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A command that refuses its arguments exits without reading: a broken pipe is expected then.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml")
}

/// The example config's text, listening on ports the system picks.
fn example_on_free_ports() -> String {
    std::fs::read_to_string(example())
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
}

#[test]
fn check_summarises_the_example_without_printing_its_secret() {
    let output = hookgate(&["check", "--config", example().to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("demo-store at /webhooks/demo-store (sha256, 1 secret: value"), "{stdout}");
    assert!(
        stdout.contains(
            "fulfillment: order.created, order.updated from demo-store -> http://127.0.0.1:3000/woocommerce/orders"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("demo-secret-change-me"), "{stdout}");
    // Durations as the file writes them, and the key's own spelling: lines that can be copied back.
    assert!(stdout.contains("retry 1s to 5m, give up after 72h;"), "{stdout}");
    assert!(stdout.contains("(timeout 10s)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("unrouted: accept (answered 200 once kept")), "{stdout}");
}

/// `hookgate check --config FILE | head -3` panicked with "failed printing to stdout: Broken pipe": a
/// reader that stops early now ends each command quietly, with the exit code it would have had.
#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let example = example();
    let commands: [(&[&str], &[u8]); 2] =
        [(&["check", "--config", example.to_str().unwrap()], b""), (&["sign", "--secret", "s"], b"{}")];
    for (args, stdin) in commands {
        // The pipe's reading end is closed before hookgate starts: its first write meets a closed pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = hookgate(args).stdin(Stdio::piped()).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}: quietly");
    }
}

/// YAML traps in a secret's value: one cut short by ` #` is warned about by `check` and at start-up, one
/// YAML cannot read says to quote it, and neither shows the secret; the admin listener on the webhook
/// listener's address is refused with its line.
#[test]
fn check_and_serve_warn_about_a_secret_cut_short_and_check_explains_quoting() {
    let dir = temp_dir("cli-traps");
    let file = dir.join("hookgate.yaml");
    let write = |secret_line: &str| {
        let text = example_on_free_ports().replace("- value: \"demo-secret-change-me\"", secret_line);
        assert!(text.contains(secret_line), "the example's secret line was replaced");
        std::fs::write(&file, text).unwrap();
    };
    write("- value: demo-secret #change-me");
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "a warning, not an error");
    let warning = stdout.lines().find(|l| l.starts_with("warning: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(warning.contains("hookgate.yaml:") && warning.contains("holds \" #\""), "{warning}");
    assert!(warning.contains("quote the value"), "{warning}");
    assert!(!stdout.contains("demo-secret") && !stdout.contains("change-me"), "{stdout}");
    let process = HookgateProcess::start(&file);
    let logged = process.log.iter().find(|l| l.contains("holds \\\" #\\\"")).cloned();
    drop(process);
    let logged = logged.unwrap_or_else(|| panic!("no start-up warning"));
    assert!(logged.contains("\"level\":\"WARN\"") && !logged.contains("demo-secret"), "{logged}");

    write("- value: &pss");
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("& starts an anchor") && stderr.contains("write the secret in single quotes"), "{stderr}");
    assert!(!stderr.contains("pss"), "{stderr}");

    write("- value: \"demo-secret-change-me\"");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("admin_listen: \"127.0.0.1:0\"", "admin_listen: \"127.0.0.1:8080\"");
    std::fs::write(&file, text.replace("listen: \"127.0.0.1:0\"", "listen: \"0.0.0.0:8080\"")).unwrap();
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("hookgate.yaml:")
            && stderr.contains(": admin_listen 127.0.0.1:8080 is the webhook listener's address"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_takes_the_config_from_hookgate_config() {
    let output = hookgate(&["check"]).env("HOOKGATE_CONFIG", example()).output().unwrap();
    assert!(output.status.success());
}

#[test]
fn check_reports_every_problem_with_file_line_and_column_and_fails() {
    let dir = temp_dir("check-bad");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "sources:\n  - name: shop\n    path: /hooks/shop\n    secrets:\n      - env: HOOKGATE_CLI_TEST_UNSET\nroutes:\n  - name: r\n    source: nope\n    topics: [\"order.*\"]\n    upstream: http://127.0.0.1:1/\n",
    )
    .unwrap();
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let shown = file.display();
    assert!(
        stderr.contains(&format!("{shown}:5:9: environment variable HOOKGATE_CLI_TEST_UNSET is not set")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{shown}:8:13: route \"r\" names source \"nope\"")), "{stderr}");
    // Set the variable and only the route's problem is left; its secret never shows.
    let output = hookgate(&["check", "--config", file.to_str().unwrap()])
        .env("HOOKGATE_CLI_TEST_UNSET", "value-that-must-not-show")
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(2));
    assert!(all.contains("has 1 problem:"), "{all}");
    assert!(!all.contains("value-that-must-not-show"), "{all}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_fails_clearly_on_a_missing_file_and_warns_about_hidden_routes() {
    let output = hookgate(&["check", "--config", "/nonexistent/hookgate.yaml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("/nonexistent/hookgate.yaml: cannot read the configuration file")
    );

    let dir = temp_dir("check-hidden");
    let file = dir.join("hidden.yaml");
    std::fs::write(
        &file,
        "sources:\n  - name: shop\n    path: /h\n    secrets: [{value: s}]\nroutes:\n  - name: all\n    topics: [\"*\"]\n    upstream: http://127.0.0.1:1/\n  - name: orders\n    topics: [\"order.created\"]\n    upstream: http://127.0.0.1:2/\ndelivery:\n  mode: proxy\n",
    )
    .unwrap();
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    assert!(
        stdout.contains("warning: ") && stdout.contains("route \"orders\" is never used in proxy mode"),
        "{stdout}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A typo in a topic is allowed (a store may send topics of its own) but never silent: `check` and the
/// start-up log name its line and column and the nearest topic WooCommerce sends.
#[tokio::test]
async fn check_and_serve_warn_about_a_topic_woocommerce_never_sends() {
    let dir = temp_dir("check-topic-typo");
    let routes =
        "  - name: orders\n    topics: [\"orders.created\", \"order\"]\n    upstream: \"http://127.0.0.1:9/\"\n";
    let file = config_file(&dir, routes, &queue_delivery(&Backend::Sqlite, &dir, ""));
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().position(|l| l.contains("orders.created")).unwrap() + 1;
    let at = |topic: &str| {
        format!("{}:{line}:{}", file.display(), text.lines().nth(line - 1).unwrap().find(topic).unwrap() + 1)
    };
    let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "a warning, not an error: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let typo = format!(
        "warning: {}: route \"orders\": \"orders.created\" matches no WooCommerce topic; did you mean \"order.created\"?",
        at("\"orders.created\"")
    );
    assert!(stdout.contains(&typo), "{typo}\n{stdout}");
    let bare = format!(
        "warning: {}: route \"orders\": \"order\" matches no WooCommerce topic; did you mean \"order.*\"?",
        at("\"order\"")
    );
    assert!(stdout.contains(&bare), "{bare}\n{stdout}");

    // Logged before the line that says it serves, which the start waits for.
    let process = HookgateProcess::start(&file);
    let warning = process
        .log
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"].as_str().is_some_and(|m| m.contains(&typo["warning: ".len()..])))
        .unwrap_or_else(|| panic!("no typo warning at start-up: {:?}", process.log));
    assert_eq!(warning["level"], "WARN");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whether a 200 keeps a delivery no route takes is said plainly, in either mode.
#[test]
fn check_says_what_becomes_of_a_delivery_no_route_takes() {
    let dir = temp_dir("check-unrouted");
    let check = |extra: &str| {
        let file = config_file(&dir, ROUTE_TO_NOWHERE, extra);
        let output = hookgate(&["check", "--config", file.to_str().unwrap()]).output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let queue = check(&queue_delivery(&Backend::Sqlite, &dir, ""));
    assert!(queue.contains("unrouted: accept (answered 200 once kept in the spool as unrouted, for 168h;"), "{queue}");
    let proxy = check("");
    assert!(proxy.contains("unrouted: reject (answered 404: WooCommerce logs a failed delivery"), "{proxy}");
    assert!(!proxy.contains("warning:"), "{proxy}");
    let proxy_accept = check("unrouted: accept\n");
    assert!(proxy_accept.contains("unrouted: reject (answered 404"), "{proxy_accept}");
    assert!(
        proxy_accept
            .contains(": unrouted: accept keeps a delivery no route takes in the spool, and proxy mode has none"),
        "{proxy_accept}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sign_prints_what_woocommerce_sends_from_every_secret_source() {
    let dir = temp_dir("sign");
    for fixture in Fixture::all().into_iter().filter(|f| f.field("expect") == "accepted") {
        let (secret, algorithm, expected) =
            (fixture.field("secret"), fixture.field("algorithm"), fixture.field("signature"));
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let forms: [Vec<&str>; 3] = [
            vec!["--secret", secret],
            vec!["--secret-env", "HOOKGATE_SIGN_TEST_SECRET"],
            vec!["--secret-file", secret_file.to_str().unwrap()],
        ];
        for form in forms {
            let mut args = vec!["sign", "--algorithm", algorithm];
            args.extend(&form);
            let mut command = hookgate(&args);
            command.env("HOOKGATE_SIGN_TEST_SECRET", secret);
            let output = run_with_stdin(command, &fixture.body);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            assert_eq!(String::from_utf8(output.stdout).unwrap().trim_end(), expected, "{} {form:?}", fixture.name);
        }
    }
    // Without a secret, or with an unset variable, it refuses.
    let output = run_with_stdin(hookgate(&["sign"]), b"{}");
    assert!(!output.status.success());
    let output = run_with_stdin(hookgate(&["sign", "--secret-env", "HOOKGATE_SIGN_TEST_UNSET"]), b"{}");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HOOKGATE_SIGN_TEST_UNSET is not set"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The real binary serves a ping and a signed delivery, logs one line per request without the secret or
/// the body, and stops with exit code 0 on SIGTERM.
#[tokio::test]
async fn serve_runs_the_gateway_and_stops_cleanly_on_sigterm() {
    let upstream = Upstream::start().await;
    let dir = temp_dir("serve");
    let config = example_on_free_ports()
        .replace("demo-secret-change-me", FIXTURE_SECRET)
        .replace("http://127.0.0.1:3000/woocommerce/orders", &upstream.url("/orders"));
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config).unwrap();
    let process = HookgateProcess::start(&file);
    let addr = process.addr;
    let ping = send_raw(addr, &Fixture::load("ping").request("/webhooks/demo-store")).await;
    assert_eq!(ping.status, 200);
    let delivery = send_raw(addr, &Fixture::load("order-created").request("/webhooks/demo-store")).await;
    assert_eq!(delivery.status, 200, "{}", delivery.text());
    assert!(delivery.text().starts_with(r#"{"status":"queued","id":""#), "{}", delivery.text());
    eventually(Duration::from_secs(20), "the queued delivery arrives", || upstream.received().len() == 1).await;
    assert_eq!(upstream.received()[0].body, Fixture::load("order-created").body);
    assert!(dir.join("data/hookgate.db").exists(), "the spool sits beside the config file");

    process.signal("TERM");
    let (status, log) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    // Not a terminal: one JSON object per line.
    let events: Vec<serde_json::Value> =
        log.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let delivery = events.iter().find(|e| e["outcome"] == "queued").unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(delivery["message"], "request");
    assert_eq!(delivery["source"], "demo-store");
    assert_eq!(delivery["topic"], "order.created");
    assert_eq!(delivery["route"], "fulfillment");
    assert_eq!(delivery["webhook_id"], 535);
    assert_eq!(delivery["delivery_id"], "55ad626f0d76f210c25578142d82c1a9");
    assert_eq!(delivery["status"], 200);
    assert_eq!(delivery["bytes"], 3393);
    assert!(delivery["duration_ms"].is_number());
    assert!(events.iter().any(|e| e["outcome"] == "ping"), "{log:?}");
    assert!(events.iter().any(|e| e["message"] == "delivery attempt" && e["result"] == "delivered"), "{log:?}");
    let log = log.join("\n");
    assert!(!log.contains(FIXTURE_SECRET), "the secret never reaches the log");
    assert!(!log.contains("billing"), "the body never reaches the log");
    assert!(!log.contains("watched for config changes"), "the default spool has a folder of its own");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A spool in the config file's own folder would wake the config watcher on every commit: hookgate says so.
/// Not on Linux, where the watcher asks inotify for no write (`reload::a_spool_beside_the_config_file_...`).
#[cfg(not(target_os = "linux"))]
#[tokio::test]
async fn serve_warns_when_the_spool_shares_the_watched_config_folder() {
    let dir = temp_dir("spool-beside-config");
    let config = example_on_free_ports().replace("spool_path: ./data/hookgate.db", "spool_path: ./hookgate.db");
    assert!(config.contains("spool_path: ./hookgate.db"), "the example names its spool path");
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config).unwrap();
    let mut process = HookgateProcess::start(&file);
    let warning = process.wait_for_log("the spool-folder warning", |line| {
        line["message"].as_str().is_some_and(|m| m.contains("watched for config changes"))
    });
    assert_eq!(warning["level"], "WARN");
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn diagnose_explains_a_signature_that_does_not_verify() {
    let dir = temp_dir("cli-diagnose");
    let file = dir.join("hookgate.yaml");
    std::fs::write(
        &file,
        format!(
            "sources:\n  - name: shop\n    path: /h\n    secrets:\n      - value: \"an-old-one\"\n      - value: \"{FIXTURE_SECRET}\"\nroutes: []\ndelivery:\n  mode: proxy\n"
        ),
    )
    .unwrap();
    let fixture = Fixture::load("customer-created-sha1");
    let body_file = dir.join("body");
    std::fs::write(&body_file, &fixture.body).unwrap();
    let output = hookgate(&[
        "diagnose",
        "--config",
        file.to_str().unwrap(),
        "--source",
        "shop",
        "--signature",
        fixture.field("signature"),
        "--body-file",
        body_file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "It matches secret 2 (value (literal in the config file)) as written with sha1: set algorithm: sha1"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(FIXTURE_SECRET) && !stdout.contains("an-old-one"), "{stdout}");
    // The sha256 fixture, from standard input, verifies.
    let order = Fixture::load("order-created");
    let command = hookgate(&[
        "diagnose",
        "--config",
        file.to_str().unwrap(),
        "--source",
        "shop",
        "--signature",
        order.field("signature"),
    ]);
    let output = run_with_stdin(command, &order.body);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("The signature verifies"));
}

#[tokio::test]
async fn log_format_text_gives_human_lines_and_rust_log_overrides_the_level() {
    let dir = temp_dir("cli-log-text");
    let file = dir.join("hookgate.yaml");
    std::fs::write(
        &file,
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\nlog:\n  format: text\n  level: error\nsources:\n  - name: shop\n    path: /h\n    secrets: [{value: s}]\nroutes: []\ndelivery:\n  mode: proxy\n",
    )
    .unwrap();
    // The config says `error`, but HookgateProcess sets RUST_LOG=info: the info start-up line still shows.
    let process = HookgateProcess::start(&file);
    let first = process.log.last().unwrap().clone();
    assert!(first.contains("hookgate is serving") && first.contains(" listen=127.0.0.1:"), "{first}");
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_err(), "text, not JSON: {first}");
    process.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Every line the binary wrote, parsed as JSON (its log format when stderr is not a terminal).
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}")))
        .collect()
}

#[test]
fn a_gateway_that_cannot_open_its_spool_never_says_it_serves_and_says_why_in_its_log_format() {
    let dir = temp_dir("cli-second-gateway");
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, example_on_free_ports()).unwrap();
    let first = HookgateProcess::start(&file);
    let second = hookgate(&["serve", "--config", file.to_str().unwrap()]).env("RUST_LOG", "info").output().unwrap();
    assert!(!second.status.success(), "a second gateway on one spool must not run");
    let lines = json_lines(&second.stderr);
    assert!(
        !lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("hookgate is serving"))),
        "it said it serves before it could: {lines:?}"
    );
    let error = lines.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("no error line: {lines:?}"));
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("cannot open the spool (delivery.spool_path or delivery.postgres in"), "{message}");
    assert!(message.contains("another hookgate is delivering from"), "{message}");
    drop(first);
    std::fs::remove_dir_all(dir).unwrap();
}
