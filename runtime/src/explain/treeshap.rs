//! Exact path-dependent TreeSHAP (Lundberg, Erion, Lee 2018, "Consistent Individualized
//! Feature Attribution for Tree Ensembles", Algorithm 2), in f64, with the arithmetic of the
//! reference implementation (shap's `tree_shap.h`: EXTEND, UNWIND and the unwound path sum)
//! so that the values agree with `shap.TreeExplainer` to rounding.
//!
//! Cost per row: O(trees x leaves x depth²). The path buffers are sized once per call from
//! the ensemble's depth; nothing is allocated per node.

use super::trees::{Ensemble, NONE, Node, Tree};

/// One feature on the current decision path and the share of orderings it accounts for.
#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    /// The column, or `NONE` for the root's placeholder.
    feature: u32,
    /// The share of training weight that would flow this way without the feature's value.
    zero_fraction: f64,
    /// 1 when the row's own value goes this way, else 0.
    one_fraction: f64,
    /// The permutation weight of subsets of this size.
    weight: f64,
}

/// Reusable buffers for [`Ensemble::shap_into`]: one per thread, sized for one ensemble.
#[derive(Debug, Clone)]
pub struct Scratch {
    path: Vec<PathElement>,
}

impl Scratch {
    pub fn for_ensemble(ensemble: &Ensemble) -> Self {
        // Each level copies its parent's path (at most depth + 2 long) into the next segment.
        let levels = ensemble.max_depth + 2;
        Self { path: vec![PathElement::default(); levels * (levels + 1) / 2] }
    }
}

impl Ensemble {
    /// SHAP values of one row of model columns, in raw-score units: `phi[j]` for column `j`,
    /// with `expected_value + sum(phi) == predict(x)`.
    pub fn shap(&self, x: &[f64]) -> Vec<f64> {
        let mut phi = vec![0.0; self.columns.len()];
        self.shap_into(x, &mut phi, &mut Scratch::for_ensemble(self));
        phi
    }

    /// [`shap`](Self::shap) into the caller's buffers; `phi` is overwritten. `x` and `phi`
    /// hold one entry per column and `scratch` was made for this ensemble (checked).
    pub fn shap_into(&self, x: &[f64], phi: &mut [f64], scratch: &mut Scratch) {
        assert!(x.len() == self.columns.len() && phi.len() == self.columns.len(), "one value per column");
        let levels = self.max_depth + 2;
        assert!(scratch.path.len() >= levels * (levels + 1) / 2, "scratch made for another ensemble");
        phi.fill(0.0);
        for tree in &self.trees {
            let mut walk = Walk { ensemble: self, tree, x, phi: &mut *phi };
            walk.recurse(&mut scratch.path, 0, 0, 1.0, 1.0, NONE);
        }
    }
}

struct Walk<'a> {
    ensemble: &'a Ensemble,
    tree: &'a Tree,
    x: &'a [f64],
    phi: &'a mut [f64],
}

impl Walk<'_> {
    /// `parent` starts with the parent's path of `depth + 1` elements; this node's path is
    /// built in the segment right after it.
    fn recurse(
        &mut self,
        parent: &mut [PathElement],
        node_index: usize,
        mut depth: usize,
        zero_fraction: f64,
        one_fraction: f64,
        feature: u32,
    ) {
        let (parent_path, rest) = parent.split_at_mut(depth + 1);
        let path = rest;
        path[..=depth].copy_from_slice(parent_path);
        extend(path, depth, zero_fraction, one_fraction, feature);
        let node: Node = self.tree.nodes[node_index];

        if node.is_leaf() {
            for i in 1..=depth {
                let w = unwound_sum(path, depth, i);
                let element = path[i];
                self.phi[element.feature as usize] += w * (element.one_fraction - element.zero_fraction) * node.value;
            }
            return;
        }

        let (hot, cold) = if self.ensemble.goes_left(self.x[node.feature as usize], node.threshold) {
            (node.left, node.right)
        } else {
            (node.right, node.left)
        };
        let (hot, cold) = (hot as usize, cold as usize);
        let hot_zero = self.tree.nodes[hot].cover / node.cover;
        let cold_zero = self.tree.nodes[cold].cover / node.cover;
        let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);

        // A feature split on again higher up: undo that split, to redo it here.
        if let Some(k) = (0..=depth).find(|&k| path[k].feature == node.feature) {
            incoming_zero = path[k].zero_fraction;
            incoming_one = path[k].one_fraction;
            unwind(path, depth, k);
            depth -= 1;
        }
        self.recurse(path, hot, depth + 1, hot_zero * incoming_zero, incoming_one, node.feature);
        self.recurse(path, cold, depth + 1, cold_zero * incoming_zero, 0.0, node.feature);
    }
}

/// EXTEND: adds a feature to the path, updating the weights of every subset size.
fn extend(path: &mut [PathElement], depth: usize, zero_fraction: f64, one_fraction: f64, feature: u32) {
    path[depth] = PathElement { feature, zero_fraction, one_fraction, weight: if depth == 0 { 1.0 } else { 0.0 } };
    let scale = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one_fraction * path[i].weight * (i + 1) as f64 / scale;
        path[i].weight = zero_fraction * path[i].weight * (depth - i) as f64 / scale;
    }
}

/// UNWIND: removes the path's element `index`, the inverse of [`extend`].
fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let PathElement { one_fraction, zero_fraction, .. } = path[index];
    let scale = (depth + 1) as f64;
    let mut next_one_portion = path[depth].weight;
    for i in (0..depth).rev() {
        if one_fraction != 0.0 {
            let previous = path[i].weight;
            path[i].weight = next_one_portion * scale / ((i + 1) as f64 * one_fraction);
            next_one_portion = previous - path[i].weight * zero_fraction * (depth - i) as f64 / scale;
        } else {
            path[i].weight = path[i].weight * scale / (zero_fraction * (depth - i) as f64);
        }
    }
    for i in index..depth {
        let next = path[i + 1];
        path[i] = PathElement { weight: path[i].weight, ..next };
    }
}

/// The total permutation weight the path would have without its element `index`.
fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let PathElement { one_fraction, zero_fraction, .. } = path[index];
    let scale = (depth + 1) as f64;
    let mut next_one_portion = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one_fraction != 0.0 {
            let tmp = next_one_portion * scale / ((i + 1) as f64 * one_fraction);
            total += tmp;
            next_one_portion = path[i].weight - tmp * zero_fraction * (depth - i) as f64 / scale;
        } else {
            total += path[i].weight / zero_fraction / ((depth - i) as f64 / scale);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::trees::tests::{parse, small};
    use super::*;
    use serde_json::json;

    /// Exact Shapley values of the path-dependent value function by brute force over subsets:
    /// v(S) = E[f | x_S] where a split on a feature outside S follows both children weighted
    /// by cover. Exponential, fine for three columns.
    fn brute_force(ensemble: &Ensemble, x: &[f64]) -> Vec<f64> {
        let m = x.len();
        let value = |set: u32| -> f64 {
            fn walk(e: &Ensemble, tree: &Tree, node: usize, x: &[f64], set: u32) -> f64 {
                let n = tree.nodes[node];
                if n.is_leaf() {
                    return n.value;
                }
                if set & (1 << n.feature) != 0 {
                    let next = if e.goes_left(x[n.feature as usize], n.threshold) { n.left } else { n.right };
                    return walk(e, tree, next as usize, x, set);
                }
                let (l, r) = (&tree.nodes[n.left as usize], &tree.nodes[n.right as usize]);
                (l.cover * walk(e, tree, n.left as usize, x, set) + r.cover * walk(e, tree, n.right as usize, x, set))
                    / n.cover
            }
            ensemble.base_value + ensemble.trees.iter().map(|t| walk(ensemble, t, 0, x, set)).sum::<f64>()
        };
        let factorial = |n: usize| (1..=n).product::<usize>() as f64;
        (0..m)
            .map(|j| {
                (0..1u32 << m)
                    .filter(|set| set & (1 << j) == 0)
                    .map(|set| {
                        let size = set.count_ones() as usize;
                        let weight = factorial(size) * factorial(m - size - 1) / factorial(m);
                        weight * (value(set | (1 << j)) - value(set))
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn a_stump_by_hand() {
        // One split on column 0 at 10: left 4.0 (cover 3), right -2.0 (cover 1). Expectation
        // 2.5; a row going left gets phi = 4.0 - 2.5 = 1.5, one going right -2.0 - 2.5 = -4.5.
        let mut value = small();
        value["trees"].as_array_mut().unwrap().truncate(1);
        let ensemble = parse(&value).unwrap();
        assert_eq!(ensemble.expected_value, 102.5);
        assert_eq!(ensemble.shap(&[3.0, 0.0, 0.0]), vec![1.5, 0.0, 0.0]);
        assert_eq!(ensemble.shap(&[30.0, 0.0, 0.0]), vec![-4.5, 0.0, 0.0]);
    }

    #[test]
    fn values_add_up_and_match_the_definition() {
        let ensemble = parse(&small()).unwrap();
        for x in [[3.0, 0.0, 1.0], [3.0, 1.0, 0.0], [12.0, 0.0, 0.0], [4.0, 0.0, 0.0], [10.0, 1.0, 1.0]] {
            let phi = ensemble.shap(&x);
            let total = ensemble.expected_value + phi.iter().sum::<f64>();
            assert!((total - ensemble.predict(&x)).abs() < 1e-9, "{x:?}: {total} vs {}", ensemble.predict(&x));
            for (fast, slow) in phi.iter().zip(brute_force(&ensemble, &x)) {
                assert!((fast - slow).abs() < 1e-9, "{x:?}: {phi:?} vs brute force");
            }
        }
    }

    #[test]
    fn a_feature_split_twice_on_one_path_is_unwound() {
        // Column 0 at the root and again below: the second split must unwind the first.
        let value = json!({
            "format": "forecourt-trees", "format_version": 1, "input": "f", "output": "y",
            "base_value": 0.0, "comparison": "<=", "missing": "refused",
            "columns": [{"name": "a", "field": "a"}, {"name": "b", "field": "b"}],
            "trees": [{
                "left":  [1, 3, 5, -1, -1, -1, -1], "right": [2, 4, 6, -1, -1, -1, -1],
                "feature": [0, 0, 1, -1, -1, -1, -1],
                "threshold": [5.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                "value": [0.0, 0.0, 0.0, 10.0, 20.0, 30.0, 40.0],
                "cover": [10.0, 6.0, 4.0, 1.0, 5.0, 3.0, 1.0]
            }]
        });
        let ensemble = parse(&value).unwrap();
        for x in [[1.0, 0.0], [3.0, 0.0], [7.0, 0.0], [7.0, 2.0]] {
            let phi = ensemble.shap(&x);
            assert!((ensemble.expected_value + phi.iter().sum::<f64>() - ensemble.predict(&x)).abs() < 1e-9);
            for (fast, slow) in phi.iter().zip(brute_force(&ensemble, &x)) {
                assert!((fast - slow).abs() < 1e-9, "{x:?}: {phi:?}");
            }
        }
    }

    #[test]
    fn scratch_is_reused_across_rows() {
        let ensemble = parse(&small()).unwrap();
        let mut scratch = Scratch::for_ensemble(&ensemble);
        let mut phi = vec![9.0; 3];
        ensemble.shap_into(&[3.0, 0.0, 1.0], &mut phi, &mut scratch);
        let first = phi.clone();
        ensemble.shap_into(&[12.0, 1.0, 0.0], &mut phi, &mut scratch);
        ensemble.shap_into(&[3.0, 0.0, 1.0], &mut phi, &mut scratch);
        assert_eq!(phi, first);
    }
}
