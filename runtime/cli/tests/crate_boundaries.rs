//! The crates' boundaries, read from cargo's resolved dependency graph: the appliance
//! carries no operator code, the fleet manager does not depend on the appliance, and the
//! protocol they share depends on neither and on nothing that serves.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Every package each workspace package reaches through normal (not dev or build)
/// dependencies, by name.
fn reachable() -> BTreeMap<String, BTreeSet<String>> {
    // For this machine's platform only: the other platforms' packages are never downloaded.
    let version = Command::new(env!("CARGO")).arg("-vV").output().expect("cargo runs");
    let version = String::from_utf8(version.stdout).unwrap();
    let host = version.lines().find_map(|line| line.strip_prefix("host: ")).expect("cargo names its host");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", host, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| (package["id"].as_str().unwrap(), package["name"].as_str().unwrap()))
        .collect();
    let normal: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| dep["dep_kinds"].as_array().unwrap().iter().any(|kind| kind["kind"].is_null()))
                .map(|dep| dep["pkg"].as_str().unwrap())
                .collect();
            (node["id"].as_str().unwrap(), deps)
        })
        .collect();
    metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            let mut seen = BTreeSet::new();
            let mut todo = normal[member.as_str().unwrap()].clone();
            while let Some(id) = todo.pop() {
                if seen.insert(names[id].to_owned()) {
                    todo.extend(&normal[id]);
                }
            }
            (names[member.as_str().unwrap()].to_owned(), seen)
        })
        .collect()
}

fn assert_none_of(graph: &BTreeMap<String, BTreeSet<String>>, package: &str, forbidden: &[&str]) {
    let reached = &graph[package];
    let found: Vec<_> = forbidden.iter().filter(|name| reached.contains(**name)).collect();
    assert!(found.is_empty(), "{package} depends on {found:?}");
}

#[test]
fn the_appliance_the_fleet_manager_and_their_protocol_stay_apart() {
    let graph = reachable();
    let serving = ["wasmtime", "ort", "sled", "axum", "hyper-util", "tonic", "metrics-exporter-prometheus"];
    assert_none_of(&graph, "forecourt-protocol", &["forecourt", "forecourt-fleet-manager"]);
    assert_none_of(&graph, "forecourt-protocol", &serving);
    assert_none_of(&graph, "forecourt-fleet-manager", &["forecourt"]);
    assert_none_of(&graph, "forecourt-fleet-manager", &serving);
    assert_none_of(&graph, "forecourt", &["forecourt-fleet-manager", "indicatif", "comfy-table"]);
    // The checks above would pass on a graph that lost its edges: the binary still has both.
    for needed in ["forecourt", "forecourt-fleet-manager", "forecourt-protocol", "wasmtime", "indicatif"] {
        assert!(graph["forecourt-cli"].contains(needed), "forecourt-cli does not reach {needed}");
    }
}
