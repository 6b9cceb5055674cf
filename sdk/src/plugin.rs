//! The [`Plugin`] trait a plugin implements, and the glue that exports it as the
//! `forecourt:plugin/plugin` world.

use crate::fields::Field;
use crate::{FieldSpec, InputError, OutputError, OutputSpec, PluginInfo, Request, Tensor};

/// Name, version and description of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    pub name: &'static str,
    /// Semantic version; usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    pub description: &'static str,
}

impl Info {
    pub const fn new(name: &'static str, version: &'static str, description: &'static str) -> Self {
        Self { name, version, description }
    }
}

/// One value of the plugin's response, for the API's documentation.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: Option<&'static str>,
}

impl Output {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Self { name, description, unit: None }
    }

    pub const fn unit(self, unit: &'static str) -> Self {
        Self { unit: Some(unit), ..self }
    }
}

/// A preprocessing plugin. Implement it on a unit struct and export it with
/// [`export_plugin!`](crate::export_plugin).
pub trait Plugin {
    const INFO: Info;
    /// Every field the request may carry. A request with any other field is refused
    /// (`unknown-field`), which catches misspelt optional fields.
    const FIELDS: &'static [&'static dyn Field];
    const OUTPUTS: &'static [Output];

    /// One request to the model's input tensors.
    fn preprocess(request: &Request) -> Result<Vec<Tensor>, InputError>;

    /// This request's rows of the model's outputs to the response JSON object, or
    /// `None` for the host's default shape.
    fn postprocess(request: &Request, outputs: &crate::Outputs) -> Result<Option<String>, OutputError> {
        let _ = (request, outputs);
        Ok(None)
    }
}

#[doc(hidden)]
pub fn describe<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: P::INFO.name.to_owned(),
        version: P::INFO.version.to_owned(),
        description: P::INFO.description.to_owned(),
        inputs: P::FIELDS.iter().map(|field| field.spec()).collect::<Vec<FieldSpec>>(),
        outputs: P::OUTPUTS
            .iter()
            .map(|output| OutputSpec {
                name: output.name.to_owned(),
                description: output.description.to_owned(),
                unit: output.unit.map(str::to_owned),
            })
            .collect(),
    }
}

#[doc(hidden)]
pub fn preprocess<P: Plugin>(request: &str) -> Result<Vec<Tensor>, InputError> {
    P::preprocess(&Request::parse(request, P::FIELDS)?)
}

#[doc(hidden)]
pub fn postprocess<P: Plugin>(request: &str, outputs: Vec<Tensor>) -> Result<Option<String>, OutputError> {
    let request = Request::parse(request, P::FIELDS)
        .map_err(|error| OutputError { message: format!("the request no longer parses: {}", error.message) })?;
    P::postprocess(&request, &crate::Outputs::new(outputs))
}

/// Exports a [`Plugin`] implementation as the plugin's WebAssembly exports.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __ForecourtExport;

        impl $crate::bindings::Guest for __ForecourtExport {
            fn describe() -> $crate::PluginInfo {
                $crate::__describe::<$plugin>()
            }

            fn preprocess(request: String) -> Result<Vec<$crate::Tensor>, $crate::InputError> {
                $crate::__preprocess::<$plugin>(&request)
            }

            fn postprocess(
                request: String,
                outputs: Vec<$crate::Tensor>,
            ) -> Result<Option<String>, $crate::OutputError> {
                $crate::__postprocess::<$plugin>(&request, outputs)
            }
        }

        $crate::bindings::__export_plugin_world!(__ForecourtExport);
    };
}
