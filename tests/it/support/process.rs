//! The real `hookgate` binary, run as a user would run it, with its log lines collected.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The real `hookgate` binary serving a config file, with its log lines collected.
pub struct HookgateProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl HookgateProcess {
    /// Starts `hookgate serve --config FILE` (the file should listen on port 0) and waits until it says
    /// where it listens.
    pub fn start(config_file: &Path) -> HookgateProcess {
        HookgateProcess::start_with_env(config_file, &[])
    }

    /// [`HookgateProcess::start`] with more environment variables (they may override `RUST_LOG`).
    pub fn start_with_env(config_file: &Path, env: &[(&str, &str)]) -> HookgateProcess {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command.args(["serve", "--config"]).arg(config_file).env("RUST_LOG", "info").envs(env.iter().copied());
        HookgateProcess::spawn(command)
    }

    /// [`HookgateProcess::start`] under a shell's `ulimit` (`"-n 64"`: at most 64 open files).
    pub fn start_with_ulimit(config_file: &Path, limit: &str) -> HookgateProcess {
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", &format!("ulimit {limit} && exec \"$0\" serve --config \"$1\"")])
            .arg(env!("CARGO_BIN_EXE_hookgate"))
            .arg(config_file)
            .env("RUST_LOG", "info");
        HookgateProcess::spawn(command)
    }

    fn spawn(mut command: std::process::Command) -> HookgateProcess {
        use std::io::BufRead;
        let mut child = command
            .env_remove("HOOKGATE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_in, lines) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_in.send(line);
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("hookgate did not start: {log:?}"));
            log.push(line.clone());
            if let Some(addr) = logged_listen_address(&line) {
                break addr;
            }
        };
        HookgateProcess { child, addr, lines, log }
    }

    /// Waits until a log line (parsed as JSON) satisfies `wanted`, and returns it.
    pub fn wait_for_log(&mut self, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line for: {what}; log: {:?}", self.log));
            self.log.push(line.clone());
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && wanted(&json)
            {
                return json;
            }
        }
    }

    /// A scrape of the admin listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        let request = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        crate::support::send_raw(self.admin_addr(), request).await.text()
    }

    /// The admin listener's address, from the start-up line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.log
            .iter()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("admin")?.as_str()?.parse().ok())
            .expect("the start-up line names the admin address")
    }

    /// Sends a signal (`TERM`, `KILL`) to the process.
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(sent.unwrap().success(), "kill -{name} failed");
    }

    /// Waits for the process to end and returns its exit status, with every log line read.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for HookgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The webhook listener's address from hookgate's start-up line, in JSON (`"listen":"..."`) or text
/// (`listen=...`) format.
fn logged_listen_address(line: &str) -> Option<SocketAddr> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json.get("listen")?.as_str()?.parse().ok();
    }
    line.split(" listen=").nth(1)?.split_whitespace().next()?.parse().ok()
}
