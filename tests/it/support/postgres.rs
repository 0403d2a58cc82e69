//! A PostgreSQL server for the queue tests' second backend: `.ci/run` starts one and names it in
//! `HOOKGATE_POSTGRES_URL`. Each test gets an empty database of its own on it, so tests run side by side.
//! Without the variable, a test run by hand says how to start a server and passes over the part that needs
//! it; under CI (`CI` set) it fails instead.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The variable naming the server: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, a user who may
/// `CREATE DATABASE`.
pub const POSTGRES_VARIABLE: &str = "HOOKGATE_POSTGRES_URL";

/// How long a test waits for the server to create its database or answer one of its queries.
const SERVER_WAIT: Duration = Duration::from_secs(30);

/// An empty database of one test's own, dropped when the test ends; kept (and named on standard error)
/// when the test failed, so that its spool can be read afterwards.
pub struct PostgresDatabase {
    /// The database's URL, as hookgate is given it.
    pub url: String,
    name: String,
    /// Work for the helper thread that holds the connections (see [`PostgresDatabase::created`]).
    requests: UnboundedSender<Request>,
    helper: Option<std::thread::JoinHandle<()>>,
}

/// What the helper thread is asked to do.
enum Request {
    /// One read, and where its rows go.
    Query { sql: String, rows: mpsc::Sender<Result<Rows, String>> },
    /// The test is done: close the connections, and drop the database unless `keep`.
    Finish { keep: bool },
}

/// A query's rows, each value as text (`NULL` as `None`).
type Rows = Vec<Vec<Option<String>>>;

impl PostgresDatabase {
    /// A new database on the server `HOOKGATE_POSTGRES_URL` names; `None` (after saying how to start a
    /// server) when the variable is not set and this is not CI.
    pub async fn created(test: &str) -> Option<PostgresDatabase> {
        let test = test.strip_prefix("it::").unwrap_or(test);
        if !postgres_at_hand(test) {
            return None;
        }
        let server_url = std::env::var(POSTGRES_VARIABLE).expect("a URL in UTF-8");
        let name = format!("hg_{:016x}", fastrand::u64(..));
        let url = with_database(&server_url, &name);
        // The connections live on a thread of their own with its own runtime: the tests read the spool
        // from synchronous closures (`eventually`), and a test's clock may be paused.
        let (ready_in, ready) = tokio::sync::oneshot::channel();
        let (requests, queries) = unbounded_channel();
        let (database_name, database_url) = (name.clone(), url.clone());
        let helper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(serve(server_url, database_name, database_url, ready_in, queries));
        });
        let created = tokio::time::timeout(SERVER_WAIT, ready).await;
        let outcome = created.unwrap_or_else(|_| panic!("{test}: no answer from {POSTGRES_VARIABLE}'s server"));
        if let Err(error) = outcome.unwrap_or_else(|_| Err("the helper thread ended".to_owned())) {
            panic!("{test}: cannot create a database on the server {POSTGRES_VARIABLE} names: {error}");
        }
        Some(PostgresDatabase { url, name, requests, helper: Some(helper) })
    }

    /// Runs one read-only query and gives back its rows, every value as PostgreSQL writes it as text
    /// (`NULL` as `None`).
    pub fn query(&self, sql: &str) -> Rows {
        let (rows_in, rows) = mpsc::channel();
        self.requests.send(Request::Query { sql: sql.to_owned(), rows: rows_in }).unwrap();
        match rows.recv_timeout(SERVER_WAIT) {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => panic!("{sql}: {error}"),
            Err(_) => panic!("{sql}: no answer from PostgreSQL in {SERVER_WAIT:?}"),
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let keep = std::thread::panicking();
        if keep {
            eprintln!("the failed test's spool is kept in PostgreSQL database {}", self.name);
        }
        let _ = self.requests.send(Request::Finish { keep });
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

/// The helper thread's work: create the database, answer queries until the test is done, then drop it.
async fn serve(
    server_url: String,
    name: String,
    url: String,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
    mut requests: UnboundedReceiver<Request>,
) {
    let created = async {
        let server = connect(&server_url).await?;
        server.simple_query(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((server, connect(&url).await?))
    };
    let (server, database) = match created.await {
        Ok(clients) => clients,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let keep = loop {
        match requests.recv().await {
            Some(Request::Query { sql, rows }) => {
                let _ = rows.send(rows_of(&database, &sql).await);
            }
            Some(Request::Finish { keep }) => break keep,
            None => break false,
        }
    };
    drop(database);
    if !keep {
        // Best effort: FORCE ends the connections a gateway that was not stopped may still hold.
        let _ = server.simple_query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

async fn rows_of(client: &Client, sql: &str) -> Result<Rows, String> {
    let messages = client.simple_query(sql).await.map_err(|e| e.to_string())?;
    let rows = messages.iter().filter_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
        _ => None,
    });
    Ok(rows.collect())
}

/// `url` with its database (the path) replaced by `database`, query parameters kept.
fn with_database(url: &str, database: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let path = url[after_scheme..].find('/').map_or(url.len(), |at| after_scheme + at);
    let query = url[path..].find('?').map_or("", |at| &url[path + at..]);
    format!("{}/{database}{query}", &url[..path])
}

/// A throwaway PostgreSQL server of one test's own (`scripts/postgres`), for a test that stops it or
/// changes its settings without touching any other test's; stopped however the test ends, its folder kept when it failed.
pub struct ThrowawayPostgres {
    /// Its folder: the data in `data/`, its URL in `url`.
    pub dir: PathBuf,
}

impl ThrowawayPostgres {
    /// Starts a server in a new folder directly under `/tmp` (run as root, the server runs as the
    /// `postgres` user, who must reach it), and gives back its URL.
    pub async fn start(name: &str) -> (ThrowawayPostgres, String) {
        let server = ThrowawayPostgres { dir: PathBuf::from(format!("/tmp/hg-pg-{name}-{:016x}", fastrand::u64(..))) };
        server.run("start").await;
        let url = std::fs::read_to_string(server.dir.join("url")).unwrap().trim().to_owned();
        (server, url)
    }

    /// Runs `scripts/postgres COMMAND DIR` (`pause`, `restart`), and waits for it.
    pub async fn run(&self, command: &'static str) {
        let dir = self.dir.clone();
        let output = tokio::task::spawn_blocking(move || script(command, &dir)).await.unwrap();
        // Its standard output (the URL, with a password) is not shown.
        assert!(output.status.success(), "scripts/postgres {command}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let stopped = script("stop", &self.dir);
        if !stopped.status.success() {
            eprintln!("scripts/postgres stop {}: {}", self.dir.display(), String::from_utf8_lossy(&stopped.stderr));
        }
        if std::thread::panicking() {
            eprintln!("the failed test's PostgreSQL server (stopped) is kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn script(command: &str, dir: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres");
    std::process::Command::new("bash").arg(script).arg(command).arg(dir).output().unwrap()
}

/// Whether PostgreSQL is at hand: `HOOKGATE_POSTGRES_URL` set says a server runs and its binaries are
/// installed (for a [`ThrowawayPostgres`]). Without it, says how to start one and passes over the test, or fails under CI.
pub fn postgres_at_hand(test: &str) -> bool {
    if std::env::var_os(POSTGRES_VARIABLE).is_some() {
        return true;
    }
    let test = test.strip_prefix("it::").unwrap_or(test);
    let how = format!(
        "{test} needs PostgreSQL: start one with `bash scripts/postgres start /tmp/hookgate-pg` and run the \
         tests with {POSTGRES_VARIABLE}=$(cat /tmp/hookgate-pg/url)"
    );
    assert!(std::env::var_os("CI").is_none(), "{how}; CI is set, so this is a failure");
    eprintln!("NOT RUN: {how}");
    false
}
