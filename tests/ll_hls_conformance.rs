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
