//! hookgate: a gateway between WooCommerce stores and the services that act on their webhooks.
//!
//! A request goes through these modules in this order: [`server`] (listener and the contract's steps),
//! [`verify`] (WooCommerce's signature), [`route`] (topic patterns), [`forward`] (the upstream client).
//! [`config`] turns the YAML file into validated values once; [`answer`] maps every failure to its one
//! HTTP answer; [`cli`] is the command line.

#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod forward;
pub mod metrics;
pub mod route;
pub mod secret;
pub mod server;
pub mod spool;
pub mod verify;
