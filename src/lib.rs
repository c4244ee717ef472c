//! The `ferrocast` binary's library half: configuration, the process's one metrics registry,
//! and the wiring of the pipeline stages — ingest → (transcode) → origin, and the edge. Only
//! this crate knows every stage; each stage crate knows `media` alone.

pub mod app;
pub mod config;
pub mod hook;
pub mod metrics;
