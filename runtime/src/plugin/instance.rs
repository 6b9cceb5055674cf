//! A loaded [`Plugin`] and the [`PluginInstance`]s it makes: one fresh instance per
//! request, so nothing a call leaves behind can reach the next one.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::bindings::{PluginWorld, PluginWorldPre, tensor_from_guest, tensor_to_guest, wit};
use super::cache::CompileSource;
use super::error::PluginError;
use super::host::MAX_WASM_STACK_BYTES;
use super::info::PluginInfo;
use super::sandbox::Sandbox;
use crate::tensor::Tensor;

/// The per-call limits every instance of every plugin gets.
#[derive(Debug)]
pub(super) struct Limits {
    pub(super) fuel: u64,
    pub(super) cpu_limit_ms: u64,
    pub(super) memory_bytes: usize,
    pub(super) max_output_bytes: usize,
}

/// A compiled, linked and described plugin. Cheap to clone; share it across threads.
#[derive(Clone)]
pub struct Plugin {
    pre: PluginWorldPre<Sandbox>,
    sha256: Arc<str>,
    info: Option<Arc<PluginInfo>>,
    source: CompileSource,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("sha256", &self.sha256).field("info", &self.info).finish_non_exhaustive()
    }
}

impl Plugin {
    pub(super) fn new(pre: PluginWorldPre<Sandbox>, sha256: String, limits: Arc<Limits>) -> Self {
        Self { pre, sha256: sha256.into(), info: None, source: CompileSource::Compiled, limits }
    }

    pub(super) fn with_info(self, info: PluginInfo, source: CompileSource) -> Self {
        Self { info: Some(Arc::new(info)), source, ..self }
    }

    /// What the plugin said about itself when loaded.
    pub fn info(&self) -> &PluginInfo {
        // `PluginHost::load` is the only way to get a Plugin and always sets it.
        self.info.as_deref().expect("a loaded plugin has described itself")
    }

    /// Hex sha256 of the plugin's wasm.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled plugin came from the artifact cache.
    pub fn compile_source(&self) -> CompileSource {
        self.source
    }

    /// A fresh instance, with its own memory, fuel and limits.
    pub fn instantiate(&self) -> Result<PluginInstance, PluginError> {
        let mut store = Store::new(self.pre.engine(), Sandbox::new(self.limits.memory_bytes));
        store.limiter(|sandbox| sandbox);
        set_fuel(&mut store, self.limits.fuel);
        match self.pre.instantiate(&mut store) {
            Ok(world) => Ok(PluginInstance { store, world, limits: Arc::clone(&self.limits), poisoned: false }),
            Err(error) if is_pool_exhausted(&error) => Err(PluginError::Exhausted { reason: format!("{error:#}") }),
            Err(error) => Err(classify_trap(&store, &self.limits, error)),
        }
    }

    /// Preprocesses one request in a fresh instance.
    pub fn preprocess(&self, request: &str) -> Result<Vec<Tensor>, PluginError> {
        self.instantiate()?.preprocess(request)
    }

    pub(super) fn describe(&self) -> Result<PluginInfo, PluginError> {
        self.instantiate()?.describe()
    }
}

/// One instance of a plugin: preprocess a request, then (optionally) postprocess the
/// model's outputs for it. Each call gets the full CPU budget; a call that fails leaves
/// the instance unusable.
pub struct PluginInstance {
    store: Store<Sandbox>,
    world: PluginWorld,
    limits: Arc<Limits>,
    poisoned: bool,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance").field("poisoned", &self.poisoned).finish_non_exhaustive()
    }
}

impl PluginInstance {
    /// The request's input tensors, or the plugin's refusal ([`PluginError::Input`]).
    pub fn preprocess(&mut self, request: &str) -> Result<Vec<Tensor>, PluginError> {
        let result = self.call("preprocess", request, |world, store| world.call_preprocess(store, request))?;
        let tensors = result.map_err(|error| PluginError::Input(error.into()))?;
        self.check_output_size(tensors.iter().map(|t| t.name.len() + guest_tensor_bytes(t)).sum())?;
        Ok(tensors.into_iter().map(tensor_from_guest).collect::<Result<_, _>>()?)
    }

    /// The response object shaped by the plugin from this request's rows of the model's
    /// outputs, or `None` when the plugin leaves the shape to the host.
    pub fn postprocess(
        &mut self,
        request: &str,
        outputs: &[Tensor],
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, PluginError> {
        let guest_outputs: Vec<_> = outputs.iter().map(tensor_to_guest).collect();
        let result =
            self.call("postprocess", request, |world, store| world.call_postprocess(store, request, &guest_outputs))?;
        let Some(json) = result.map_err(|error| PluginError::Postprocess { message: error.message })? else {
            return Ok(None);
        };
        self.check_output_size(json.len())?;
        match serde_json::from_str(&json) {
            Ok(serde_json::Value::Object(object)) => Ok(Some(object)),
            Ok(_) => {
                Err(PluginError::InvalidOutput { reason: "postprocess returned JSON that is not an object".into() })
            }
            Err(error) => {
                Err(PluginError::InvalidOutput { reason: format!("postprocess returned invalid JSON: {error}") })
            }
        }
    }

    fn describe(&mut self) -> Result<PluginInfo, PluginError> {
        let info = self.call("describe", "", |world, store| world.call_describe(store))?;
        PluginInfo::try_from(info).map_err(|reason| PluginError::InvalidOutput { reason })
    }

    /// Runs one export with a full fuel budget and randomness keyed by the export and its
    /// request, and turns traps into typed errors.
    fn call<R>(
        &mut self,
        export: &str,
        request: &str,
        f: impl FnOnce(&PluginWorld, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        if self.poisoned {
            return Err(PluginError::Trap { message: "instance is unusable after an earlier failure".into() });
        }
        set_fuel(&mut self.store, self.limits.fuel);
        self.store.data_mut().entropy.rekey(export, request.as_bytes());
        f(&self.world, &mut self.store).map_err(|error| {
            self.poisoned = true;
            classify_trap(&self.store, &self.limits, error)
        })
    }

    fn check_output_size(&self, bytes: usize) -> Result<(), PluginError> {
        if bytes > self.limits.max_output_bytes {
            return Err(PluginError::OutputTooLarge { bytes, limit_bytes: self.limits.max_output_bytes });
        }
        Ok(())
    }
}

fn set_fuel(store: &mut Store<Sandbox>, fuel: u64) {
    // Fails only when the engine was built without fuel, which `engine_config` never does.
    store.set_fuel(fuel).expect("the plugin engine consumes fuel");
}

fn guest_tensor_bytes(tensor: &wit::Tensor) -> usize {
    use wit::TensorData;
    match &tensor.data {
        TensorData::Float32(values) => values.len() * 4,
        TensorData::Float64(values) => values.len() * 8,
        TensorData::Int64(values) => values.len() * 8,
        TensorData::Text(values) => values.iter().map(String::len).sum(),
    }
}

fn is_pool_exhausted(error: &wasmtime::Error) -> bool {
    error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some()
}

/// Names what stopped the guest: the memory limiter's refusal (the guest aborts after a
/// failed allocation), fuel or stack running out, or any other trap with the guest's
/// stderr.
fn classify_trap(store: &Store<Sandbox>, limits: &Limits, error: wasmtime::Error) -> PluginError {
    if store.data().memory_limit_hit {
        return PluginError::MemoryLimit { limit_bytes: limits.memory_bytes };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return PluginError::CpuLimit { limit_ms: limits.cpu_limit_ms },
        Some(Trap::StackOverflow) => return PluginError::StackOverflow { limit_bytes: MAX_WASM_STACK_BYTES },
        _ => {}
    }
    tracing::debug!(error = format!("{error:?}"), "plugin trapped");
    // The trap's kind, not wasmtime's whole context chain (a wasm backtrace that means
    // nothing to an operator); what the guest printed (a panic message) says the rest.
    let kind = error.downcast_ref::<Trap>().map_or_else(|| error.root_cause().to_string(), Trap::to_string);
    let stderr = store.data().stderr();
    let message = if stderr.is_empty() { kind } else { format!("{kind}: {stderr}") };
    PluginError::Trap { message }
}
