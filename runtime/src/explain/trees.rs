//! `trees.json`: a tree ensemble with its node covers, as `train.py` exports it, parsed into
//! checked types. The file comes from outside (a bundle), so every count, index, number and
//! the shape of each tree is checked before anything walks it.
//!
//! ```json
//! {
//!   "format": "forecourt-trees", "format_version": 1,
//!   "estimator": "xgboost.XGBRegressor",
//!   "input": "features", "output": "price",
//!   "base_value": 21456.3,
//!   "comparison": "<",
//!   "missing": "refused",
//!   "columns": [{"name": "mileage", "field": "mileage"},
//!               {"name": "make_buick", "field": "make", "value": "buick"}, ...],
//!   "output_scale": {"input": "years_ahead", "rate": -0.116, "label": "age"},
//!   "trees": [{"left": [1, -1, -1], "right": [2, -1, -1], "feature": [0, -1, -1],
//!              "threshold": [20000.0, 0.0, 0.0], "value": [0.0, 310.5, -120.0],
//!              "cover": [643.0, 300.0, 343.0]}, ...]
//! }
//! ```
//!
//! Raw score of a row `x`: `base_value` plus, for each tree, the `value` of the leaf reached
//! from node 0 by going to `left` when `x[feature] <comparison> threshold` and to `right`
//! otherwise. A leaf has `left = right = -1` and `feature = -1`; `value` is read at leaves
//! only. `cover` is the training weight that reached the node (xgboost's sum of hessians,
//! scikit-learn's `weighted_n_node_samples`). The model's output is the raw score, times
//! `exp(rate * input[row, 0])` when `output_scale` is present.

use serde::Deserialize;

use super::ExplainError;

/// The only format this runtime reads.
pub const FORMAT: &str = "forecourt-trees";
pub const FORMAT_VERSION: u32 = 1;
/// Bounds on what a bundle may ask the runtime to hold and walk.
pub const MAX_TREES: usize = 10_000;
pub const MAX_NODES_PER_TREE: usize = 1 << 16;
pub const MAX_TOTAL_NODES: usize = 2_000_000;
/// The path buffers grow with the square of the depth; deeper trees are not gradient boosting.
pub const MAX_DEPTH: usize = 32;
pub const MAX_COLUMNS: usize = 4096;
pub const MAX_NAME_LEN: usize = 128;
/// How far a node's cover may be from the sum of its children's, relative to it: xgboost sums
/// hessians in f32.
pub const COVER_TOLERANCE: f64 = 1e-4;

/// A node index meaning "none" (a leaf's children, a leaf's feature).
pub(crate) const NONE: u32 = u32::MAX;

/// The file as written, before any check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnsemble {
    format: String,
    format_version: u32,
    #[serde(default)]
    estimator: String,
    input: String,
    output: String,
    base_value: f64,
    comparison: String,
    missing: String,
    columns: Vec<Column>,
    #[serde(default)]
    output_scale: Option<OutputScale>,
    trees: Vec<RawTree>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTree {
    left: Vec<i64>,
    right: Vec<i64>,
    feature: Vec<i64>,
    threshold: Vec<f64>,
    value: Vec<f64>,
    cover: Vec<f64>,
}

/// One model column and the request field it belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The column's name in the model's input.
    pub name: String,
    /// The request field whose value it encodes; one-hot columns of one field share it.
    pub field: String,
    /// For a one-hot column: the field's value this column is 1.0 for.
    #[serde(default)]
    pub value: Option<String>,
}

/// `output = raw * exp(rate * input[row, 0])`: a factor the trees do not see (car-price's
/// depreciation with age).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputScale {
    /// The model input holding one number per row.
    pub input: String,
    pub rate: f64,
    /// What the factor stands for, in words ("age").
    #[serde(default)]
    pub label: String,
    /// The unit of the input ("years").
    #[serde(default)]
    pub unit: String,
}

/// How a split compares a value with its threshold to go left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `x < threshold` (xgboost).
    Less,
    /// `x <= threshold` (scikit-learn).
    LessOrEqual,
}

/// One node, in a flat array per tree; `left == NONE` marks a leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Node {
    pub left: u32,
    pub right: u32,
    pub feature: u32,
    pub threshold: f64,
    /// At a leaf its value; at an internal node the cover-weighted mean of its leaves (the
    /// tree's expectation below it), computed at load.
    pub value: f64,
    pub cover: f64,
}

impl Node {
    pub fn is_leaf(&self) -> bool {
        self.left == NONE
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
}

/// A checked ensemble: every tree is a tree, every index in range, every number finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    pub estimator: String,
    pub input: String,
    pub output: String,
    pub base_value: f64,
    pub comparison: Comparison,
    pub columns: Vec<Column>,
    pub output_scale: Option<OutputScale>,
    pub(crate) trees: Vec<Tree>,
    /// The deepest leaf's depth (root = 0), which sizes the path buffers.
    pub(crate) max_depth: usize,
    /// `base_value` plus each tree's expectation: the mean raw score over the training rows.
    pub expected_value: f64,
}

fn invalid(reason: impl Into<String>) -> ExplainError {
    ExplainError::InvalidTrees { reason: reason.into() }
}

impl Ensemble {
    /// Parses and checks `trees.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ExplainError> {
        let raw: RawEnsemble = serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        Self::check(raw)
    }

    fn check(raw: RawEnsemble) -> Result<Self, ExplainError> {
        if raw.format != FORMAT || raw.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format {:?} version {} is not {FORMAT:?} version {FORMAT_VERSION}",
                short(&raw.format),
                raw.format_version
            )));
        }
        let comparison = match raw.comparison.as_str() {
            "<" => Comparison::Less,
            "<=" => Comparison::LessOrEqual,
            other => return Err(invalid(format!("comparison {:?} is neither \"<\" nor \"<=\"", short(other)))),
        };
        if raw.missing != "refused" {
            return Err(invalid(format!("missing {:?}: only \"refused\" is supported", short(&raw.missing))));
        }
        for (what, name) in [("input", &raw.input), ("output", &raw.output), ("estimator", &raw.estimator)] {
            check_name(what, name, what == "estimator")?;
        }
        if !raw.base_value.is_finite() {
            return Err(invalid("base_value is not a finite number"));
        }
        check_columns(&raw.columns)?;
        if let Some(scale) = &raw.output_scale {
            check_name("output_scale.input", &scale.input, false)?;
            check_name("output_scale.label", &scale.label, true)?;
            check_name("output_scale.unit", &scale.unit, true)?;
            if !scale.rate.is_finite() || scale.rate.abs() > 100.0 {
                return Err(invalid("output_scale.rate must be a finite number within ±100"));
            }
            if scale.input == raw.input {
                return Err(invalid("output_scale.input must differ from input"));
            }
        }
        if raw.trees.is_empty() || raw.trees.len() > MAX_TREES {
            return Err(invalid(format!("{} trees: between 1 and {MAX_TREES} are allowed", raw.trees.len())));
        }
        let total: usize = raw.trees.iter().map(|tree| tree.left.len()).sum();
        if total > MAX_TOTAL_NODES {
            return Err(invalid(format!("{total} nodes in all: at most {MAX_TOTAL_NODES} are allowed")));
        }
        let mut trees = Vec::with_capacity(raw.trees.len());
        let mut max_depth = 0;
        let mut expected_value = raw.base_value;
        for (index, tree) in raw.trees.into_iter().enumerate() {
            let (tree, depth) =
                check_tree(tree, raw.columns.len()).map_err(|reason| invalid(format!("tree {index}: {reason}")))?;
            max_depth = max_depth.max(depth);
            expected_value += tree.nodes[0].value;
            trees.push(tree);
        }
        if !expected_value.is_finite() {
            return Err(invalid("the expected value overflows"));
        }
        Ok(Self {
            estimator: raw.estimator,
            input: raw.input,
            output: raw.output,
            base_value: raw.base_value,
            comparison,
            columns: raw.columns,
            output_scale: raw.output_scale,
            trees,
            max_depth,
            expected_value,
        })
    }

    /// The raw score of one row of model columns (before any output scale).
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.base_value + self.trees.iter().map(|tree| tree.nodes[self.leaf(tree, x)].value).sum::<f64>()
    }

    /// Whether a split sends `value` left.
    pub(crate) fn goes_left(&self, value: f64, threshold: f64) -> bool {
        match self.comparison {
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }

    fn leaf(&self, tree: &Tree, x: &[f64]) -> usize {
        let mut index = 0;
        loop {
            let node = &tree.nodes[index];
            if node.is_leaf() {
                return index;
            }
            let next = if self.goes_left(x[node.feature as usize], node.threshold) { node.left } else { node.right };
            index = next as usize;
        }
    }

    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    pub fn node_count(&self) -> usize {
        self.trees.iter().map(|tree| tree.nodes.len()).sum()
    }
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), ExplainError> {
    if (name.is_empty() && !may_be_empty) || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} {:?} must be 1 to {MAX_NAME_LEN} characters without control characters",
            short(name)
        )));
    }
    Ok(())
}

fn check_columns(columns: &[Column]) -> Result<(), ExplainError> {
    if columns.is_empty() || columns.len() > MAX_COLUMNS {
        return Err(invalid(format!("{} columns: between 1 and {MAX_COLUMNS} are allowed", columns.len())));
    }
    for (index, column) in columns.iter().enumerate() {
        check_name(&format!("columns[{index}].name"), &column.name, false)?;
        check_name(&format!("columns[{index}].field"), &column.field, false)?;
        if let Some(value) = &column.value {
            check_name(&format!("columns[{index}].value"), value, false)?;
        }
        if columns[..index].iter().any(|earlier| earlier.name == column.name) {
            return Err(invalid(format!("column {:?} appears twice", column.name)));
        }
        // A field is either one numeric column or a group of one-hot columns, never both.
        let mixed = columns[..index]
            .iter()
            .any(|earlier| earlier.field == column.field && (earlier.value.is_none() || column.value.is_none()));
        if mixed {
            return Err(invalid(format!("field {:?} mixes a numeric column with others", column.field)));
        }
    }
    Ok(())
}

/// Checks one tree and returns it with its depth: equal array lengths, children in range,
/// every node reached exactly once from node 0 (so no cycle, no orphan), finite numbers,
/// positive covers that add up, and features that name a column.
fn check_tree(raw: RawTree, columns: usize) -> Result<(Tree, usize), String> {
    let n = raw.left.len();
    if n == 0 || n > MAX_NODES_PER_TREE {
        return Err(format!("{n} nodes: between 1 and {MAX_NODES_PER_TREE} are allowed"));
    }
    let lengths = [raw.right.len(), raw.feature.len(), raw.threshold.len(), raw.value.len(), raw.cover.len()];
    if lengths.iter().any(|&len| len != n) {
        return Err("left, right, feature, threshold, value and cover must have one entry per node".to_owned());
    }
    let index = |value: i64, what: &str, node: usize| -> Result<u32, String> {
        match value {
            -1 => Ok(NONE),
            v if v >= 0 && (v as u64) < n as u64 => Ok(v as u32),
            v => Err(format!("node {node}: {what} {v} is out of range")),
        }
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (left, right) = (index(raw.left[i], "left", i)?, index(raw.right[i], "right", i)?);
        let leaf = left == NONE;
        if (right == NONE) != leaf {
            return Err(format!("node {i}: one child only"));
        }
        let feature = if leaf {
            if raw.feature[i] != -1 {
                return Err(format!("node {i}: a leaf's feature must be -1"));
            }
            NONE
        } else {
            match raw.feature[i] {
                f if f >= 0 && (f as u64) < columns as u64 => f as u32,
                f => return Err(format!("node {i}: feature {f} is not a column (there are {columns})")),
            }
        };
        let (threshold, value, cover) = (raw.threshold[i], raw.value[i], raw.cover[i]);
        if !threshold.is_finite() || !value.is_finite() || !cover.is_finite() {
            return Err(format!("node {i}: threshold, value and cover must be finite"));
        }
        if cover <= 0.0 {
            return Err(format!("node {i}: cover {cover} must be positive"));
        }
        nodes.push(Node { left, right, feature, threshold, value: if leaf { value } else { 0.0 }, cover });
    }

    // Depth-first from the root with an explicit stack: each node may be reached once.
    let mut depth_of = vec![usize::MAX; n];
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![(0usize, 0usize)];
    let mut max_depth = 0;
    while let Some((node, depth)) = stack.pop() {
        if depth_of[node] != usize::MAX {
            return Err(format!("node {node} is reached twice (not a tree)"));
        }
        if depth > MAX_DEPTH {
            return Err(format!("deeper than {MAX_DEPTH}"));
        }
        depth_of[node] = depth;
        max_depth = max_depth.max(depth);
        order.push(node);
        let Node { left, right, .. } = nodes[node];
        if left != NONE {
            stack.push((left as usize, depth + 1));
            stack.push((right as usize, depth + 1));
        }
    }
    if order.len() != n {
        return Err(format!("{} of {n} nodes are not reachable from node 0", n - order.len()));
    }
    // Children come after their parent in `order`: in reverse, each internal node's
    // children already hold their expectations.
    for &node in order.iter().rev() {
        let Node { left, right, cover, .. } = nodes[node];
        if left == NONE {
            continue;
        }
        let (l, r) = (nodes[left as usize], nodes[right as usize]);
        let children = l.cover + r.cover;
        if (cover - children).abs() > COVER_TOLERANCE * cover {
            return Err(format!("node {node}: cover {cover} is not the sum of its children's ({children})"));
        }
        nodes[node].value = (l.cover * l.value + r.cover * r.value) / children;
    }
    Ok((Tree { nodes }, max_depth))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A stump on column 0 (x < 10 -> 4.0 with cover 3, else -2.0 with cover 1) and a
    /// two-level tree on columns 1 then 0.
    pub fn small() -> Value {
        json!({
            "format": "forecourt-trees", "format_version": 1, "estimator": "test",
            "input": "features", "output": "price", "base_value": 100.0,
            "comparison": "<", "missing": "refused",
            "columns": [{"name": "a", "field": "a"}, {"name": "b_x", "field": "b", "value": "x"},
                        {"name": "b_y", "field": "b", "value": "y"}],
            "trees": [
                {"left": [1, -1, -1], "right": [2, -1, -1], "feature": [0, -1, -1],
                 "threshold": [10.0, 0.0, 0.0], "value": [0.0, 4.0, -2.0], "cover": [4.0, 3.0, 1.0]},
                {"left": [1, 3, -1, -1, -1], "right": [2, 4, -1, -1, -1], "feature": [1, 0, -1, -1, -1],
                 "threshold": [0.5, 5.0, 0.0, 0.0, 0.0], "value": [0.0, 0.0, 7.0, 1.0, -1.0],
                 "cover": [10.0, 6.0, 4.0, 2.0, 4.0]}
            ]
        })
    }

    pub fn parse(value: &Value) -> Result<Ensemble, ExplainError> {
        Ensemble::parse(value.to_string().as_bytes())
    }

    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut value = small();
        edit(&mut value);
        match parse(&value) {
            Ok(_) => panic!("accepted {value}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_valid_file_parses_with_expectations_and_depth() {
        let ensemble = parse(&small()).unwrap();
        assert_eq!(ensemble.tree_count(), 2);
        assert_eq!(ensemble.node_count(), 8);
        assert_eq!(ensemble.max_depth, 2);
        // Tree 0: (3*4 + 1*-2)/4 = 2.5; tree 1: inner (2*1 + 4*-1)/6 = -1/3, root (6*-1/3 + 4*7)/10 = 2.6.
        assert!((ensemble.expected_value - (100.0 + 2.5 + 2.6)).abs() < 1e-12);
        assert_eq!(ensemble.predict(&[3.0, 0.0, 1.0]), 100.0 + 4.0 + 1.0);
        assert_eq!(ensemble.predict(&[10.0, 1.0, 0.0]), 100.0 - 2.0 + 7.0);
    }

    #[test]
    fn the_comparison_decides_ties() {
        let mut value = small();
        assert_eq!(parse(&value).unwrap().predict(&[10.0, 1.0, 0.0]), 100.0 - 2.0 + 7.0);
        value["comparison"] = json!("<=");
        assert_eq!(parse(&value).unwrap().predict(&[10.0, 1.0, 0.0]), 100.0 + 4.0 + 7.0);
    }

    #[test]
    fn hostile_files_are_refused_with_a_reason() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("not a tree", Box::new(|v| v["trees"][1]["left"][1] = json!(2))),
            ("not the sum", Box::new(|v| v["trees"][0]["cover"][0] = json!(5.0))),
            ("must be positive", Box::new(|v| v["trees"][0]["cover"][2] = json!(0.0))),
            ("out of range", Box::new(|v| v["trees"][0]["left"][0] = json!(7))),
            ("out of range", Box::new(|v| v["trees"][0]["right"][0] = json!(-5))),
            ("not a column", Box::new(|v| v["trees"][0]["feature"][0] = json!(3))),
            ("one child only", Box::new(|v| v["trees"][0]["right"][0] = json!(-1))),
            ("one entry per node", Box::new(|v| v["trees"][0]["cover"] = json!([4.0, 3.0]))),
            ("a leaf's feature", Box::new(|v| v["trees"][0]["feature"][1] = json!(0))),
            ("between 1 and", Box::new(|v| v["trees"] = json!([]))),
            ("neither", Box::new(|v| v["comparison"] = json!(">"))),
            ("format", Box::new(|v| v["format_version"] = json!(2))),
            ("refused", Box::new(|v| v["missing"] = json!("left"))),
            ("appears twice", Box::new(|v| v["columns"][1]["name"] = json!("a"))),
            ("mixes", Box::new(|v| v["columns"][0]["field"] = json!("b"))),
            ("unknown field", Box::new(|v| v["extra"] = json!(1))),
            ("output_scale.rate", Box::new(|v| v["output_scale"] = json!({"input": "years", "rate": 1e9}))),
        ];
        for (expected, edit) in cases {
            let reason = refused(edit);
            assert!(reason.contains(expected), "expected {expected:?} in {reason:?}");
        }
    }

    #[test]
    fn a_cycle_or_orphan_is_refused() {
        // Node 1 points back at the root: reached twice.
        let reason = refused(|v| {
            v["trees"][1]["left"][1] = json!(0);
        });
        assert!(reason.contains("reached twice"), "{reason}");
        // A sixth node nobody points at.
        let reason = refused(|v| {
            let tree = &mut v["trees"][0];
            for (key, extra) in [("left", -1), ("right", -1), ("feature", -1)] {
                tree[key].as_array_mut().unwrap().push(json!(extra));
            }
            for key in ["threshold", "value", "cover"] {
                tree[key].as_array_mut().unwrap().push(json!(1.0));
            }
        });
        assert!(reason.contains("not reachable"), "{reason}");
    }

    #[test]
    fn depth_and_size_are_bounded() {
        // A chain deeper than MAX_DEPTH: node i splits into leaf 2i+2... built as a comb.
        let n = 2 * (MAX_DEPTH + 2) + 1;
        let (mut left, mut right, mut feature, mut cover) =
            (vec![-1i64; n], vec![-1i64; n], vec![-1i64; n], vec![0.0; n]);
        let mut node = 0usize;
        let mut next = 1usize;
        while next + 1 < n {
            left[node] = next as i64;
            right[node] = (next + 1) as i64;
            feature[node] = 0;
            node = next;
            next += 2;
        }
        // Covers bottom-up: each leaf 1.0, each internal node the sum of its children.
        for i in (0..n).rev() {
            cover[i] = if left[i] < 0 { 1.0 } else { cover[left[i] as usize] + cover[right[i] as usize] };
        }
        let reason = refused(|v| {
            v["trees"][0] = json!({"left": left, "right": right, "feature": feature,
                                   "threshold": vec![0.0; n], "value": vec![0.0; n], "cover": cover});
        });
        assert!(reason.contains("deeper than"), "{reason}");
        let reason = refused(|v| v["columns"] = json!([]));
        assert!(reason.contains("columns"), "{reason}");
        assert!(Ensemble::parse(b"[1, 2").is_err());
        // serde_json refuses numbers beyond f64, so no infinity reaches the checks.
        let text = small().to_string().replacen("10.0", "1e400", 1);
        assert!(Ensemble::parse(text.as_bytes()).unwrap_err().to_string().contains("out of range"));
    }
}
