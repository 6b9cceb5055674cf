//! One model version: a few ONNX Runtime sessions over the same graph, its introspected
//! inputs and outputs, and batch runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, DynValue, TensorElementType, TensorRef, ValueType};
use sha2::{Digest, Sha256};

use super::config::GraphOptimization;
use super::error::ModelError;
use super::interface::{ElementType, InputSpec, OutputForm, OutputSpec, check_inputs};
use super::library::OnnxRuntime;
use crate::tensor::{Tensor, TensorData};

/// A loaded model. `Session::run` needs exclusive access, so the model keeps one session
/// per worker that may run it at once; a run takes a free one.
pub struct Model {
    path: PathBuf,
    sha256: String,
    inputs: Vec<InputSpec>,
    outputs: Vec<OutputSpec>,
    sessions: Vec<Mutex<Session>>,
    next_session: AtomicUsize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads the model at `path` with `sessions` sessions (at least one), checks that the
    /// host supports its inputs and outputs, and warms it up with a one-row run.
    pub fn load(runtime: &OnnxRuntime, path: &Path, sessions: usize) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
        let sessions = (0..sessions.max(1))
            .map(|_| new_session(runtime, path, &bytes).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (inputs, outputs) = {
            let session = lock(&sessions[0]);
            let inputs = session.inputs().iter().map(|outlet| input_spec(path, outlet)).collect::<Result<_, _>>()?;
            let outputs = session.outputs().iter().map(|outlet| output_spec(path, outlet)).collect::<Result<_, _>>()?;
            (inputs, outputs)
        };
        let model = Self {
            path: path.to_owned(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            inputs,
            outputs,
            sessions,
            next_session: AtomicUsize::new(0),
        };
        model.warm_up()?;
        tracing::info!(model = %path.display(), sha256 = %model.sha256, "model loaded");
        Ok(model)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex sha256 of the model file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    /// Checks `tensors` against the model's inputs (names, element types, shapes) and
    /// returns their row count; the error says what does not match.
    pub fn check_inputs(&self, tensors: &[Tensor]) -> Result<usize, ModelError> {
        check_inputs(&self.inputs, tensors).map_err(|reason| ModelError::InputMismatch { reason })
    }

    /// Runs the model on a batch: every tensor holds the same number of rows. Returns
    /// every output, each with that many rows.
    pub fn run(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        self.check_inputs(tensors)?;
        let values = self
            .inputs
            .iter()
            .map(|input| {
                // check_inputs guarantees every input has its tensor.
                let tensor = tensors.iter().find(|tensor| tensor.name == input.name).expect("checked input");
                Ok((input.name.as_str(), input_value(tensor)?))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let mut session = self.free_session();
        let outputs = session.run(values).map_err(|error| ModelError::Run { reason: error.to_string() })?;
        self.outputs
            .iter()
            .map(|spec| {
                let value = outputs
                    .get(&spec.name)
                    .ok_or_else(|| ModelError::Run { reason: format!("no output `{}`", spec.name) })?;
                read_output(spec, value).map_err(|reason| ModelError::Run { reason })
            })
            .collect()
    }

    /// A session no other run holds, or else the next one in turn.
    fn free_session(&self) -> MutexGuard<'_, Session> {
        let start = self.next_session.fetch_add(1, Ordering::Relaxed);
        let count = self.sessions.len();
        (0..count)
            .find_map(|offset| self.sessions[(start + offset) % count].try_lock().ok())
            .unwrap_or_else(|| lock(&self.sessions[start % count]))
    }

    /// One row of zeros through every session, so the first request does not pay for
    /// ONNX Runtime's lazy initialisation.
    fn warm_up(&self) -> Result<(), ModelError> {
        let zeros: Vec<Tensor> = self.inputs.iter().map(zero_row).collect::<Result<_, _>>()?;
        for _ in 0..self.sessions.len() {
            self.run(&zeros).map_err(|error| ModelError::Load {
                path: self.path.clone(),
                reason: format!("warm-up run failed: {error}"),
            })?;
        }
        Ok(())
    }
}

fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    // A panic while holding a session cannot leave ONNX Runtime's state half-changed
    // from our side: runs are independent.
    session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_session(runtime: &OnnxRuntime, path: &Path, bytes: &[u8]) -> Result<Session, ModelError> {
    let failed = |error: String| ModelError::Load { path: path.to_owned(), reason: error };
    let config = runtime.config();
    let level = match config.graph_optimization {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::All,
    };
    Session::builder(runtime.environment())
        .map_err(|error| failed(error.to_string()))?
        .with_optimization_level(level)
        .map_err(|error| failed(error.to_string()))?
        .with_intra_threads(config.intra_op_threads)
        .map_err(|error| failed(error.to_string()))?
        .with_inter_threads(1)
        .map_err(|error| failed(error.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|error| failed(error.to_string()))
}

fn element_type(ty: TensorElementType) -> Option<ElementType> {
    match ty {
        TensorElementType::Float32 => Some(ElementType::Float32),
        TensorElementType::Float64 => Some(ElementType::Float64),
        TensorElementType::Int64 | TensorElementType::Int32 | TensorElementType::Bool => Some(ElementType::Int64),
        TensorElementType::String => Some(ElementType::Text),
        _ => None,
    }
}

fn input_spec(path: &Path, outlet: &ort::value::Outlet) -> Result<InputSpec, ModelError> {
    let unsupported = |reason: String| ModelError::Unsupported {
        path: path.to_owned(),
        what: format!("input `{}`", outlet.name()),
        reason,
    };
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(unsupported(format!("{:?} is not a tensor", outlet.dtype())));
    };
    // Inputs are fed exactly as typed: no widening of int32 or bool.
    let element_type = match ty {
        TensorElementType::Float32 => ElementType::Float32,
        TensorElementType::Float64 => ElementType::Float64,
        TensorElementType::Int64 => ElementType::Int64,
        TensorElementType::String => ElementType::Text,
        other => return Err(unsupported(format!("element type {other:?}"))),
    };
    if shape.is_empty() {
        return Err(unsupported("a scalar input has no row dimension".to_owned()));
    }
    Ok(InputSpec { name: outlet.name().to_owned(), element_type, shape: shape.to_vec() })
}

fn output_spec(path: &Path, outlet: &ort::value::Outlet) -> Result<OutputSpec, ModelError> {
    let unsupported = |reason: String| ModelError::Unsupported {
        path: path.to_owned(),
        what: format!("output `{}`", outlet.name()),
        reason,
    };
    let (element_type, form) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let element_type = element_type(*ty).ok_or_else(|| unsupported(format!("element type {ty:?}")))?;
            (element_type, OutputForm::Tensor { shape: shape.to_vec() })
        }
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map {
                key: TensorElementType::Int64 | TensorElementType::String,
                value: TensorElementType::Float32,
            } => (ElementType::Float32, OutputForm::ClassMaps),
            other => return Err(unsupported(format!("a sequence of {other:?}"))),
        },
        other => return Err(unsupported(format!("{other:?}"))),
    };
    Ok(OutputSpec { name: outlet.name().to_owned(), element_type, form })
}

fn input_value(tensor: &Tensor) -> Result<SessionInputValue<'_>, ModelError> {
    let failed = |error: ort::Error| ModelError::Run { reason: format!("input `{}`: {error}", tensor.name) };
    let shape = tensor.shape.clone();
    Ok(match &tensor.data {
        TensorData::Float32(values) => TensorRef::from_array_view((shape, values.as_slice())).map_err(failed)?.into(),
        TensorData::Float64(values) => TensorRef::from_array_view((shape, values.as_slice())).map_err(failed)?.into(),
        TensorData::Int64(values) => TensorRef::from_array_view((shape, values.as_slice())).map_err(failed)?.into(),
        TensorData::Text(values) => {
            ort::value::Tensor::from_string_array((shape, values.as_slice())).map_err(failed)?.into()
        }
    })
}

fn zero_row(input: &InputSpec) -> Result<Tensor, ModelError> {
    let shape: Vec<usize> = input.shape.iter().map(|&dim| if dim < 0 { 1 } else { dim as usize }).collect();
    let len = shape.iter().product();
    let data = match input.element_type {
        ElementType::Float32 => TensorData::Float32(vec![0.0; len]),
        ElementType::Float64 => TensorData::Float64(vec![0.0; len]),
        ElementType::Int64 => TensorData::Int64(vec![0; len]),
        ElementType::Text => TensorData::Text(vec![String::new(); len]),
    };
    Tensor::new(input.name.clone(), shape, data).map_err(|error| ModelError::Run { reason: error.to_string() })
}

/// Copies one output out of ONNX Runtime into a host tensor.
fn read_output(spec: &OutputSpec, value: &DynValue) -> Result<Tensor, String> {
    match spec.form {
        OutputForm::Tensor { .. } => read_tensor(&spec.name, value),
        OutputForm::ClassMaps => read_class_maps(&spec.name, value),
    }
}

fn read_tensor(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output `{name}` is not a tensor"));
    };
    let failed = |error: ort::Error| format!("output `{name}`: {error}");
    let (shape, data) = match ty {
        TensorElementType::Float32 => {
            let (shape, values) = value.try_extract_tensor::<f32>().map_err(failed)?;
            (shape.to_vec(), TensorData::Float32(values.to_vec()))
        }
        TensorElementType::Float64 => {
            let (shape, values) = value.try_extract_tensor::<f64>().map_err(failed)?;
            (shape.to_vec(), TensorData::Float64(values.to_vec()))
        }
        TensorElementType::Int64 => {
            let (shape, values) = value.try_extract_tensor::<i64>().map_err(failed)?;
            (shape.to_vec(), TensorData::Int64(values.to_vec()))
        }
        TensorElementType::Int32 => {
            let (shape, values) = value.try_extract_tensor::<i32>().map_err(failed)?;
            (shape.to_vec(), TensorData::Int64(values.iter().map(|&v| i64::from(v)).collect()))
        }
        TensorElementType::Bool => {
            let (shape, values) = value.try_extract_tensor::<bool>().map_err(failed)?;
            (shape.to_vec(), TensorData::Int64(values.iter().map(|&v| i64::from(v)).collect()))
        }
        TensorElementType::String => {
            let (shape, values) = value.try_extract_strings().map_err(failed)?;
            (shape.to_vec(), TensorData::Text(values))
        }
        other => return Err(format!("output `{name}` has unsupported element type {other:?}")),
    };
    let shape = shape.into_iter().map(|dim| usize::try_from(dim).unwrap_or(0)).collect();
    Tensor::new(name, shape, data).map_err(|error| error.to_string())
}

/// A ZipMap output, one `{class: probability}` map per row, as `[rows, classes]` with
/// classes in ascending key order (the classifier's class order for integer and for
/// scikit-learn's sorted string labels).
fn read_class_maps(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let failed = |error: ort::Error| format!("output `{name}`: {error}");
    let maps = value.try_extract_sequence::<DynMapValueType>().map_err(failed)?;
    let mut classes = None;
    let mut data = Vec::new();
    for map in &maps {
        let row = match map.dtype() {
            ValueType::Map { key: TensorElementType::String, .. } => {
                sorted_values(map.try_extract_map::<String, f32>().map_err(failed)?)
            }
            _ => sorted_values(map.try_extract_map::<i64, f32>().map_err(failed)?),
        };
        if *classes.get_or_insert(row.len()) != row.len() {
            return Err(format!("output `{name}` has rows with different numbers of classes"));
        }
        data.extend(row);
    }
    Tensor::new(name, vec![maps.len(), classes.unwrap_or(0)], TensorData::Float32(data)).map_err(|e| e.to_string())
}

fn sorted_values<K: Ord>(map: std::collections::HashMap<K, f32>) -> Vec<f32> {
    let mut entries: Vec<(K, f32)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().map(|(_, probability)| probability).collect()
}
