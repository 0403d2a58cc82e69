//! hookgate's integration tests: a real hookgate (in process on `127.0.0.1:0`, or the real binary) and
//! real upstreams on loopback sockets, driven with the WooCommerce fixtures in
//! `tests/fixtures/woocommerce/` (the signature tests check those fixtures against the verifier alone).
//!
//! They are compiled as one binary, so the shared code is compiled once: `support` starts gateways,
//! upstreams and the binary, loads the fixtures and speaks raw HTTP; every other module is one area of
//! behaviour, named for it. Metrics are process-wide, so each test that reads them counts under source
//! and route names of its own.

mod support;

mod admin;
mod cli;
mod clients;
mod crash;
mod health;
mod hostile;
mod http2;
mod idle;
mod load;
mod proxy;
mod queue;
mod reload;
mod replay;
mod replicas;
mod secrets;
mod signatures;
mod store;
mod store_api;
mod tls;
mod upstream_tls;
mod woocommerce;
