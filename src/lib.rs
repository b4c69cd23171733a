//! roomcast: self-hosted video rooms and live broadcast on GStreamer.
//!
//! Layers, one direction of dependency: [`edge`] (HTTP, WebSocket, web
//! client) → [`control`] (rooms, participants, tokens) → [`media`]
//! (GStreamer) → [`store`] (SQLite); [`webhooks`] queues the control
//! layer's events in the store and posts them. [`server`] wires them together;
//! [`loadgen`] is a synthetic participant for tests and benchmarks.

#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod edge;
pub mod ids;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod model;
pub mod server;
pub mod signaling;
pub mod store;
pub mod webhooks;
