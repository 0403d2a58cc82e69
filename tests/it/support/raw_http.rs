//! A raw HTTP/1.x client that shows exactly what went over the wire.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Builds a request with a `Content-Length` matching the body.
pub fn raw_request(method: &str, path: &str, version: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} {version}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes on a new connection and reads one answer.
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

/// Reads one final answer (skipping `100 Continue`) from a stream: by `Content-Length`, or to the end.
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let read = async {
        let mut buffer = Vec::new();
        loop {
            let head_end = loop {
                if let Some(end) = find(&buffer, b"\r\n\r\n") {
                    break end;
                }
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before an answer: {:?}", String::from_utf8_lossy(&buffer));
                buffer.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
            buffer.drain(..head_end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap().to_owned();
            let status: u16 = parts.next().unwrap().parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect();
            if status == 100 {
                continue;
            }
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap());
            match length {
                Some(length) => {
                    while buffer.len() < length {
                        let mut chunk = [0u8; 8192];
                        let n = stream.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "connection closed inside a body");
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    buffer.truncate(length);
                }
                None => {
                    stream.read_to_end(&mut buffer).await.unwrap();
                }
            }
            return RawResponse { status, version, headers, body: buffer };
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("no answer within 30 s")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
