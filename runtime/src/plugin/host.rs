//! The [`PluginHost`]: one wasmtime engine and linker per process, the pooling
//! allocator sized by [`PluginConfig`], and loading (compile or fetch from cache,
//! link, pre-instantiate, describe).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginConfig;
use super::bindings::PluginWorldPre;
use super::cache::{ArtifactCache, CompileSource};
use super::entropy::Entropy;
use super::error::PluginError;
use super::instance::{Limits, Plugin};
use super::sandbox::Sandbox;

/// Core instances, memories and tables one component may hold. A Rust component built for
/// wasm32-wasip2 has about five core instances (the program, the WASI adapter and shims),
/// one or two memories and a few tables; these bounds leave room without letting one
/// plugin take over the pool.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// A freed instance slot keeps this much of its memory and tables mapped, and resets it
/// in place instead of returning it to the kernel. Without it, every call pays a
/// `madvise` on release and a page fault per page touched on the next call: more than
/// half of a call's time was in the kernel. Where the kernel has `PAGEMAP_SCAN` (Linux
/// 6.7+) only the pages the call dirtied are reset; elsewhere the low bytes are
/// `memset`, so the value stays modest. A plugin's stack, data and a typical request's
/// heap fit in it.
const KEEP_RESIDENT_MEMORY_BYTES: usize = 2 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// The machine stack a plugin call may use (wasmtime's default, stated so the error can
/// name it). Deep recursion stops here with [`PluginError::StackOverflow`].
pub(super) const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Loads plugins into a sandbox shared by all of them.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: ArtifactCache,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").field("cache", &self.cache).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl PluginHost {
    /// A host with the given limits, caching compiled plugins in `cache_dir` if given.
    /// The caller validated `config`.
    pub fn new(config: &PluginConfig, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let engine = Engine::new(&engine_config(config))
            .map_err(|error| PluginError::Engine { reason: format!("{error:#}") })?;
        let mut linker = Linker::new(&engine);
        // WASI is linked so that ordinary Rust guests load; the Sandbox grants none of its
        // capabilities. Anything else a plugin imports makes loading fail.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| link_entropy(&mut linker))
            .map_err(|error| PluginError::Engine { reason: format!("{error:#}") })?;
        let limits = Arc::new(Limits {
            fuel: config.fuel_per_call(),
            cpu_limit_ms: config.cpu_limit_ms,
            memory_bytes: config.memory_limit_bytes(),
            max_output_bytes: config.max_output_bytes,
        });
        let cache = ArtifactCache::new(&engine, cache_dir);
        Ok(Self { engine, linker, cache, limits })
    }

    /// Loads the plugin at `path`: compiles it (or takes it from the cache), links it,
    /// checks its exports, and calls `describe`.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let wasm = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
        self.load_bytes(path, &wasm)
    }

    /// Like [`load`](Self::load) for bytes already in memory; `path` is for messages.
    pub fn load_bytes(&self, path: &Path, wasm: &[u8]) -> Result<Plugin, PluginError> {
        let sha256 = hex::encode(Sha256::digest(wasm));
        let (component, source) = self
            .cache
            .component(&self.engine, wasm, &sha256)
            .map_err(|error| PluginError::Compile { path: path.to_owned(), reason: format!("{error:#}") })?;
        let pre = self.pre_instantiate(path, &component)?;
        let plugin = Plugin::new(pre, sha256, Arc::clone(&self.limits));
        let info = plugin.describe().map_err(|error| match error {
            PluginError::InvalidOutput { reason } => PluginError::Description { path: path.to_owned(), reason },
            other => other,
        })?;
        info.validate().map_err(|reason| PluginError::Description { path: path.to_owned(), reason })?;
        tracing::info!(
            plugin = %info.name,
            version = %info.version,
            sha256 = %plugin.sha256(),
            cached = source == CompileSource::Cache,
            "plugin loaded"
        );
        Ok(plugin.with_info(info, source))
    }

    fn pre_instantiate(&self, path: &Path, component: &Component) -> Result<PluginWorldPre<Sandbox>, PluginError> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|error| PluginError::Link { path: path.to_owned(), reason: format!("{error:#}") })?;
        PluginWorldPre::new(instance_pre)
            .map_err(|error| PluginError::Interface { path: path.to_owned(), reason: format!("{error:#}") })
    }
}

/// Replaces the WASI context's OS-seeded `wasi:random` with the request-keyed [`Entropy`].
fn link_entropy(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
    linker.allow_shadowing(true);
    random::add_to_linker::<Sandbox, HasSelf<Entropy>>(linker, |sandbox| &mut sandbox.entropy)?;
    insecure::add_to_linker::<Sandbox, HasSelf<Entropy>>(linker, |sandbox| &mut sandbox.entropy)?;
    insecure_seed::add_to_linker::<Sandbox, HasSelf<Entropy>>(linker, |sandbox| &mut sandbox.entropy)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn engine_config(config: &PluginConfig) -> Config {
    let memory_bytes = config.memory_limit_bytes();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(config.max_instances)
        .total_core_instances(config.max_instances.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(config.max_instances.saturating_mul(2))
        .total_tables(config.max_instances.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .total_stacks(config.max_instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .wasm_component_model(true);
    wasm
}
