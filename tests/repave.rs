//! `tfe-node-agent repave` (issue 15) with real peers: a capacity-managed group in one emulator,
//! real agents started by the launcher for every instance the emulator launches
//! (tests/common/group.rs), one moto, one redis-server. Every wait is bounded; nothing asserts a
//! speed.

mod common;

use common::group::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Two nodes' boot (fake TFE tools: a few seconds each; the first waits one node TTL).
const BOOT: Duration = Duration::from_secs(90);

#[test]
fn two_504_nodes_boot_from_user_data_into_one_cluster() {
    let group = Group::start(GroupOptions::default());
    let ids = group.wait_in_service(1, 2, BOOT);
    let view = group.wait_view("two live 504 nodes", Duration::from_secs(30), |code, v| {
        code == 0 && v["consistent"] == true && v["live"] == 2
    });
    eprintln!("{view:#}");
    for id in &ids {
        let release = group
            .with_node(id, |n| n.install_runs().len())
            .expect("the launcher started the node");
        assert_eq!(release, 1, "{}", group.dump());
    }
    let _ = json!(null);
    let _: Option<Value> = None;
}
