//! Run under `mpirun -n N` by `tests/tests/distributed.rs`: joins the job through the trainer's
//! data-parallel group (`runtime::dist`, Open MPI loaded at run time) and prints what each
//! collective gave this rank, one `key value…` line each, for the test to check.
//!
//! `dist_probe collectives`: all-reduce mean, broadcast and min/max.
//! `dist_probe panic-on R`: rank R panics after the first all-reduce while the others wait in
//! the next one (the panic hook must end the job).
//! `dist_probe step`: the host executor's collective step (packs several buffers into one).
//! `dist_probe bench`: median time of the gradient all-reduce (mean) for gradient sizes from 1M
//! floats to the real students' 14.5M and 19.5M (BENCHMARKS.md).
//! `dist_probe overlap`: how much of that all-reduce a bucketed, non-blocking one hides behind
//! a backward pass of compute steps (BENCHMARKS.md).

use plan::exec::{BufferRef, CollectiveOp, ExecutablePlan, Place, Slot, Step, StepDefaults};
use plan::ElemType;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let w = match runtime::dist::init(true) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let (rank, size) = (w.rank(), w.size());
    println!("rank {rank} size {size}");
    match args.get(1).map(String::as_str) {
        Some("collectives") => {
            // rank r holds r+1, 10(r+1): the mean is (size+1)/2 times 1 and 10.
            let mut v = vec![(rank + 1) as f32, 10.0 * (rank + 1) as f32];
            w.all_reduce_mean(&mut v).unwrap();
            println!("mean {} {}", v[0], v[1]);
            let mut b = if rank == 0 {
                b"root".to_vec()
            } else {
                vec![0; 4]
            };
            w.broadcast(0, &mut b).unwrap();
            println!("broadcast {}", String::from_utf8_lossy(&b));
            let (lo, hi) = w.min_max(100 + rank as u64).unwrap();
            println!("minmax {lo} {hi}");
            let same = runtime::dist::check_same(7, "a constant");
            let differ = runtime::dist::check_same(rank as u64, "the rank");
            println!("check_same {} {}", same.is_ok(), differ.is_err());
        }
        Some("panic-on") => {
            let victim: usize = args[2].parse().unwrap();
            let mut v = vec![1.0f32; 4];
            w.all_reduce_mean(&mut v).unwrap();
            if rank == victim {
                panic!("rank {rank} fails on purpose");
            }
            w.all_reduce_mean(&mut v).unwrap();
            println!("survived");
        }
        Some("step") => step(rank),
        Some("bench") => bench(w),
        Some("overlap") => overlap(w),
        _ => {
            eprintln!("usage: dist_probe collectives | panic-on RANK | step | bench | overlap");
            std::process::exit(2);
        }
    }
    w.finish();
}

/// A plan of one collective step over three inputs (3, 2 and 1 floats) into three outputs, run
/// by the host executor: every rank gets the mean of the ranks' inputs in its outputs; an
/// infinite value on one rank (an overflowing gradient) reaches every rank.
fn step(rank: usize) {
    let f = |place, n: usize| BufferRef {
        place,
        elem: ElemType::F32,
        shape: vec![n],
    };
    let slot = |name: &str, n: usize| Slot {
        name: name.into(),
        elem: ElemType::F32,
        shape: vec![n],
    };
    let plan = ExecutablePlan {
        name: "probe".into(),
        arena_bytes: 0,
        inputs: vec![slot("a", 3), slot("b", 2), slot("c", 1)],
        outputs: vec![slot("ma", 3), slot("mb", 2), slot("mc", 1)],
        steps: vec![Step::Collective {
            op: CollectiveOp::AllReduceMean,
            inputs: vec![
                f(Place::Input(0), 3),
                f(Place::Input(1), 2),
                f(Place::Input(2), 1),
            ],
            outputs: vec![
                f(Place::Output(0), 3),
                f(Place::Output(1), 2),
                f(Place::Output(2), 1),
            ],
        }],
        defaults: StepDefaults {
            loss_scale: 1.0,
            lr0: 0.0,
            end_lr: 0.0,
        },
        donations: vec![],
    };
    let r = rank as f32;
    let mut a = vec![r, 2.0 * r, 3.0 * r];
    let mut b = vec![-r, 100.0 + r];
    let mut c = vec![if rank == 1 { f32::INFINITY } else { 1.0 }];
    let mut ma = vec![0f32; 3];
    let mut mb = vec![0f32; 2];
    let mut mc = vec![0f32; 1];
    let inputs = [
        a.as_mut_ptr() as *mut u8,
        b.as_mut_ptr() as *mut u8,
        c.as_mut_ptr() as *mut u8,
    ];
    let outputs = [
        ma.as_mut_ptr() as *mut u8,
        mb.as_mut_ptr() as *mut u8,
        mc.as_mut_ptr() as *mut u8,
    ];
    let bound = runtime::exec::Bound {
        inputs: &inputs,
        outputs: &outputs,
        arena: std::ptr::null_mut(),
    };
    struct NoKernels;
    impl runtime::exec::LoopKernels for NoKernels {
        unsafe fn run(
            &self,
            symbol: &str,
            _: &[runtime::exec::KernelArg],
            _: &[runtime::exec::KernelArg],
        ) -> Result<(), String> {
            Err(format!("no kernel {symbol}"))
        }
    }
    // SAFETY: every bound pointer holds its slot's floats.
    unsafe { runtime::exec::execute(&plan, &bound, &NoKernels, None) }.unwrap();
    println!("step {:?} {:?} {:?}", ma, mb, mc);
}

/// Medians of 10 all-reduces after 2 warm-ups, the ranks lined up before each.
fn bench(w: &dyn runtime::dist::Group) {
    // 14.49M: the paper's 4L-312 student; 19.46M: the MindSpore 384-dim student with fit_dense.
    for n in [1_000_000usize, 4_000_000, 14_490_000, 19_460_000] {
        let mut data = vec![1.0f32; n];
        let mut times = Vec::new();
        for rep in 0..12 {
            w.min_max(0).unwrap();
            let t = std::time::Instant::now();
            w.all_reduce_mean(&mut data).unwrap();
            if rep >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        if w.rank() == 0 {
            println!(
                "bench {n} floats ({:.1} MB): median {:.2} ms (min {:.2}, max {:.2})",
                n as f64 * 4.0 / 1e6,
                (times[4] + times[5]) / 2.0,
                times[0],
                times[9]
            );
        }
    }
}

/// One compute step of a simulated backward: about `ms` milliseconds of single-thread work.
fn compute(ms: f64, scratch: &mut [f32]) {
    let t = std::time::Instant::now();
    while t.elapsed().as_secs_f64() * 1e3 < ms {
        for x in scratch.iter_mut() {
            *x = *x * 0.999 + 0.001;
        }
    }
}

/// A backward of 60 compute steps of 5 ms with the 14.49M gradient floats (the paper student's)
/// becoming ready in buckets as it goes; the time past the 300 ms of compute, median of 5 after a
/// warm-up: one blocking all-reduce after the backward, against bucketed non-blocking ones
/// started as each bucket is ready and driven (`progress`) between the steps, as the trainer's
/// executor does.
fn overlap(w: &dyn runtime::dist::Group) {
    const STEPS: usize = 60;
    const STEP_MS: f64 = 5.0;
    let n = 14_490_000usize;
    let mut scratch = vec![1.0f32; 64 * 1024];
    for buckets in [1usize, 3, 9] {
        let per = n.div_ceil(buckets);
        let mut times = Vec::new();
        for rep in 0..6 {
            w.min_max(0).unwrap();
            let t = std::time::Instant::now();
            let mut in_flight: Vec<Box<dyn runtime::dist::PendingAllReduce + '_>> = Vec::new();
            for s in 0..STEPS {
                compute(STEP_MS, &mut scratch);
                for f in in_flight.iter_mut() {
                    f.progress().unwrap();
                }
                // Bucket b is ready after step (b + 1) · STEPS / (buckets + 1): the last one
                // before the backward ends, as in the trainer's schedule.
                for b in (0..buckets).filter(|_| buckets > 1) {
                    if s + 1 == (b + 1) * STEPS / (buckets + 1) {
                        let len = per.min(n - b * per);
                        in_flight.push(w.start_all_reduce_mean(vec![1.0f32; len]).unwrap());
                    }
                }
            }
            if buckets == 1 {
                // One bucket: a blocking all-reduce after the backward.
                let mut all = vec![1.0f32; n];
                w.all_reduce_mean(&mut all).unwrap();
            }
            for f in in_flight {
                f.wait().unwrap();
            }
            if rep >= 1 {
                times.push(t.elapsed().as_secs_f64() * 1e3 - STEPS as f64 * STEP_MS);
            }
        }
        times.sort_by(f64::total_cmp);
        if w.rank() == 0 {
            println!(
                "overlap {buckets} bucket(s) of {:.1} MB: {:.1} ms past the {:.0} ms backward (median of 5; min {:.1}, max {:.1})",
                per as f64 * 4.0 / 1e6,
                times[2],
                STEPS as f64 * STEP_MS,
                times[0],
                times[4]
            );
        }
    }
}
