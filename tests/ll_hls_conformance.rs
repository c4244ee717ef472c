//! Acceptance (origin issue, 2): LL-HLS conformance at the origin; (edge issue, 1): the same
//! checks through an edge of a local cluster.

#![allow(clippy::unwrap_used)]

mod common;

use common::conformance;
use common::{Cluster, Publisher, Server};

#[test]
fn ll_hls_conformance_at_the_origin() {
    let server = Server::start(&common::config(conformance::CONFIG));
    let mut publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &conformance::source());
    let failures =
        common::runtime().block_on(conformance::check_all(&server.base(), &mut publisher));
    assert!(
        failures.is_empty(),
        "LL-HLS rules broken at the origin:\n{}",
        failures.join("\n")
    );
}

#[test]
fn ll_hls_conformance_through_an_edge() {
    let cluster = Cluster::start(1, &common::config(conformance::CONFIG), &[]);
    let mut publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &conformance::source());
    let failures = common::runtime().block_on(conformance::check_all(
        &cluster.edge_base(0),
        &mut publisher,
    ));
    assert!(
        failures.is_empty(),
        "LL-HLS rules broken through the edge:\n{}",
        failures.join("\n")
    );
}

/// Acceptance (issue "every player, every source", 4): the lowest-latency profile (0.2 s parts
/// under a PART-TARGET of 0.21 s) keeps every live rule at 25, 29.97, 30 and 60 fps.
#[test]
fn the_lowest_latency_profile_conforms_at_25_29_97_30_and_60_fps() {
    let cfg = "latency_profile = \"lowest\"\ntarget_duration = 1";
    for (fps, gop) in [("25", 25), ("30000/1001", 30), ("30", 30), ("60", 60)] {
        let server = Server::start(&common::config(cfg));
        let mut source = common::Source::small(30.0);
        source.fps = fps;
        source.gop = gop;
        let _publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &source);
        let failures = common::runtime().block_on(async {
            let c = common::hls::client();
            common::hls::wait_stream(&c, &server.base(), "cam").await;
            // Enough complete segments for every rule to have something to look at (a delta
            // update skips only what is older than CAN-SKIP-UNTIL, 6 s).
            conformance::check_live_at(&server.base(), "source", 0.21, 1, 8).await
        });
        assert!(
            failures.is_empty(),
            "LL-HLS rules broken at {fps} fps with the lowest-latency profile:\n{}",
            failures.join("\n")
        );
    }
}
