// Minimal static-link probe: calls cblas_sgemm from a statically linked libopenblas.a / libblis.a.
use std::ffi::c_int;
unsafe extern "C" {
    fn cblas_sgemm(o: c_int, ta: c_int, tb: c_int, m: c_int, n: c_int, k: c_int, al: f32,
        a: *const f32, lda: c_int, b: *const f32, ldb: c_int, be: f32, c: *mut f32, ldc: c_int);
}
fn main() {
    let a = [1.0f32, 2.0, 3.0, 4.0]; let b = [5.0f32, 6.0, 7.0, 8.0]; let mut c = [0.0f32; 4];
    unsafe { cblas_sgemm(101, 111, 111, 2, 2, 2, 1.0, a.as_ptr(), 2, b.as_ptr(), 2, 0.0, c.as_mut_ptr(), 2) };
    assert_eq!(c, [19.0, 22.0, 43.0, 50.0]); println!("ok {:?}", c);
}
