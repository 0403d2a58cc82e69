//! TLS to PostgreSQL: a server of the test's own with `ssl = on` and a certificate from a private CA.
//! With `sslmode=require` in the URL and that CA as `delivery.postgres.ca_file`, every connection the
//! gateway holds is encrypted; without `ca_file` the bundled roots do not know the CA, and the gateway
//! refuses to start rather than talk to a server it cannot verify.

use super::*;

/// Gives a file to the user the server runs as, readable by it alone, as PostgreSQL wants its key: run as
/// root, `scripts/postgres` runs the server as the `postgres` user.
fn hand_to_server(file: &Path) {
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        let chown = std::process::Command::new("chown").arg("postgres:").arg(file).status().unwrap();
        assert!(chown.success(), "chown postgres: {}", file.display());
    }
    std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// Turns TLS on in the throwaway server in `server`'s folder, with a certificate for 127.0.0.1 that `ca`
/// signed, and restarts it.
async fn serve_tls(server: &ThrowawayPostgres, ca: &PrivateCa) {
    let data = server.dir.join("data");
    let (cert_file, key_file) = (data.join("server.crt"), data.join("server.key"));
    ca.certificate_files("postgres", &cert_file, &key_file);
    hand_to_server(&cert_file);
    hand_to_server(&key_file);
    let settings = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
    let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
    std::io::Write::write_all(&mut conf, settings.as_bytes()).unwrap();
    server.run("restart").await;
}

/// The gateway's connections to the server at `url` (a client of the test's own, without TLS, is left
/// out): how many are encrypted, and how many are not.
async fn gateway_connections(url: &str) -> (i64, i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    connection.abort();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn with_sslmode_require_and_ca_file_every_connection_is_encrypted_and_without_the_ca_none_is_made() {
    let test = concat!(
        module_path!(),
        "::with_sslmode_require_and_ca_file_every_connection_is_encrypted_and_without_the_ca_none_is_made"
    );
    if !postgres_at_hand(test) {
        return;
    }
    let (server, url) = ThrowawayPostgres::start("tls").await;
    let ca = PrivateCa::new("hookgate test PostgreSQL CA");
    serve_tls(&server, &ca).await;
    let dir = temp_dir("queue-pg-tls");
    let ca_file = dir.join("pg-ca.pem");
    ca.write_to(&ca_file);
    std::fs::write(dir.join("pg-url"), format!("{url}?sslmode=require\n")).unwrap();
    let delivery = |ca_line: &str| {
        format!(
            "delivery:\n  mode: queue\n  postgres:\n    url_file: {}\n    max_connections: 2\n{ca_line}",
            dir.join("pg-url").display()
        )
    };
    let upstream = Upstream::start().await;
    let routes = route("orders", "\"order.*\"", &upstream.url("/"));

    let trusting = fixture_config(&routes, &delivery(&format!("    ca_file: {}\n", ca_file.display())));
    let gateway = TestGateway::start(&trusting).await;
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &order_body(1, 0))).await;
    assert_eq!(json(&answer)["status"], "queued", "{answer:?}");
    eventually(WAIT, "the queued order is delivered", || upstream.received().len() == 1).await;
    let (encrypted, plain) = gateway_connections(&url).await;
    assert!(encrypted >= 2, "the writer's and the listener's connections at least: {encrypted} encrypted");
    assert_eq!(plain, 0, "no connection of the gateway's goes without TLS");
    gateway.stop().await;

    // Without ca_file, only the bundled roots are trusted: the server's certificate is refused.
    let parsed = hookgate::config::Config::from_yaml(&fixture_config(&routes, &delivery("")), Path::new("t.yaml"));
    let refused = hookgate::server::Gateway::new(parsed.unwrap()).await.err().expect("an unknown CA is refused");
    let error = refused.to_string();
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "the error says why: {error}");
    let password = url.split(['@', ':']).nth(2).unwrap();
    assert!(!error.contains(password), "the URL's password is never shown: {error}");
    drop(server);
}
