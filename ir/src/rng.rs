//! Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11), so every target can
//! draw the same dropout masks from (seed, op, step, element) without carrying a state.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox-4x32 with 10 rounds: the block for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The uniform number in [0, 1) (24 random bits, exact in f32) for element `index` of the
/// `random_uniform` op `op_id`, with the graph's `seed` and `counter` (the step).
pub fn uniform(seed: i64, op_id: u32, counter: i64, index: u64) -> f32 {
    let key = [seed as u32, op_id];
    let ctr = [
        index as u32,
        (index >> 32) as u32,
        counter as u32,
        ((counter as u64) >> 32) as u32,
    ];
    let w = philox4x32_10(ctr, key)[0];
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32 10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_is_in_range_and_depends_on_every_key_part() {
        let base = uniform(1, 2, 3, 4);
        assert!((0.0..1.0).contains(&base));
        assert_ne!(base, uniform(9, 2, 3, 4));
        assert_ne!(base, uniform(1, 9, 3, 4));
        assert_ne!(base, uniform(1, 2, 9, 4));
        assert_ne!(base, uniform(1, 2, 3, 9));
        let mean: f64 = (0..10_000).map(|i| uniform(7, 1, 0, i) as f64).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
