//! Test helpers for the optimizer tests: seeded random tensors and an obviously-correct float64
//! toolbox (matrix product, Newton–Schulz as plain loops, singular values via a Jacobi
//! eigen-solver on the Gram matrix).
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Seeded N(0, 1) values.
pub fn randn_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// A seeded N(0, 1) f32 tensor on the CPU.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(randn_vec(n, seed), shape, &Device::Cpu).unwrap()
}

/// A row-major float64 matrix.
#[derive(Clone, Debug)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn from_tensor(t: &Tensor) -> Mat {
        let (rows, cols) = t.dims2().unwrap();
        let data = t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap();
        Mat { rows, cols, data: data.to_vec1::<f64>().unwrap() }
    }
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }
    pub fn transpose(&self) -> Mat {
        let mut data = vec![0.0; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                data[j * self.rows + i] = self.at(i, j);
            }
        }
        Mat { rows: self.cols, cols: self.rows, data }
    }
    pub fn matmul(&self, o: &Mat) -> Mat {
        assert_eq!(self.cols, o.rows);
        let mut data = vec![0.0; self.rows * o.cols];
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(i, k);
                for j in 0..o.cols {
                    data[i * o.cols + j] += a * o.at(k, j);
                }
            }
        }
        Mat { rows: self.rows, cols: o.cols, data }
    }
    /// `alpha * self + beta * o`.
    pub fn axpby(&self, alpha: f64, o: &Mat, beta: f64) -> Mat {
        let data = self.data.iter().zip(&o.data).map(|(a, b)| alpha * a + beta * b).collect();
        Mat { rows: self.rows, cols: self.cols, data }
    }
    pub fn frobenius(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum::<f64>().sqrt()
    }
}

/// Newton–Schulz written out with plain loops in float64: the reference for the candle version.
pub fn newton_schulz_f64(g: &Mat, steps: usize) -> Mat {
    let (a, b, c) = (3.4445, -4.7750, 2.0315);
    let tall = g.rows > g.cols;
    let mut x = if tall { g.transpose() } else { g.clone() };
    let norm = x.frobenius() + 1e-7;
    x.data.iter_mut().for_each(|v| *v /= norm);
    for _ in 0..steps {
        let gram = x.matmul(&x.transpose());
        let poly = gram.axpby(b, &gram.matmul(&gram), c);
        x = x.axpby(a, &poly.matmul(&x), 1.0);
    }
    if tall {
        x.transpose()
    } else {
        x
    }
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (Numerical Recipes §11.1),
/// ascending.
pub fn symmetric_eigenvalues(m: &Mat) -> Vec<f64> {
    let n = m.rows;
    assert_eq!(n, m.cols);
    let mut a = m.data.clone();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let total: f64 = a.iter().map(|v| v * v).sum();
        if off <= 1e-28 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut eig: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    eig.sort_by(|x, y| x.total_cmp(y));
    eig
}

/// Singular values (ascending) of `m`: square roots of the eigenvalues of the smaller Gram matrix.
pub fn singular_values(m: &Mat) -> Vec<f64> {
    let gram = if m.rows >= m.cols { m.transpose().matmul(m) } else { m.matmul(&m.transpose()) };
    symmetric_eigenvalues(&gram).into_iter().map(|e| e.max(0.0).sqrt()).collect()
}

#[test]
fn jacobi_solver_is_right() {
    // [[2,1],[1,2]] has eigenvalues 1 and 3.
    let m = Mat { rows: 2, cols: 2, data: vec![2.0, 1.0, 1.0, 2.0] };
    let e = symmetric_eigenvalues(&m);
    assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12, "{e:?}");
    // A random Gram matrix: eigenvalues sum to the trace, squares to the squared Frobenius norm.
    let g = Mat::from_tensor(&randn(&[7, 5], 3));
    let gram = g.transpose().matmul(&g);
    let e = symmetric_eigenvalues(&gram);
    let trace: f64 = (0..5).map(|i| gram.at(i, i)).sum();
    assert!((e.iter().sum::<f64>() - trace).abs() < 1e-9 * trace);
    let f2 = gram.frobenius().powi(2);
    assert!((e.iter().map(|v| v * v).sum::<f64>() - f2).abs() < 1e-9 * f2);
    assert!(e.iter().all(|&v| v > 0.0));
}
