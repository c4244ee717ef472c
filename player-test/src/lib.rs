//! The player-test library: an LL-HLS client that plays like real players and measures what
//! viewers get. It owns the playlist parser, the playback (buffer) model, ABR, the player
//! driver with an optional real decoder (ffmpeg CLI) reading the visual clock code, the
//! clock-stamped publisher, and the light viewers of load mode. It does not serve anything.

pub mod abr;
pub mod clock;
pub mod decode;
pub mod glass;
pub mod mp4;
pub mod playback;
pub mod player;
pub mod playlist;
pub mod viewer;

pub use player::{play, PlayerConfig, Report};
pub use playlist::{MediaPlaylist, MultivariantPlaylist, PartEntry, SegmentEntry};
pub use viewer::{light_viewer, load, LoadReport, ViewerStats};
