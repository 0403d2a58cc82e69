//! nginx, the binary, for the tests that need a real reverse proxy in front of a server: a TLS-terminating
//! proxy in front of the served WooCommerce store, say. `.ci/run` installs it when missing. Each nginx runs
//! from a folder of the test's own (its configuration, pid file, logs and temporary files all there, so it
//! never touches `/etc/nginx` or `/var`), in one process, and is killed when the test ends. Without nginx, a
//! test run by hand says how to install it and passes over the part that needs it; under CI (`CI` set) it
//! fails instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long nginx may take to listen: it does in milliseconds, unless its configuration is wrong.
const START_WAIT: Duration = Duration::from_secs(10);

/// The nginx binary: the first on `PATH`, else Debian's `/usr/sbin/nginx` (not on a user's `PATH`).
pub fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| candidate.is_file())
}

/// The nginx binary, or `None` (after saying how to install it) when there is none and this is not CI.
pub fn nginx_at_hand(test: &str) -> Option<PathBuf> {
    if let Some(binary) = nginx_binary() {
        return Some(binary);
    }
    let test = test.strip_prefix("it::").unwrap_or(test);
    let how = format!("{test} needs nginx: install it with `apt-get install nginx` (.ci/run does when it is missing)");
    assert!(std::env::var_os("CI").is_none(), "{how}; CI is set, so this is a failure");
    eprintln!("NOT RUN: {how}");
    None
}

/// A running nginx, killed when dropped. Its access log has one line per request: the request line and
/// the status of the answer.
pub struct Nginx {
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// nginx terminating TLS on a free loopback port with `cert_file` and `key_file`, passing every request
    /// on to `upstream` (`http://127.0.0.1:PORT`) with `headers` set on it; `None` when nginx is not at
    /// hand (see [`nginx_at_hand`]). Its files are kept in `dir`.
    pub async fn tls_proxy(
        test: &str,
        dir: &Path,
        (cert_file, key_file): (&Path, &Path),
        upstream: &str,
        headers: &[(&str, &str)],
    ) -> Option<Nginx> {
        let headers: String =
            headers.iter().map(|(name, value)| format!("      proxy_set_header {name} \"{value}\";\n")).collect();
        let server = |port: u16| {
            format!(
                "    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 location / {{\n      proxy_pass {upstream};\n{headers}    }}\n",
                cert_file.display(),
                key_file.display()
            )
        };
        Nginx::start(test, dir, server).await
    }

    /// nginx serving one `server` block, whose directives `server` writes given the free loopback port it
    /// must listen on; `None` when nginx is not at hand. It runs in the foreground as one process (no
    /// workers to outlive it), with its files in `dir`; this waits until it listens, and fails with its
    /// error log when it does not.
    pub async fn start(test: &str, dir: &Path, server: impl FnOnce(u16) -> String) -> Option<Nginx> {
        let binary = nginx_at_hand(test)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let at = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "master_process off;\nerror_log {error_log} info;\npid {pid};\nevents {{ worker_connections 64; }}\nhttp {{\n  \
             log_format request_and_status '$request $status';\n  access_log {access_log} request_and_status;\n  \
             client_body_temp_path {body};\n  proxy_temp_path {proxy};\n  fastcgi_temp_path {fastcgi};\n  \
             uwsgi_temp_path {uwsgi};\n  scgi_temp_path {scgi};\n  server {{\n{server}  }}\n}}\n",
            error_log = at("error.log"),
            pid = at("nginx.pid"),
            access_log = at("access.log"),
            body = at("body"),
            proxy = at("proxy"),
            fastcgi = at("fastcgi"),
            uwsgi = at("uwsgi"),
            scgi = at("scgi"),
            server = server(port),
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        let mut nginx = Nginx { port, dir: dir.to_path_buf(), child };
        nginx.wait_until_listening().await;
        Some(nginx)
    }

    /// Waits until nginx accepts connections on its port; fails with its logs when it exits or takes longer
    /// than [`START_WAIT`].
    async fn wait_until_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited ({status}) before listening on {}: {}", self.port, self.logs());
            }
            assert!(tokio::time::Instant::now() < deadline, "nginx is not listening on {}: {}", self.port, self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The access log so far: one `REQUEST-LINE STATUS` line per request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// What nginx wrote to its standard error and its error log, for a failure's message.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nginx's files (configuration, logs) are kept in {}", self.dir.display());
        }
    }
}
