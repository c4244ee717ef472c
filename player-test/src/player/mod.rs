//! The LL-HLS player: the async driver around the pure pieces ([`crate::playlist`],
//! [`crate::playback`], [`crate::abr`], [`crate::mp4`]) and, optionally, a real decoder
//! ([`crate::decode`]) that reads the visual clock code for glass-to-glass latency.
//!
//! How it plays, as Apple's LL-HLS client rules ask:
//! - A multivariant playlist picks the starting variant (the best one under `start_bandwidth`);
//!   a media playlist URL plays that one rendition.
//! - It starts `PART-HOLD-BACK` behind the live edge, on an independent part, and fetches
//!   whole segments when more than a segment behind, parts near the edge.
//! - At the edge it never polls: a blocking reload (`_HLS_msn`/`_HLS_part`, with `_HLS_skip=YES`
//!   delta updates when the server offers them) runs side by side with a fetch of the
//!   preload-hinted part, which the server streams as it is produced.
//! - Switches go through the rendition report of the target (a blocking request for its last
//!   part, so the new playlist is at least as fresh) and align by program date-time, falling
//!   back to media sequence numbers; ordinary switches wait for a segment boundary.
//! - A rendition that 404s is set aside and playback fails over; only a stream that gives
//!   nothing playable for `fatal_after` is a fatal error.
//!
//! In three parts: `plan`, the pure "what to fetch next" core (state and time in, a decision
//! out; no I/O, no clock); `driver`, the thin async driver that executes those decisions over
//! HTTP and keeps the playback model, decoder and timing ([`play`], [`PlayerConfig`]); and
//! `report`, what a viewer got ([`Report`]) with its JSON form and summary. This module only
//! re-exports their public API.

mod driver;
mod plan;
mod report;

pub use driver::{play, PlayerConfig};
pub use report::{percentile, Report, Requests, SwitchRecord};
