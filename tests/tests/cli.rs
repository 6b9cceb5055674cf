//! The `forecourt` binary's plugin commands, run as a user would.

use std::process::{Command, Stdio};

use forecourt_testkit::{example_plugin, forecourt_binary};

#[test]
fn plugin_describe_prints_the_plugin_api_as_json() {
    let output =
        Command::new(forecourt_binary()).args(["plugin", "describe"]).arg(example_plugin("iris")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["name"], "iris");
    let names: Vec<&str> = info["inputs"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sepal_length", "sepal_width", "petal_length", "petal_width"]);
}

#[test]
fn plugin_preprocess_refuses_bad_input_with_the_field_and_a_failing_status() {
    let output = Command::new(forecourt_binary())
        .args(["plugin", "preprocess"])
        .arg(example_plugin("iris"))
        .arg(r#"{"sepal_length": "long", "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2}"#)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((error["code"].as_str(), error["field"].as_str()), (Some("wrong_type"), Some("sepal_length")));
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_the_command_quietly() {
    // The read end is closed before the command prints (it first loads the plugin), as
    // `forecourt plugin describe x.wasm | head -n 2` does once head has its lines.
    let mut child = Command::new(forecourt_binary())
        .args(["plugin", "describe"])
        .arg(example_plugin("iris"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
