//! End-to-end tests of the `forecourt` binary live in this crate's `tests/` folder, one file
//! per area, each starting real servers through the shared harness (`tests/support`,
//! `forecourt_testkit::Server`): `api.rs` (/v1, health, OpenAPI), `errors.rs` (every error
//! status, hostile plugins, overload, garbage input), `v2_protocol.rs` (Open Inference
//! Protocol, Triton's Python client via `tests/triton_infer.py`), `metrics.rs` (promtool),
//! `durability.rs` (SIGKILL under load, SIGTERM), `auth.rs` (tokens, roles, limits),
//! `tls.rs` (HTTPS, certificate reloads), `contract.rs` (the OpenAPI document, each bundle's
//! schema, /docs, schemathesis with the waivers in `tests/contract/`), `config.rs`,
//! `request_ids.rs`, `cli.rs` and `signing.rs` (keygen, sign, pack/unpack, and trusted keys
//! at load).
