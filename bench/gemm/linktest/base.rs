fn main() { let v: Vec<f32> = std::env::args().map(|s| s.len() as f32).collect(); println!("{}", v.iter().sum::<f32>()); }
