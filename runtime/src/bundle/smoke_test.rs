//! The checks a bundle passes before it may serve: its manifest's inputs against the plugin's
//! description, and every sample request through plugin and model against the expected outputs.

use super::error::BundleError;
use super::loaded::Bundle;
use super::manifest::DEFAULT_TOLERANCE;
use crate::tensor::{Tensor, TensorData};

/// How closely the trees must reproduce the model on the samples: ONNX Runtime sums the
/// trees in f32, the explainer in f64.
const TREES_TOLERANCE: f64 = 1e-4;

impl Bundle {
    /// The manifest's inputs against the plugin's own description.
    pub(super) fn check_interface(&self) -> Result<(), String> {
        let info = self.plugin.info();
        let declared: Vec<&str> = self.manifest.inputs.iter().map(|field| field.name.as_str()).collect();
        let described: Vec<&str> = info.inputs.iter().map(|field| field.name.as_str()).collect();
        if !self.manifest.inputs.is_empty() && declared != described {
            return Err(format!("the manifest lists inputs {declared:?} but the plugin describes {described:?}"));
        }
        Ok(())
    }

    /// Runs every sample request of the manifest through plugin and model and compares the
    /// outputs with the expected ones; the error names the sample and what differed.
    pub fn smoke_test(&self) -> Result<(), BundleError> {
        self.run_samples().map_err(|reason| BundleError::SmokeTest {
            name: self.name().to_owned(),
            version: self.version().to_string(),
            reason,
        })
    }

    fn run_samples(&self) -> Result<(), String> {
        for (index, sample) in self.manifest.samples.iter().enumerate() {
            let tensors = self.plugin.preprocess(&sample.request).map_err(|e| format!("sample {index}: {e}"))?;
            self.model
                .check_inputs(&tensors)
                .map_err(|e| format!("sample {index}: the plugin's output does not fit the model: {e}"))?;
            if let Some(explainer) = &self.explainer {
                // The explainer must explain this model: its trees give the model's outputs.
                let outputs = self.model.run(&tensors).map_err(|e| format!("sample {index}: {e}"))?;
                explainer
                    .check_against(&tensors, &outputs, TREES_TOLERANCE)
                    .map_err(|e| format!("sample {index}: trees.json: {e}"))?;
            }
            let inference =
                self.infer_one(&sample.request, false, false).map_err(|e| format!("sample {index}: {e}"))?;
            let tolerance = sample.tolerance.unwrap_or(DEFAULT_TOLERANCE);
            for (name, expected) in &sample.expected {
                let output = inference
                    .outputs
                    .iter()
                    .find(|tensor| &tensor.name == name)
                    .ok_or_else(|| format!("sample {index}: the model has no output `{name}`"))?;
                compare(output, expected, tolerance).map_err(|e| format!("sample {index}: output `{name}`: {e}"))?;
            }
        }
        Ok(())
    }
}

fn compare(output: &Tensor, expected: &[f64], tolerance: f64) -> Result<(), String> {
    let actual: Vec<f64> = match &output.data {
        TensorData::Float32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        TensorData::Float64(values) => values.clone(),
        TensorData::Int64(values) => values.iter().map(|&v| v as f64).collect(),
        TensorData::Text(_) => return Err("text outputs cannot be compared with numbers".to_owned()),
    };
    if actual.len() != expected.len() {
        return Err(format!("expected {} values, got {}", expected.len(), actual.len()));
    }
    for (a, e) in actual.iter().zip(expected) {
        if (a - e).abs() > tolerance * e.abs().max(f64::MIN_POSITIVE) {
            return Err(format!("expected {e}, got {a} (relative tolerance {tolerance})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_compare_within_a_relative_tolerance() {
        let output = Tensor::float32("price", vec![2, 1], vec![100.0, 200.0]);
        assert!(compare(&output, &[100.05, 200.0], 1e-3).is_ok());
        assert!(compare(&output, &[101.0, 200.0], 1e-3).is_err());
        assert!(compare(&output, &[100.0], 1e-3).is_err());
    }
}
