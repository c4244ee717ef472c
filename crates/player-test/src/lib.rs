//! The player-test library: an LL-HLS media playlist parser and player-like clients that
//! measure what viewers get. Today: a light live-edge viewer (blocking reloads, one part per
//! reload, as hls.js does in low-latency mode) and the load generator built on it. The fuller
//! client (ABR, buffer model, glass-to-glass latency, browser test) builds on this.

pub mod clock;
pub mod glass;
pub mod playlist;
pub mod viewer;

pub use playlist::{MediaPlaylist, PartEntry, SegmentEntry};
pub use viewer::{light_viewer, load, LoadReport, ViewerStats};
