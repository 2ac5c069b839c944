//! `tbc plot`: PNGs from a metrics JSONL of a tiny synthetic run, and its errors.

use cli::plot_cmd::{
    collect_curves, eval_image_size, wants_log_scale, Series, EVAL_PANEL_SIZE, LOSS_SIZE,
};
use runtime::metrics::parse_metrics_jsonl;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tbc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs tbc; asserts failure without a panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = tbc(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    stderr
}

fn train(phase: &str, epoch: u64, step: u64, loss: f64) -> String {
    format!(
        r#"{{"kind":"train","phase":"{phase}","epoch":{epoch},"step":{step},"loss":{loss},"losses":{{"loss.cls":{loss}}},"overflow":false,"scale":65536.0,"lr":1.9e-5,"samples_per_s":41.2,"time_s":{t}}}"#,
        t = step as f64 * 0.1
    )
}

fn eval(phase: &str, step: u64, acc: f64, f1: f64) -> String {
    format!(
        r#"{{"kind":"eval","phase":"{phase}","step":{step},"split":"dev","metrics":{{"acc":{acc},"f1":{f1}}},"num_examples":864}}"#
    )
}

/// A tiny td1 + td2 run: td1's loss falls over three decades, td2 evaluates every 10 steps.
fn tiny_run(loss_scale: f64) -> String {
    let mut lines = Vec::new();
    for step in 1..=30u64 {
        lines.push(train(
            "td1",
            1,
            step,
            loss_scale * 5.0 * 0.8f64.powi(step as i32 - 1),
        ));
    }
    for step in 1..=40u64 {
        lines.push(train("td2", 1 + step / 20, step, 0.7 - 0.01 * step as f64));
        if step % 10 == 0 {
            lines.push(eval(
                "td2",
                step,
                0.5 + 0.01 * step as f64,
                0.4 + 0.01 * step as f64,
            ));
        }
    }
    lines.join("\n") + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Decodes the PNG fully; returns (width, height, RGB pixels) after checking the header bytes.
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (w, h, buf)
}

/// Pixels that are neither white nor gray: the plotted series.
fn colored_pixels(rgb: &[u8]) -> usize {
    rgb.chunks(3)
        .filter(|p| p.iter().max().unwrap() - p.iter().min().unwrap() > 60)
        .count()
}

fn plot_ok(metrics: &[&Path], out: &Path) -> Vec<String> {
    let mut args = vec!["plot".to_string(), "--metrics".into()];
    args.extend(metrics.iter().map(|p| p.display().to_string()));
    args.extend(["--output".into(), out.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tbc(&args);
    assert!(
        out.status.success(),
        "tbc plot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn tiny_run_gives_valid_pngs_of_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = write(dir.path(), "metrics.jsonl", &tiny_run(1.0));
    let out = dir.path().join("plots");
    let printed = plot_ok(&[&metrics], &out);
    let (loss_png, eval_png) = (out.join("loss.png"), out.join("eval.png"));
    assert_eq!(
        printed,
        [
            loss_png.display().to_string(),
            eval_png.display().to_string()
        ]
    );

    let (w, h, rgb) = decode_png(&loss_png);
    assert_eq!((w, h), LOSS_SIZE);
    assert!(colored_pixels(&rgb) > 500, "loss curves drawn");
    let (w, h, rgb) = decode_png(&eval_png);
    assert_eq!((w, h), eval_image_size(2));
    assert_eq!(h, 2 * EVAL_PANEL_SIZE.1);
    assert!(colored_pixels(&rgb) > 200, "eval curves drawn");
    // No temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["eval.png", "loss.png"]);
}

#[test]
fn pngs_are_deterministic_and_follow_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.jsonl", &tiny_run(1.0));
    let b = write(dir.path(), "b.jsonl", &tiny_run(1.0));
    let c = write(dir.path(), "c.jsonl", &tiny_run(0.5));
    let read = |name: &str| std::fs::read(dir.path().join(name).join("loss.png")).unwrap();
    plot_ok(&[&a], &dir.path().join("a"));
    plot_ok(&[&b], &dir.path().join("b"));
    plot_ok(&[&c], &dir.path().join("c"));
    assert_eq!(read("a"), read("b"), "same data, same bytes");
    assert_ne!(read("a"), read("c"), "different losses, different picture");
}

#[test]
fn no_eval_lines_means_no_eval_png() {
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<String> = (1..=5).map(|s| train("gd", 1, s, 1.0 / s as f64)).collect();
    let metrics = write(dir.path(), "gd.jsonl", &text.join("\n"));
    let out = dir.path().join("out");
    let printed = plot_ok(&[&metrics], &out);
    assert_eq!(printed.len(), 1);
    assert!(out.join("loss.png").exists());
    assert!(!out.join("eval.png").exists());
}

#[test]
fn malformed_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n{}\n{{\"kind\":\"train\",\"phase\":\"td1\"\n",
        train("td1", 1, 1, 1.0),
        train("td1", 1, 2, 0.9)
    );
    let metrics = write(dir.path(), "bad.jsonl", &text);
    let out = dir.path().join("out").display().to_string();
    let err = fails(&[
        "plot",
        "--metrics",
        &metrics.display().to_string(),
        "--output",
        &out,
    ]);
    assert!(err.contains(&format!("{}:3:", metrics.display())), "{err}");
    // A line of the right JSON shape but a wrong type of field.
    let text = train("td1", 1, 1, 1.0).replace("\"step\":1", "\"step\":\"one\"");
    let metrics = write(dir.path(), "typed.jsonl", &format!("\n{text}\n"));
    let err = fails(&[
        "plot",
        "--metrics",
        &metrics.display().to_string(),
        "--output",
        &out,
    ]);
    assert!(err.contains(&format!("{}:2:", metrics.display())), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing written on error");
}

#[test]
fn missing_file_no_train_lines_and_unwritable_output_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let missing = dir.path().join("missing.jsonl").display().to_string();
    let err = fails(&["plot", "--metrics", &missing, "--output", &out]);
    assert!(
        err.contains("cannot read") && err.contains(&missing),
        "{err}"
    );

    let evals = write(dir.path(), "eval_only.jsonl", &eval("td2", 10, 0.8, 0.7));
    let err = fails(&[
        "plot",
        "--metrics",
        &evals.display().to_string(),
        "--output",
        &out,
    ]);
    assert!(err.contains("no training lines"), "{err}");

    let metrics = write(dir.path(), "m.jsonl", &tiny_run(1.0));
    let blocker = write(dir.path(), "a_file", "");
    let under_file = blocker.join("plots").display().to_string();
    let err = fails(&[
        "plot",
        "--metrics",
        &metrics.display().to_string(),
        "--output",
        &under_file,
    ]);
    assert!(
        err.contains("cannot create output directory") && err.contains(&under_file),
        "{err}"
    );

    let err = fails(&[
        "plot",
        "--metrics",
        &metrics.display().to_string(),
        "--output",
        &out,
        "--font",
        "/nonexistent/font.ttf",
    ]);
    assert!(
        err.contains("/nonexistent/font.ttf") && err.contains("fonts-dejavu-core"),
        "{err}"
    );
    let not_a_font = write(dir.path(), "font.ttf", "not a font");
    let err = fails(&[
        "plot",
        "--metrics",
        &metrics.display().to_string(),
        "--output",
        &out,
        "--font",
        &not_a_font.display().to_string(),
    ]);
    assert!(err.contains("not a TrueType/OpenType font"), "{err}");
}

fn parsed(name: &str, text: &str) -> (PathBuf, Vec<(usize, runtime::metrics::MetricsLine)>) {
    let path = PathBuf::from(name);
    let lines = parse_metrics_jsonl(&path, text).unwrap();
    (path, lines)
}

fn xs(series: &Series) -> Vec<f64> {
    series.points.iter().map(|p| p.0).collect()
}

#[test]
fn phases_are_laid_end_to_end_across_files() {
    let td1: Vec<String> = (1..=3).map(|s| train("td1", 1, s, 1.0)).collect();
    let mut td2: Vec<String> = (1..=2).map(|s| train("td2", 1, s, 0.5)).collect();
    td2.push(eval("td2", 2, 0.8, 0.7));
    let files = [
        parsed("td1.jsonl", &td1.join("\n")),
        parsed("td2.jsonl", &td2.join("\n")),
    ];
    let curves = collect_curves(&files).unwrap();
    let labels: Vec<&str> = curves.loss.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["td1", "td2"]);
    assert_eq!(xs(&curves.loss[0]), [1.0, 2.0, 3.0]);
    assert_eq!(
        xs(&curves.loss[1]),
        [4.0, 5.0],
        "td2 restarts at 1: shifted by td1's 3 steps"
    );
    assert_eq!(curves.eval.keys().collect::<Vec<_>>(), ["acc", "f1"]);
    assert_eq!(curves.eval["acc"][0].points, [(5.0, 0.8)]);
    assert_eq!(
        curves.eval["acc"][0].color, curves.loss[1].color,
        "td2 keeps its color"
    );

    // Steps that already continue (global counter) are not shifted.
    let global: Vec<String> = (4..=5).map(|s| train("td2", 1, s, 0.5)).collect();
    let files = [
        parsed("td1.jsonl", &td1.join("\n")),
        parsed("g.jsonl", &global.join("\n")),
    ];
    let curves = collect_curves(&files).unwrap();
    assert_eq!(xs(&curves.loss[1]), [4.0, 5.0]);

    // The same phase in two files (two runs compared) gets the file in its label.
    let files = [
        parsed("r1.jsonl", &td1.join("\n")),
        parsed("r2.jsonl", &td1.join("\n")),
    ];
    let curves = collect_curves(&files).unwrap();
    let labels: Vec<&str> = curves.loss.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["td1 (r1.jsonl)", "td1 (r2.jsonl)"]);
}

#[test]
fn non_finite_losses_are_skipped_and_unknown_kinds_counted() {
    let text = [
        train("gd", 1, 1, 2.0),
        r#"{"kind":"train","phase":"gd","epoch":1,"step":2,"loss":null,"overflow":true}"#
            .to_string(),
        train("gd", 1, 3, 1.0),
        r#"{"kind":"checkpoint","path":"x.ckpt"}"#.to_string(),
    ];
    let curves = collect_curves(&[parsed("gd.jsonl", &text.join("\n"))]).unwrap();
    assert_eq!(curves.loss[0].points, [(1.0, 2.0), (3.0, 1.0)]);
    assert_eq!(curves.ignored_lines, 1);
    let only_null = r#"{"kind":"train","phase":"gd","epoch":1,"step":2,"loss":null}"#;
    let err = collect_curves(&[parsed("n.jsonl", only_null)]).unwrap_err();
    assert!(err.to_string().contains("no finite training loss"), "{err}");
}

#[test]
fn log_scale_only_beyond_two_decades() {
    let series = |ys: &[f64]| {
        vec![Series {
            label: "td1".into(),
            color: 0,
            points: ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect(),
        }]
    };
    assert!(wants_log_scale(&series(&[5.0, 0.5, 0.01])));
    assert!(!wants_log_scale(&series(&[5.0, 0.06])));
    assert!(
        !wants_log_scale(&series(&[5.0, 0.0, 0.001])),
        "zero loss: stay linear"
    );
}
