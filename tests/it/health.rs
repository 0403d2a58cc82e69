//! `hookgate health`, the probe a distroless image runs: exit 0 only when `/readyz` answers 200, and one
//! line saying why otherwise. Against the real binary's admin listener, and against stand-ins on real
//! sockets for the answers a gateway gives only in passing (503 while it stops) or never (no answer).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("health")
        .args(args)
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A server on 127.0.0.1 that answers every connection with `answer` (or, when `None`, holds it without a
/// word), for as long as the test runs.
fn stand_in(answer: Option<&'static str>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().map_while(Result::ok) {
            // The whole request head first: closing with unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            match answer {
                Some(answer) => {
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    let _ = stream.read(&mut buffer);
                }
                None => held.push(stream),
            }
        }
    });
    addr
}

#[test]
fn health_passes_on_a_ready_gateway_and_fails_with_one_line_on_anything_else() {
    let dir = temp_dir("health-gateway");
    let file = config_file(&dir, ROUTE_TO_NOWHERE, "");
    let process = HookgateProcess::start(&file);
    let url = format!("http://{}/readyz", process.admin_addr());
    let ready = health(&["--url", &url]);
    assert_eq!(ready.status.code(), Some(0), "{}", stderr(&ready));
    assert_eq!(String::from_utf8_lossy(&ready.stdout), format!("ready: {url} answered 200\n"));

    let stopping = stand_in(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 42\r\nconnection: close\r\n\r\n{\"status\":\"not_ready\",\"reason\":\"stopping\"}",
    ));
    let unready = health(&["--url", &format!("http://{stopping}/readyz")]);
    assert_eq!(unready.status.code(), Some(1));
    assert_eq!(
        stderr(&unready),
        format!(
            "not ready: http://{stopping}/readyz answered 503: {{\"status\":\"not_ready\",\"reason\":\"stopping\"}}\n"
        )
    );
    process.signal("TERM");
    let (status, _) = process.wait();
    assert_eq!(status.code(), Some(0));
    let gone = health(&["--url", &url]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).starts_with(&format!("not ready: {url}: cannot connect: ")), "{}", stderr(&gone));
    assert_eq!(stderr(&gone).lines().count(), 1, "one line: {}", stderr(&gone));

    let silent = stand_in(None);
    let started = Instant::now();
    let hung = health(&["--url", &format!("http://{silent}/readyz")]);
    assert_eq!(hung.status.code(), Some(1));
    assert!(stderr(&hung).contains("no answer within 2 s"), "{}", stderr(&hung));
    assert!(started.elapsed() < Duration::from_secs(5), "it gives up on its own: {:?}", started.elapsed());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn health_asks_the_admin_listener_the_config_names_without_its_secrets() {
    let ready =
        stand_in(Some("HTTP/1.1 200 OK\r\ncontent-length: 18\r\nconnection: close\r\n\r\n{\"status\":\"ready\"}"));
    let dir = temp_dir("health-config");
    let file = dir.join("hookgate.yaml");
    // A wildcard admin address is asked on loopback; the secret's variable is not set here (as in a probe
    // that does not share the gateway's environment), and is not needed.
    std::fs::write(
        &file,
        format!(
            "admin_listen: \"0.0.0.0:{}\"\nsources:\n  - name: s\n    path: /s\n    secrets: [{{env: HOOKGATE_HEALTH_TEST_UNSET}}]\n",
            ready.port()
        ),
    )
    .unwrap();
    let output = health(&["--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("ready: http://127.0.0.1:{}/readyz answered 200\n", ready.port())
    );
    // HOOKGATE_CONFIG stands for --config, as for every command.
    let output =
        Command::new(env!("CARGO_BIN_EXE_hookgate")).arg("health").env("HOOKGATE_CONFIG", &file).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    std::fs::write(&file, "admin_listen: nine\n").unwrap();
    let output = health(&["--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("admin_listen \"nine\" is not an address"), "{}", stderr(&output));
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    std::fs::remove_dir_all(dir).unwrap();
}
