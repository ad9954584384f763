//! council-bridge: integration middleware for UK councils that share back-office services.
//!
//! Data moves one way through one module per stage:
//! [`sources`] → [`formats`] → [`mapping`] → [`canonical`] → [`store`] → [`amqp`],
//! orchestrated by [`pipeline`], run unattended by [`daemon`] (with its HTTP [`api`]) and driven
//! from [`cli`]. See ARCHITECTURE.md for the map and
//! the invariants, and `tests/architecture.rs` for the test that keeps the direction.

pub mod amqp;
pub mod api;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod formats;
pub mod mapping;
pub mod metrics;
pub mod pii;
pub mod pipeline;
pub mod schedule;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod toolkit;
