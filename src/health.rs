//! `hookgate health`: asks the admin listener's `/readyz` (or any URL given) and succeeds only on a 200, so
//! that an image with no shell and no curl (distroless) can have a `HEALTHCHECK`, and Kubernetes an exec
//! probe. One plain HTTP/1.1 GET over a standard-library socket: the admin listener speaks nothing else,
//! and a probe needs no runtime.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::Config;

/// Asked when neither `--url` nor `--config` says otherwise: `/readyz` on the default `admin_listen`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/readyz";

/// The whole exchange ends within this: far inside Docker's default health-check timeout (30 s). A
/// Kubernetes exec probe needs `timeoutSeconds: 3` or more (its default, 1 s, would cut it short).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The start of an answer that is read: a status line and `/readyz`'s reason fit many times over.
const ANSWER_BYTES: usize = 4096;

/// The most of an answer's body quoted in the reason line.
const REASON_BYTES: usize = 200;

/// Runs `hookgate health`: the URL is `url`, else `/readyz` on the `admin_listen` of `config`, else
/// [`DEFAULT_URL`]. Exit 0 on a 200; otherwise one line on standard error and exit 1 (2 when the config
/// cannot say where to ask).
pub fn run(url: Option<&str>, config: Option<&Path>) -> ExitCode {
    let url = match (url, config) {
        (Some(url), _) => url.to_owned(),
        (None, Some(config)) => match Config::load_admin_listen(config) {
            Ok(admin) => readyz_url(admin),
            Err(error) => {
                let first_lines: Vec<&str> = error.problems.iter().filter_map(|p| p.lines().next()).collect();
                eprintln!("cannot tell where to ask: {}", first_lines.join("; "));
                return ExitCode::from(2);
            }
        },
        (None, None) => DEFAULT_URL.to_owned(),
    };
    match probe(&url, TIMEOUT) {
        Ok(()) => {
            crate::output::print(&format!("ready: {url} answered 200\n"));
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("not ready: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `/readyz` on the admin listener bound to `admin`. A wildcard address (`0.0.0.0`, `::`) is asked on
/// loopback, where a listener on every address answers too.
pub fn readyz_url(admin: SocketAddr) -> String {
    admin_url(admin, "/readyz")
}

/// `path` on the admin listener bound to `admin`, asked on loopback when it is bound to every address.
pub fn admin_url(admin: SocketAddr, path: &str) -> String {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}{path}", SocketAddr::new(ip, admin.port()))
}

/// GETs `url` within `timeout`: `Ok` when it answers 200, otherwise one line saying why not (what it
/// answered, or why there was no answer).
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs can be asked (the admin listener speaks plain HTTP)"));
    }
    let authority = uri.authority().ok_or_else(|| format!("{url}: the URL has no host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let addresses: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?.collect();
    let mut stream = connect(&addresses, deadline).map_err(|e| format!("{url}: cannot connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: hookgate-health\r\nConnection: close\r\n\r\n");
    let answer = exchange(&mut stream, request.as_bytes(), deadline).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("{url}: no answer within {} s", timeout.as_secs()),
        _ => format!("{url}: the exchange failed: {e}"),
    })?;
    let status = status_of(&answer).ok_or_else(|| format!("{url}: the answer is not HTTP"))?;
    if status == 200 {
        return Ok(());
    }
    Err(format!("{url} answered {status}{}", body_excerpt(&answer)))
}

/// Connects to the first of `addresses` that accepts before the deadline.
fn connect(addresses: &[SocketAddr], deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the host has no address");
    for address in addresses {
        match TcpStream::connect_timeout(address, time_left(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Sends the request and reads the answer until the server closes (it was asked to) or
/// [`ANSWER_BYTES`] have come.
fn exchange(stream: &mut TcpStream, request: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while answer.len() < ANSWER_BYTES {
        stream.set_read_timeout(Some(time_left(deadline)?))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // A server that closes at once after its answer may reset the connection: the answer came.
            Err(error) if error.kind() == ErrorKind::ConnectionReset && !answer.is_empty() => break,
            Err(error) => return Err(error),
        }
    }
    Ok(answer)
}

/// What is left until `deadline`; an error once it has passed (a socket timeout of zero means none).
fn time_left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(std::io::Error::new(ErrorKind::TimedOut, "timed out")) } else { Ok(left) }
}

/// The status code of an HTTP/1.x answer's status line.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let mut parts = std::str::from_utf8(line).ok()?.split_whitespace();
    parts.next().filter(|version| version.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// `: <the start of the body>`, on one line, or nothing when the body is empty.
fn body_excerpt(answer: &[u8]) -> String {
    let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(&[][..], |at| &answer[at + 4..]);
    let text: String = String::from_utf8_lossy(&body[..body.len().min(REASON_BYTES)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_admin_address_is_asked_on_loopback() {
        assert_eq!(readyz_url("0.0.0.0:9090".parse().unwrap()), "http://127.0.0.1:9090/readyz");
        assert_eq!(readyz_url("[::]:9191".parse().unwrap()), "http://[::1]:9191/readyz");
        assert_eq!(readyz_url("10.1.2.3:9090".parse().unwrap()), "http://10.1.2.3:9090/readyz");
    }

    #[test]
    fn the_status_and_the_start_of_the_body_make_the_reason() {
        let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 41\r\n\r\n{\"status\":\"not_ready\",\"reason\":\"stopping\"}";
        assert_eq!(status_of(answer), Some(503));
        assert_eq!(body_excerpt(answer), r#": {"status":"not_ready","reason":"stopping"}"#);
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(body_excerpt(b"HTTP/1.1 500 x\r\n\r\nline one\nline two"), ": line one line two");
    }

    #[test]
    fn only_plain_http_urls_are_asked() {
        let error = probe("https://127.0.0.1:9090/readyz", TIMEOUT).unwrap_err();
        assert!(error.contains("only http:// URLs"), "{error}");
        assert!(probe("not a url", TIMEOUT).unwrap_err().contains("is not a URL"));
    }
}
