fn main() {
    let n = std::env::args().count() + 1; // 2
    let a = vec![1.0f32; n * n]; let b = vec![2.0f32; n * n]; let mut c = vec![0.0f32; n * n];
    unsafe { gemm::gemm(n, n, n, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, n as isize,
        b.as_ptr(), 1, n as isize, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::Rayon(2)) };
    println!("{:?}", c);
}
