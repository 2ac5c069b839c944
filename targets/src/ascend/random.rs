//! `random_uniform` in Ascend kernels: Philox-4x32-10 keyed by (seed, op) with the counter
//! (element index, step), the same numbers as every target (`ir::rng`), drawn on the scalar
//! unit — the vector unit has no 32 × 32 → 64-bit multiply — one element at a time into a UB
//! tile (`SetValue`), then handed to the vector unit by an S→V event. Slow next to the vector
//! ops, but the dropout masks are one small kernel per dropout.

use super::emitc::{Emitter, LT};

/// The scalar-unit Philox the kernels call (module-level C++, as `ir::rng::uniform`).
pub(super) const UNIFORM_FN: &str = "static inline float tbc_uniform(int64_t seed, int64_t op, int64_t counter, int64_t index) { uint32_t c0 = (uint32_t)index, c1 = (uint32_t)((uint64_t)index >> 32), c2 = (uint32_t)counter, c3 = (uint32_t)((uint64_t)counter >> 32); uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)op; for (int r = 0; r < 10; r++) { if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; } uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2; uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1; c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0; } return (float)(c0 >> 8) * (1.0f / 16777216.0f); }";

impl Emitter {
    /// Tile `t` = the uniforms of elements `first + i`, `i < n` (i64 SSA values), of op
    /// `op_id` under `seed` and `counter` (i64 SSA values).
    pub(super) fn uniform_tile(
        &mut self,
        t: &str,
        (seed, counter): (&str, &str),
        op_id: u32,
        first: &str,
        n: &str,
    ) {
        // The vector unit is done with the tile before the scalar unit writes it.
        self.event("V_S");
        let op = self.constant(&op_id.to_string(), "i64");
        let c0 = self.constant("0", "i64");
        let one = self.constant("1", "i64");
        let i = self.fresh();
        self.line(&format!("emitc.for {i} = {c0} to {n} step {one} : i64 {{"));
        self.indent += 1;
        let idx = self.binop("add", first, &i, "i64");
        let u = self.fresh();
        self.line(&format!(
            "{u} = emitc.call_opaque \"tbc_uniform\"({seed}, {op}, {counter}, {idx}) : (i64, i64, i64, i64) -> f32"
        ));
        self.verbatim(
            "{}.SetValue({}, {});",
            &[(t, LT.into()), (&i, "i64".into()), (&u, "f32".into())],
        );
        self.indent -= 1;
        self.line("}");
        self.event("S_V");
    }
}
