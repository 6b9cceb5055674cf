//! Building input tensors from features, and reading output tensors.

use crate::fields::Category;
use crate::{OutputError, Tensor, TensorData};

/// Convenience constructors and accessors for [`Tensor`].
pub trait TensorExt: Sized {
    /// A float32 tensor of the given shape.
    fn float32(name: &str, shape: &[u32], data: Vec<f32>) -> Self;
    /// An int64 tensor of the given shape.
    fn int64(name: &str, shape: &[u32], data: Vec<i64>) -> Self;
    /// The number of elements the shape implies.
    fn element_count(&self) -> usize;
}

impl TensorExt for Tensor {
    fn float32(name: &str, shape: &[u32], data: Vec<f32>) -> Self {
        Tensor { name: name.to_owned(), shape: shape.to_vec(), data: TensorData::Float32(data) }
    }

    fn int64(name: &str, shape: &[u32], data: Vec<i64>) -> Self {
        Tensor { name: name.to_owned(), shape: shape.to_vec(), data: TensorData::Int64(data) }
    }

    fn element_count(&self) -> usize {
        self.shape.iter().map(|&dim| dim as usize).product()
    }
}

/// Rows of float32 features with a fixed width, built column by column.
///
/// ```
/// use forecourt_plugin_sdk::{Category, Features};
/// const BODY: Category = Category::new("body", "Body type", &["coupe", "sedan", "wagon"]);
///
/// let mut features = Features::new(4);
/// features.number(12_000.0).one_hot(&BODY, 1);
/// assert_eq!(features.into_tensor("features").shape, vec![1, 4]);
/// ```
#[derive(Debug, Clone)]
pub struct Features {
    width: usize,
    data: Vec<f32>,
}

impl Features {
    /// Features for rows of `width` columns, starting a first row.
    pub fn new(width: usize) -> Self {
        Self { width, data: Vec::with_capacity(width) }
    }

    pub fn number(&mut self, value: f64) -> &mut Self {
        self.data.push(value as f32);
        self
    }

    /// `1.0` for true, `0.0` for false.
    pub fn flag(&mut self, value: bool) -> &mut Self {
        self.data.push(if value { 1.0 } else { 0.0 });
        self
    }

    /// One column per vocabulary value, `1.0` at `index`.
    pub fn one_hot(&mut self, category: &Category, index: usize) -> &mut Self {
        self.data.extend((0..category.values.len()).map(|i| if i == index { 1.0 } else { 0.0 }));
        self
    }

    /// One column holding `first + index`: for ordered vocabularies (poor < fair < good).
    pub fn ordinal(&mut self, index: usize, first: f64) -> &mut Self {
        self.number(first + index as f64)
    }

    /// Starts another row holding a copy of the last complete row, to vary a few columns
    /// (a forecast row differs from the current one only in mileage and age).
    pub fn repeat_row(&mut self) -> &mut [f32] {
        assert_eq!(self.data.len() % self.width, 0, "the current row is incomplete");
        let start = self.data.len() - self.width;
        self.data.extend_from_within(start..);
        let len = self.data.len();
        &mut self.data[len - self.width..]
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.width
    }

    /// The `[rows, width]` float32 tensor.
    ///
    /// # Panics
    /// When the last row is incomplete: a bug in the plugin, which the host reports as a
    /// plugin failure.
    pub fn into_tensor(self, name: &str) -> Tensor {
        assert_eq!(self.data.len() % self.width, 0, "feature rows must have {} columns", self.width);
        let rows = (self.data.len() / self.width) as u32;
        Tensor::float32(name, &[rows, self.width as u32], self.data)
    }
}

/// A request's rows of the model's outputs, by name.
#[derive(Debug, Clone)]
pub struct Outputs {
    tensors: Vec<Tensor>,
}

impl Outputs {
    pub fn new(tensors: Vec<Tensor>) -> Self {
        Self { tensors }
    }

    pub fn get(&self, name: &str) -> Result<&Tensor, OutputError> {
        self.tensors
            .iter()
            .find(|tensor| tensor.name == name)
            .ok_or_else(|| OutputError { message: format!("the model produced no output `{name}`") })
    }

    pub fn float32(&self, name: &str) -> Result<&[f32], OutputError> {
        match &self.get(name)?.data {
            TensorData::Float32(data) => Ok(data),
            _ => Err(OutputError { message: format!("output `{name}` is not float32") }),
        }
    }

    pub fn int64(&self, name: &str) -> Result<&[i64], OutputError> {
        match &self.get(name)?.data {
            TensorData::Int64(data) => Ok(data),
            _ => Err(OutputError { message: format!("output `{name}` is not int64") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAKE: Category = Category::new("make", "Make", &["a", "b", "c"]);

    #[test]
    fn features_build_rows_and_repeat_them() {
        let mut features = Features::new(4);
        features.number(2.5).one_hot(&MAKE, 2);
        features.repeat_row()[0] = 7.0;
        assert_eq!(features.rows(), 2);
        let tensor = features.into_tensor("x");
        assert_eq!(tensor.shape, vec![2, 4]);
        assert_eq!(tensor.data, TensorData::Float32(vec![2.5, 0.0, 0.0, 1.0, 7.0, 0.0, 0.0, 1.0]));
    }

    #[test]
    fn outputs_are_read_by_name_and_type() {
        let outputs = Outputs::new(vec![Tensor::float32("price", &[1, 1], vec![3.0])]);
        assert_eq!(outputs.float32("price").unwrap(), &[3.0]);
        assert!(outputs.int64("price").is_err());
        assert!(outputs.float32("label").is_err());
    }
}
