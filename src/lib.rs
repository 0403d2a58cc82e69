//! hookgate: a gateway between WooCommerce stores and the services that act on their webhooks.
//!
//! The modules, in the order a delivery passes through them:
//!
//! 1. [`server`]: the listeners, one connection ([`server::conn`]), overload shedding and the one place
//!    where every end of a request becomes an answer ([`server::service`]), the contract's steps
//!    ([`server::gateway`]) and the request's log line ([`server::log`]).
//! 2. [`woocommerce`]: the sender's contract: header names, webhook ids, the ping, what a payload says.
//! 3. [`verify`]: WooCommerce's signature; the only way to a [`verify::VerifiedDelivery`].
//! 4. [`route`]: topic patterns and which routes take a delivery.
//! 5. [`forward`]: a delivery sent upstream and the header policy (proxy mode, and the queue's attempts),
//!    through [`upstream`]'s clients (the shared one, or a route's own for its `tls`) with the route's
//!    own headers.
//! 6. [`spool`]: queue mode's durable store, entered only with a verified delivery, and its dispatcher.
//! 7. [`answer`]: what each end of a request ([`answer::Accepted`], [`answer::Rejection`]) answers and is
//!    counted as.
//!
//! Around them: [`config`] turns the YAML file into validated values once, [`secret`] holds and resolves
//! secrets, [`metrics`] and the admin listener ([`server::admin`]) are what Prometheus and Kubernetes
//! see, [`diagnose`] explains a signature that does not match, [`cli`] is the command line (its output
//! through [`output`]), and [`health`] is the probe an image without a shell runs against the admin listener.
//! [`store_api`] is the store's REST API (its webhooks), reached with the key of a source's `store`.
//! [`clock`] is where the time is read for what is stored and scheduled, so tests can pause it.

#![forbid(unsafe_code)]

pub mod answer;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod output;
pub mod route;
pub mod secret;
pub mod seen;
pub mod server;
pub mod spool;
pub mod store_api;
pub mod upstream;
pub mod verify;
pub mod woocommerce;
