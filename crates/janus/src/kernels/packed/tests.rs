//! Packing round trips, and every kernel level against the plain product.

use super::*;
use crate::kernels::gemm::{matmul_bf16, tests::values};

#[test]
fn pack_unpack_round_trips() {
    for &(n, k) in &[(1, 1), (5, 3), (16, 8), (17, 33), (40, 2)] {
        let w = values(n * k, 9);
        let p = PackedBf16::pack(&w, n, k);
        assert_eq!(p.unpack(), w, "{n}x{k}");
        for j in 0..n {
            let mut row = vec![f32::NAN; k];
            p.row_f32(j, &mut row);
            let want: Vec<f32> = w[j * k..][..k].iter().map(|v| v.to_f32()).collect();
            assert_eq!(row, want, "{n}x{k} row {j}");
        }
    }
}

#[test]
fn every_level_matches_the_plain_product() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 17, 33),
        (2, 40, 64),
        (3, 31, 7),
        (8, 16, 258),
        (9, 50, 513),
        (67, 70, 300),
        (16, 33, 5),
        (29, 16, 1),
        // Decoding products large enough to split into claimed slices.
        (1, 700, 390),
        (2, 1000, 150),
        // Nothing to sum: zeros, whatever the output held.
        (3, 5, 0),
        (20, 5, 0),
    ] {
        let x = values(m * k, 21);
        let w = values(n * k, 22);
        let mut want = vec![0.0; m * n];
        matmul_bf16(&x, &w, m, n, k, &mut want, Isa::Plain);
        let packed = PackedBf16::pack(&w, n, k);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            packed.matmul(&x, m, &mut got, isa);
            assert_eq!(packed.matmul_to_vec(&x, m, isa), got, "{isa:?} {m}x{n}x{k}");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * k as f32 + 1e-5,
                    "{isa:?} {m}x{n}x{k} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
