//! The plugin host against real plugins compiled from plugins/ and from the hostile
//! fixtures: exact tensors for sample requests, input errors naming the field, and every
//! way a hostile plugin can misbehave, each followed by a call that succeeds.

use std::path::PathBuf;
use std::sync::LazyLock;

use forecourt::plugin::{CompileSource, InputErrorCode, Plugin, PluginConfig, PluginError, PluginHost};
use forecourt::tensor::{Tensor, TensorData};
use forecourt_testkit::{example_plugin, fixture_plugin, temp_dir};
use serde_json::json;

/// One compiled-artifact cache for the whole test binary: every plugin compiles once.
static CACHE: LazyLock<tempfile::TempDir> = LazyLock::new(temp_dir);
static HOST: LazyLock<PluginHost> = LazyLock::new(|| host_with(PluginConfig::default()));

fn host_with(config: PluginConfig) -> PluginHost {
    config.validate().unwrap();
    PluginHost::new(&config, Some(CACHE.path().to_owned())).unwrap()
}

fn load(path: PathBuf) -> Plugin {
    HOST.load(&path).unwrap()
}

fn features(shape: &[usize], values: Vec<f32>) -> Tensor {
    Tensor::new("features", shape.to_vec(), TensorData::Float32(values)).unwrap()
}

fn input_error(plugin: &Plugin, request: &str) -> (InputErrorCode, Option<String>, String) {
    match plugin.preprocess(request) {
        Err(PluginError::Input(error)) => (error.code, error.field, error.message),
        other => panic!("expected an input error for {request}, got {other:?}"),
    }
}

mod example_plugins {
    use super::*;

    #[test]
    fn car_price_encodes_a_car_and_its_forecast_rows() {
        let plugin = load(example_plugin("car_price"));
        let tensors = plugin
            .preprocess(
                r#"{"make": "Chevrolet", "body": "coupe", "mileage": 20105, "cylinders": 6, "doors": 2,
                    "cruise": true, "leather": true, "forecast_months": [6, 12], "annual_mileage": 10000}"#,
            )
            .unwrap();
        let row = |mileage: f32| {
            let mut row = vec![mileage, 6.0, 2.0, 1.0, 0.0, 1.0];
            row.extend([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
            row.extend([0.0, 1.0, 0.0, 0.0, 0.0]);
            row
        };
        let expected_features = [row(20105.0), row(25105.0), row(30105.0)].concat();
        assert_eq!(
            tensors,
            vec![
                features(&[3, 17], expected_features),
                Tensor::new("years_ahead", vec![3, 1], TensorData::Float32(vec![0.0, 0.5, 1.0])).unwrap(),
            ]
        );
    }

    #[test]
    fn housing_encodes_numbers_flags_ordinals_and_one_hots() {
        let plugin = load(example_plugin("housing"));
        let tensors = plugin
            .preprocess(
                r#"{"living_area_sqft": 1710, "lot_area_sqft": 8450, "year_built": 2003, "year_remodeled": 2004,
                    "total_basement_sqft": 856, "garage_cars": 2, "full_baths": 2, "half_baths": 1, "bedrooms": 3,
                    "fireplaces": 0, "central_air": false, "overall_condition": "good", "neighborhood": "college_creek"}"#,
            )
            .unwrap();
        let mut expected = vec![1710.0, 8450.0, 2003.0, 2004.0, 856.0, 2.0, 2.0, 1.0, 3.0, 0.0, 0.0, 7.0];
        expected.extend((0..28).map(|i| if i == 5 { 1.0 } else { 0.0 }));
        assert_eq!(tensors, vec![features(&[1, 40], expected)]);
    }

    #[test]
    fn iris_encodes_four_measurements() {
        let plugin = load(example_plugin("iris"));
        let tensors = plugin
            .preprocess(r#"{"sepal_length": 6.3, "sepal_width": 2.5, "petal_length": 5, "petal_width": 1.9}"#)
            .unwrap();
        assert_eq!(tensors, vec![features(&[1, 4], vec![6.3, 2.5, 5.0, 1.9])]);
    }

    #[test]
    fn describe_documents_fields_with_units_ranges_and_vocabularies() {
        let plugin = load(example_plugin("car_price"));
        let info = plugin.info();
        assert_eq!((info.name.as_str(), info.version.as_str()), ("car-price", "1.0.0"));
        let mileage = info.inputs.iter().find(|field| field.name == "mileage").unwrap();
        assert_eq!(
            serde_json::to_value(mileage).unwrap(),
            json!({"name": "mileage", "type": "number", "required": true, "description": "Odometer reading",
                   "unit": "mi", "minimum": 0.0, "maximum": 1_000_000.0})
        );
        let annual = info.inputs.iter().find(|field| field.name == "annual_mileage").unwrap();
        assert_eq!((annual.required, annual.default.clone()), (false, Some(json!(12000))));
        let make = info.inputs.iter().find(|field| field.name == "make").unwrap();
        assert_eq!(make.categories.len(), 6);
        assert_eq!(plugin.sha256().len(), 64);
    }

    #[test]
    fn postprocess_shapes_the_response_or_leaves_it_to_the_host() {
        let request = r#"{"make": "saab", "body": "sedan", "mileage": 5000, "cylinders": 4, "doors": 4, "forecast_months": [24]}"#;
        let plugin = load(example_plugin("car_price"));
        let mut instance = plugin.instantiate().unwrap();
        instance.preprocess(request).unwrap();
        let prices = Tensor::new("price", vec![2, 1], TensorData::Float32(vec![30000.0, 25000.25])).unwrap();
        let response = instance.postprocess(request, &[prices]).unwrap().unwrap();
        assert_eq!(
            serde_json::Value::Object(response),
            json!({"price": 30000.0, "currency": "USD", "forecast": [{"months": 24, "price": 25000.25}]})
        );

        let housing = load(example_plugin("housing"));
        let price = Tensor::new("price", vec![1, 1], TensorData::Float32(vec![1.0])).unwrap();
        let house = r#"{"living_area_sqft": 1000, "lot_area_sqft": 1000, "year_built": 2000, "year_remodeled": 2000,
                        "full_baths": 1, "bedrooms": 2, "neighborhood": "veenker"}"#;
        assert_eq!(housing.instantiate().unwrap().postprocess(house, &[price]).unwrap(), None);
    }
}

mod invalid_inputs {
    use super::*;

    const CAR: &str = r#""make": "saab", "body": "sedan", "cylinders": 4, "doors": 4"#;

    fn car(extra: &str) -> String {
        format!("{{{CAR}{extra}}}")
    }

    #[test]
    fn each_broken_rule_is_reported_with_its_field() {
        let plugin = load(example_plugin("car_price"));
        let cases = [
            (car(""), InputErrorCode::MissingField, Some("mileage")),
            (car(r#", "mileage": "lots""#), InputErrorCode::WrongType, Some("mileage")),
            (car(r#", "mileage": -5"#), InputErrorCode::OutOfRange, Some("mileage")),
            (car(r#", "mileage": 5, "doors": 4.5"#), InputErrorCode::WrongType, Some("doors")),
            (car(r#", "mileage": 5, "cruise": "yes""#), InputErrorCode::WrongType, Some("cruise")),
            (car(r#", "mileage": 5, "forecast_months": [0]"#), InputErrorCode::OutOfRange, Some("forecast_months")),
            (car(r#", "mileage": 5, "milage": 5"#), InputErrorCode::UnknownField, Some("milage")),
            (
                r#"{"make": "volvo", "body": "sedan", "mileage": 1, "cylinders": 4, "doors": 4}"#.to_owned(),
                InputErrorCode::UnknownCategory,
                Some("make"),
            ),
            (r#"{"make": "saab", "#.to_owned(), InputErrorCode::MalformedJson, None),
            ("[1, 2, 3]".to_owned(), InputErrorCode::NotAnObject, None),
            (String::new(), InputErrorCode::MalformedJson, None),
        ];
        for (request, code, field) in cases {
            let (actual_code, actual_field, message) = input_error(&plugin, &request);
            assert_eq!((actual_code, actual_field.as_deref()), (code, field), "{request}: {message}");
            if let Some(field) = field {
                assert!(message.contains(field), "the message names the field: {message}");
            }
        }
    }

    #[test]
    fn out_of_range_messages_state_the_rule() {
        let plugin = load(example_plugin("iris"));
        let (_, _, message) =
            input_error(&plugin, r#"{"sepal_length": 99, "sepal_width": 3, "petal_length": 1, "petal_width": 1}"#);
        assert_eq!(message, "`sepal_length` must be between 0 and 30 (cm)");
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let plugin = load(example_plugin("housing"));
        let (code, field, _) = input_error(
            &plugin,
            r#"{"living_area_sqft": 1000, "lot_area_sqft": 1000, "year_built": 2000, "year_remodeled": 1990,
                "full_baths": 1, "bedrooms": 2, "neighborhood": "veenker"}"#,
        );
        assert_eq!((code, field.as_deref()), (InputErrorCode::InvalidValue, Some("year_remodeled")));
    }
}

mod hostile_plugins {
    use super::*;

    fn hostile() -> Plugin {
        load(fixture_plugin("hostile"))
    }

    fn attack(plugin: &Plugin, name: &str) -> Result<Vec<Tensor>, PluginError> {
        plugin.preprocess(&format!(r#"{{"attack": "{name}"}}"#))
    }

    fn observed(plugin: &Plugin, name: &str) -> f32 {
        match attack(plugin, name).unwrap().remove(0).data {
            TensorData::Float32(values) => values[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    /// What a detailed probe saw, aimed at `arg`.
    fn probe(plugin: &Plugin, name: &str, arg: &str) -> Vec<f64> {
        let request = json!({"attack": name, "arg": arg}).to_string();
        match plugin.preprocess(&request).unwrap().remove(0).data {
            TensorData::Float32(values) => values.into_iter().map(f64::from).collect(),
            TensorData::Float64(values) => values,
            TensorData::Int64(values) => values.into_iter().map(|value| value as f64).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The plugin still serves after whatever happened before.
    fn assert_healthy(plugin: &Plugin) {
        assert_eq!(observed(plugin, "none"), 1.0);
    }

    /// The request makes the plugin trap with exactly `expected`; the plugin serves afterwards.
    fn assert_trap(plugin: &Plugin, request: &str, expected: &str) {
        match plugin.preprocess(request) {
            Err(PluginError::Trap { message }) => assert_eq!(message, expected, "{request}"),
            other => panic!("expected a trap from {request}, got {other:?}"),
        }
        assert_healthy(plugin);
    }

    /// WASI's errno values (wasi-libc), as a guest's `raw_os_error` reports them.
    const WASI_EACCES: f64 = 2.0;
    const WASI_ENOENT: f64 = 44.0;

    #[test]
    fn an_infinite_loop_stops_at_the_cpu_limit() {
        let plugin = hostile();
        assert!(matches!(attack(&plugin, "loop"), Err(PluginError::CpuLimit { limit_ms: 10 })));
        assert_healthy(&plugin);
    }

    #[test]
    fn the_cpu_limit_is_configurable() {
        let host = host_with(PluginConfig { cpu_limit_ms: 1, ..PluginConfig::default() });
        let plugin = host.load(&fixture_plugin("hostile")).unwrap();
        assert!(matches!(attack(&plugin, "loop"), Err(PluginError::CpuLimit { limit_ms: 1 })));
        assert_healthy(&plugin);
    }

    #[test]
    fn a_memory_bomb_stops_at_the_memory_limit() {
        let plugin = hostile();
        assert!(
            matches!(attack(&plugin, "memory"), Err(PluginError::MemoryLimit { limit_bytes }) if limit_bytes == 64 << 20)
        );
        assert_healthy(&plugin);
    }

    #[test]
    fn the_memory_limit_is_configurable() {
        let host = host_with(PluginConfig { memory_limit_mib: 16, ..PluginConfig::default() });
        let plugin = host.load(&fixture_plugin("hostile")).unwrap();
        assert!(
            matches!(attack(&plugin, "memory"), Err(PluginError::MemoryLimit { limit_bytes }) if limit_bytes == 16 << 20)
        );
        assert_healthy(&plugin);
    }

    #[test]
    fn a_panic_is_a_clean_error_carrying_its_message() {
        let plugin = hostile();
        match attack(&plugin, "panic") {
            Err(PluginError::Trap { message }) => assert!(message.contains("panicked on purpose"), "{message}"),
            other => panic!("expected a trap, got {other:?}"),
        }
        assert_healthy(&plugin);
    }

    #[test]
    fn an_abort_is_a_clean_error() {
        let expected = wasmtime::Trap::UnreachableCodeReached.to_string();
        assert_trap(&hostile(), r#"{"attack": "abort"}"#, &expected);
    }

    #[test]
    fn unbounded_recursion_stops_at_the_stack_limit() {
        let plugin = hostile();
        assert!(
            matches!(attack(&plugin, "recurse"), Err(PluginError::StackOverflow { limit_bytes }) if limit_bytes == 512 << 10)
        );
        assert_healthy(&plugin);
    }

    #[test]
    fn recursion_through_the_guest_s_own_stack_in_memory_is_contained() {
        // Frames holding arrays live on the shadow stack in linear memory, below the data:
        // running out of it is an out-of-bounds access, not the engine's stack limit.
        let expected = wasmtime::Trap::MemoryOutOfBounds.to_string();
        assert_trap(&hostile(), r#"{"attack": "stack"}"#, &expected);
    }

    #[test]
    fn oversized_output_is_refused() {
        let plugin = hostile();
        match attack(&plugin, "oversized") {
            Err(PluginError::OutputTooLarge { bytes, limit_bytes }) => {
                assert_eq!(limit_bytes, 1 << 20);
                assert!(bytes > 16 << 20, "{bytes}");
            }
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
        assert_healthy(&plugin);
    }

    #[test]
    fn an_oversized_response_is_refused() {
        let plugin = hostile();
        let request = r#"{"attack": "oversized-response"}"#;
        let mut instance = plugin.instantiate().unwrap();
        let outputs = instance.preprocess(request).unwrap();
        match instance.postprocess(request, &outputs) {
            Err(PluginError::OutputTooLarge { bytes, limit_bytes }) => {
                assert_eq!(limit_bytes, 1 << 20);
                assert!(bytes > 4 << 20, "{bytes}");
            }
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
        assert_healthy(&plugin);
    }

    #[test]
    fn malformed_tensors_and_responses_are_refused() {
        let plugin = hostile();
        assert!(matches!(attack(&plugin, "bad-shape"), Err(PluginError::InvalidOutput { .. })));
        let request = r#"{"attack": "bad-response"}"#;
        let mut instance = plugin.instantiate().unwrap();
        let outputs = instance.preprocess(request).unwrap();
        assert!(matches!(instance.postprocess(request, &outputs), Err(PluginError::InvalidOutput { .. })));
        assert_healthy(&plugin);
    }

    #[test]
    fn a_failed_instance_is_not_reused() {
        let plugin = hostile();
        let mut instance = plugin.instantiate().unwrap();
        assert!(instance.preprocess(r#"{"attack": "panic"}"#).is_err());
        assert!(matches!(instance.preprocess(r#"{"attack": "none"}"#), Err(PluginError::Trap { .. })));
    }

    #[test]
    fn no_state_survives_between_calls() {
        let plugin = hostile();
        assert_eq!(observed(&plugin, "count-calls"), 1.0);
        assert_eq!(observed(&plugin, "count-calls"), 1.0);
    }

    #[test]
    fn a_file_the_host_can_read_is_out_of_reach() {
        let dir = temp_dir();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "the host can read this").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "the host can read this");

        let plugin = hostile();
        // No directory is preopened, so no path resolves: ENOENT, not a permission error.
        assert_eq!(probe(&plugin, "read-file", secret.to_str().unwrap()), [0.0, WASI_ENOENT]);
        assert_eq!(probe(&plugin, "read-file", "/etc/passwd"), [0.0, WASI_ENOENT]);
        assert_eq!(probe(&plugin, "read-file", "secret.txt"), [0.0, WASI_ENOENT]);
        assert_healthy(&plugin);
    }

    #[test]
    fn a_listening_socket_on_the_host_cannot_be_reached() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();

        let plugin = hostile();
        assert_eq!(probe(&plugin, "connect", &address), [0.0, WASI_EACCES], "the plugin saw its connect refused");
        match listener.accept() {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the listener on {address} was reached: {other:?}"),
        }
        // The probe itself works: the same connect from the host is accepted.
        let _client = std::net::TcpStream::connect(&address).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(error) = listener.accept() {
            assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
            assert!(std::time::Instant::now() < deadline, "the host's own connection never arrived");
            std::thread::yield_now();
        }
        assert_healthy(&plugin);
    }

    #[test]
    fn the_host_s_environment_is_invisible() {
        assert!(std::env::var_os("PATH").is_some(), "the test needs a variable the host has");
        let plugin = hostile();
        assert_eq!(probe(&plugin, "env-probe", "PATH"), [0.0, 0.0], "[variables seen, PATH seen]");
        assert_healthy(&plugin);
    }

    #[test]
    fn both_clocks_are_frozen() {
        let plugin = hostile();
        // [seconds since the epoch, nanoseconds the monotonic clock saw a busy loop take]
        assert_eq!(probe(&plugin, "clocks", ""), [0.0, 0.0]);
        assert_healthy(&plugin);
    }

    #[test]
    fn randomness_is_a_function_of_the_request() {
        let plugin = hostile();
        // [std hash-map key (insecure-seed), random u64, random bytes, insecure u64, insecure bytes]
        let first = probe(&plugin, "random", "one");
        assert_eq!(first.len(), 5);
        assert_eq!(probe(&plugin, "random", "one"), first, "the same request draws the same values");
        let other_host = host_with(PluginConfig::default()).load(&fixture_plugin("hostile")).unwrap();
        assert_eq!(probe(&other_host, "random", "one"), first, "another engine draws the same values too");
        let second = probe(&plugin, "random", "two");
        for (index, (a, b)) in first.iter().zip(&second).enumerate() {
            assert_ne!(a, b, "value {index} differs for another request");
        }
        let distinct: std::collections::BTreeSet<_> = first.iter().map(|value| value.to_bits()).collect();
        assert_eq!(distinct.len(), 5, "every source draws from its own stream: {first:?}");
        assert_healthy(&plugin);
    }

    #[test]
    fn random_bytes_are_bounded_per_call() {
        let plugin = hostile();
        assert_eq!(probe(&plugin, "random-flood", "1024"), [1024.0]);
        assert_trap(
            &plugin,
            r#"{"attack": "random-flood", "arg": "1048576"}"#,
            "the plugin asked for 1048576 random bytes in one call; the limit is 1024",
        );
    }

    #[test]
    fn the_sandbox_grants_no_clock_environment_files_or_network() {
        let plugin = hostile();
        assert_eq!(observed(&plugin, "clock"), 0.0, "the wall clock is frozen at the epoch");
        assert_eq!(observed(&plugin, "env"), 0.0, "no environment variables");
        assert_eq!(observed(&plugin, "files"), 0.0, "no readable folders");
        assert_eq!(observed(&plugin, "network"), 0.0, "no TCP connections");
    }

    #[test]
    fn a_plugin_importing_what_the_host_lacks_fails_at_load_naming_the_import() {
        match HOST.load(&fixture_plugin("bad_import")) {
            Err(PluginError::Link { reason, .. }) => {
                assert!(reason.contains("forecourt:hostile/exfiltrate"), "{reason}")
            }
            other => panic!("expected a link error, got {other:?}"),
        }
    }

    #[test]
    fn files_that_are_not_components_fail_at_load() {
        let dir = temp_dir();
        let garbage = dir.path().join("garbage.wasm");
        std::fs::write(&garbage, b"\0asm but not really").unwrap();
        assert!(matches!(HOST.load(&garbage), Err(PluginError::Compile { .. })));
        assert!(matches!(HOST.load(&dir.path().join("missing.wasm")), Err(PluginError::Read { .. })));
    }

    #[test]
    fn instances_beyond_the_pool_are_refused_until_one_is_freed() {
        let host = host_with(PluginConfig { max_instances: 2, ..PluginConfig::default() });
        let plugin = host.load(&fixture_plugin("hostile")).unwrap();
        let first = plugin.instantiate().unwrap();
        let _second = plugin.instantiate().unwrap();
        assert!(matches!(plugin.instantiate(), Err(PluginError::Exhausted { .. })));
        drop(first);
        assert_healthy(&plugin);
    }
}

mod artifact_cache {
    use super::*;

    #[test]
    fn a_second_load_uses_the_compiled_artifact_and_a_corrupt_one_is_replaced() {
        let cache = temp_dir();
        let host = PluginHost::new(&PluginConfig::default(), Some(cache.path().to_owned())).unwrap();
        let wasm = example_plugin("iris");
        assert_eq!(host.load(&wasm).unwrap().compile_source(), CompileSource::Compiled);
        assert_eq!(host.load(&wasm).unwrap().compile_source(), CompileSource::Cache);

        let artifacts: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
        assert_eq!(artifacts.len(), 1, "{artifacts:?}");
        std::fs::write(&artifacts[0], b"truncated").unwrap();
        let plugin = host.load(&wasm).unwrap();
        assert_eq!(plugin.compile_source(), CompileSource::Compiled);
        assert!(
            plugin.preprocess(r#"{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1}"#).is_ok()
        );
        assert_eq!(host.load(&wasm).unwrap().compile_source(), CompileSource::Cache);
    }
}

mod async_callers {
    use super::*;
    use forecourt::workers::WorkerPool;

    /// A plugin burning its whole CPU budget on the worker pool leaves the async runtime
    /// (a single thread here) free to run other tasks meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn plugin_calls_on_the_worker_pool_do_not_block_the_runtime() {
        let plugin = hostile_plugin();
        let pool = WorkerPool::new("plugins", 1, 8).unwrap();
        let call = pool.submit(move || plugin.preprocess(r#"{"attack": "loop"}"#)).unwrap();
        let (ping, pong) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { ping.send(()).unwrap() });
        tokio::select! {
            biased;
            _ = pong => {}
            _ = call => panic!("the plugin call finished before a ready task could run"),
        }
    }

    fn hostile_plugin() -> Plugin {
        load(fixture_plugin("hostile"))
    }
}
