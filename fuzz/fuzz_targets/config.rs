//! The configuration files, origin and edge: parsed, then validated and turned into the
//! stages' settings when they parse.
#![no_main]

use ferrocast::config::{Config, EdgeFileConfig};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = toml::from_str::<Config>(text) {
        if c.validate().is_ok() {
            let _ = c.stream_keys();
            let _ = (c.rtmp_config(), c.srt_config(), c.origin_config());
            let _ = c.http_limits.limits(0.0);
        }
    }
    if let Ok(c) = toml::from_str::<EdgeFileConfig>(text) {
        if c.validate().is_ok() {
            let _ = c.edge_config(std::net::SocketAddr::from(([127, 0, 0, 1], 8081)));
        }
    }
});
