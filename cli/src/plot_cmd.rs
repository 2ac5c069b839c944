//! `tbc plot`: PNG curves from the trainer's metrics JSONL (see `runtime::metrics::MetricsLine`).
//!
//! `loss.png` holds the training loss of every phase against the cumulative step; `eval.png`
//! one panel per evaluation metric, when the files have eval lines. Phases are laid end to end:
//! a phase whose steps restart (its first step is not past the previous phase's last) is shifted
//! by the previous phase's end, so gd → td1 → td2 read left to right, from one file or several.
//!
//! Text needs a font. The plot uses `plotters` with the `ab_glyph` rasterizer and a TrueType file
//! read at run time: `--font`, else `$TBC_PLOT_FONT`, else DejaVu Sans from Debian's
//! `fonts-dejavu-core` package. No system font library (fontconfig, freetype) is linked.
//! PNGs are encoded with the `png` crate and written atomically (temporary file, then rename).

use anyhow::Result;
use clap::Args;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use runtime::metrics::{read_metrics_jsonl, MetricsFileError, MetricsLine};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size of `loss.png` in pixels.
pub const LOSS_SIZE: (u32, u32) = (1024, 640);
/// Width of `eval.png` and the height of each of its panels (one per metric).
pub const EVAL_PANEL_SIZE: (u32, u32) = (1024, 360);

/// Where the default font lives on Debian 12 (package `fonts-dejavu-core`).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The environment variable naming another font file.
pub const FONT_ENV: &str = "TBC_PLOT_FONT";

/// Arguments of `tbc plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Metrics JSONL files written by the trainer, in run order (e.g. td1 then td2).
    #[arg(long, required = true, num_args = 1..)]
    pub metrics: Vec<PathBuf>,
    /// Directory for loss.png and eval.png (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// TrueType/OpenType font for the text [default: $TBC_PLOT_FONT, else DejaVu Sans from
    /// Debian's fonts-dejavu-core].
    #[arg(long)]
    pub font: Option<PathBuf>,
}

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(transparent)]
    Metrics(#[from] MetricsFileError),
    #[error("no training lines (\"kind\":\"train\") in {0}: nothing to plot")]
    NoTrainLines(String),
    #[error("no finite training loss in {0}: nothing to plot")]
    NoFiniteLoss(String),
    #[error("cannot read font {path}: {source} (install Debian's fonts-dejavu-core, set ${FONT_ENV}, or pass --font FILE.ttf)")]
    FontRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a TrueType/OpenType font")]
    FontInvalid(PathBuf),
    #[error("cannot create output directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// One line on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Palette index; a phase keeps its color across both figures.
    pub color: usize,
    /// (cumulative step, value), in file order.
    pub points: Vec<(f64, f64)>,
}

/// Everything the two figures show.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// One series per phase (per file and phase when a phase occurs in several files).
    pub loss: Vec<Series>,
    /// Metric name → one series per phase and split.
    pub eval: BTreeMap<String, Vec<Series>>,
    /// Lines of a kind other than train/eval, skipped.
    pub ignored_lines: usize,
}

/// A phase's training lines in one file.
struct Segment {
    file: usize,
    phase: String,
    first_step: u64,
    last_step: u64,
    offset: u64,
}

/// Gathers the curves from parsed files (`(path, records with line numbers)`), in order.
pub fn collect_curves(files: &[(PathBuf, Vec<(usize, MetricsLine)>)]) -> Result<Curves, PlotError> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut ignored_lines = 0;
    for (file, (_, lines)) in files.iter().enumerate() {
        for (_, line) in lines {
            match line {
                MetricsLine::Train(t) => {
                    match segments
                        .iter_mut()
                        .find(|s| s.file == file && s.phase == t.phase)
                    {
                        Some(s) => s.last_step = s.last_step.max(t.step),
                        None => segments.push(Segment {
                            file,
                            phase: t.phase.clone(),
                            first_step: t.step,
                            last_step: t.step,
                            offset: 0,
                        }),
                    }
                }
                MetricsLine::Eval(_) => {}
                MetricsLine::Other => ignored_lines += 1,
            }
        }
    }
    let names = || {
        files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if segments.is_empty() {
        return Err(PlotError::NoTrainLines(names()));
    }
    // Lay the phases end to end where their step counters restart.
    let mut end = 0;
    for s in &mut segments {
        s.offset = if s.first_step <= end { end } else { 0 };
        end = end.max(s.last_step + s.offset);
    }
    let ambiguous = |phase: &str| segments.iter().filter(|s| s.phase == phase).count() > 1;
    let label = |file: usize, phase: &str| {
        if ambiguous(phase) {
            format!("{phase} ({})", files[file].0.display())
        } else {
            phase.to_string()
        }
    };
    let offset = |file: usize, phase: &str| {
        segments
            .iter()
            .find(|s| s.file == file && s.phase == phase)
            .map_or(0, |s| s.offset)
    };

    let mut loss: Vec<Series> = segments
        .iter()
        .enumerate()
        .map(|(color, s)| Series {
            label: label(s.file, &s.phase),
            color,
            points: Vec::new(),
        })
        .collect();
    let mut colors: Vec<String> = loss.iter().map(|s| s.label.clone()).collect();
    let mut eval: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    for (file, (_, lines)) in files.iter().enumerate() {
        for (_, line) in lines {
            match line {
                MetricsLine::Train(t) if t.loss.is_finite() => {
                    let i = segments
                        .iter()
                        .position(|s| s.file == file && s.phase == t.phase)
                        .expect("every train line's segment was collected above");
                    loss[i]
                        .points
                        .push(((t.step + segments[i].offset) as f64, t.loss));
                }
                MetricsLine::Eval(e) => {
                    let x = (e.step + offset(file, &e.phase)) as f64;
                    let mut series_label = label(file, &e.phase);
                    if e.split != "dev" {
                        series_label = format!("{series_label} {}", e.split);
                    }
                    let color = match colors.iter().position(|l| *l == series_label) {
                        Some(c) => c,
                        None => {
                            colors.push(series_label.clone());
                            colors.len() - 1
                        }
                    };
                    for (name, &value) in e.metrics.iter().filter(|(_, v)| v.is_finite()) {
                        let panel = eval.entry(name.clone()).or_default();
                        match panel.iter_mut().find(|s| s.label == series_label) {
                            Some(s) => s.points.push((x, value)),
                            None => panel.push(Series {
                                label: series_label.clone(),
                                color,
                                points: vec![(x, value)],
                            }),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if loss.iter().all(|s| s.points.is_empty()) {
        return Err(PlotError::NoFiniteLoss(names()));
    }
    Ok(Curves {
        loss,
        eval,
        ignored_lines,
    })
}

/// Whether the loss axis should be logarithmic: every loss positive and the range spanning
/// more than two decades.
pub fn wants_log_scale(series: &[Series]) -> bool {
    let (lo, hi) = y_bounds(series);
    lo > 0.0 && hi / lo > 100.0
}

/// Size of `eval.png` for `n_metrics` panels.
pub fn eval_image_size(n_metrics: usize) -> (u32, u32) {
    (
        EVAL_PANEL_SIZE.0,
        EVAL_PANEL_SIZE.1 * n_metrics.max(1) as u32,
    )
}

/// Registers the font for all text ("sans-serif"). plotters keeps fonts in a process-wide table
/// of `'static` bytes, so each file is read and leaked once per process.
fn register_font(path: &Path) -> Result<(), PlotError> {
    static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if registered.last().is_some_and(|p| p == path) {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|source| PlotError::FontRead {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| PlotError::FontInvalid(path.to_path_buf()))?;
    registered.push(path.to_path_buf());
    Ok(())
}

/// The font file: `--font`, else `$TBC_PLOT_FONT`, else [`DEFAULT_FONT`].
pub fn font_path(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(FONT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT))
}

/// Reads the files and writes the figures; returns the paths written.
pub fn plot(args: &PlotArgs) -> Result<Vec<PathBuf>, PlotError> {
    let mut files = Vec::new();
    for path in &args.metrics {
        files.push((path.clone(), read_metrics_jsonl(path)?));
    }
    let curves = collect_curves(&files)?;
    if curves.ignored_lines > 0 {
        eprintln!(
            "note: skipped {} lines of an unknown kind",
            curves.ignored_lines
        );
    }
    register_font(&font_path(args.font.as_deref()))?;
    std::fs::create_dir_all(&args.output).map_err(|source| PlotError::CreateDir {
        path: args.output.clone(),
        source,
    })?;

    let mut written = Vec::new();
    let path = args.output.join("loss.png");
    let log_y = wants_log_scale(&curves.loss);
    // One step axis for both figures, so eval points line up with the loss below them.
    let x = x_range(curves.loss.iter().chain(curves.eval.values().flatten()));
    render(&path, LOSS_SIZE, |root| {
        let ys = y_bounds(&curves.loss);
        let frame = Frame {
            caption: if log_y {
                "training loss (log scale)"
            } else {
                "training loss"
            },
            y_label: "loss",
            x: x.clone(),
            legend: SeriesLabelPosition::UpperRight,
        };
        if log_y {
            let y = (ys.0 / 1.2..ys.1 * 1.2).log_scale();
            chart(root, &frame, &curves.loss, y)
        } else {
            chart(root, &frame, &curves.loss, padded(ys))
        }
    })?;
    written.push(path);

    if !curves.eval.is_empty() {
        let path = args.output.join("eval.png");
        render(&path, eval_image_size(curves.eval.len()), |root| {
            let panels = root.split_evenly((curves.eval.len(), 1));
            for (panel, (name, series)) in panels.iter().zip(&curves.eval) {
                let caption = format!("eval: {name}");
                let frame = Frame {
                    caption: &caption,
                    y_label: name,
                    x: x.clone(),
                    // Metrics mostly rise: keep the legend off the late, high points.
                    legend: SeriesLabelPosition::LowerRight,
                };
                chart(panel, &frame, series, padded(y_bounds(series)))?;
            }
            Ok(())
        })?;
        written.push(path);
    }
    Ok(written)
}

/// `tbc plot`.
pub fn run(args: &PlotArgs) -> Result<()> {
    for path in plot(args)? {
        println!("{}", path.display());
    }
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), String>;

/// Draws into an RGB buffer of `size` and writes it as a PNG via a temporary file.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<(), PlotError> {
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()));
        drawn.map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })?;
    }
    write_png(path, size, &rgb)
}

fn write_png(path: &Path, (w, h): (u32, u32), rgb: &[u8]) -> Result<(), PlotError> {
    let write_err = |message: String| PlotError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> Result<(), String> {
        let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Smallest and largest value over all series (finite values only are collected).
fn y_bounds(series: &[Series]) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    })
}

fn x_range<'a>(series: impl IntoIterator<Item = &'a Series>) -> Range<f64> {
    let xs = series
        .into_iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let lo = lo.min(0.0);
    if hi > lo {
        lo..hi
    } else {
        lo..lo + 1.0
    }
}

/// A linear range with 5 % margins (a fixed margin when all values are equal).
fn padded((lo, hi): (f64, f64)) -> Range<f64> {
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo - pad..hi + pad
}

/// What frames one chart's data.
struct Frame<'a> {
    caption: &'a str,
    y_label: &'a str,
    x: Range<f64>,
    legend: SeriesLabelPosition,
}

/// One chart with a line per series, markers where a series is sparse, axis labels and a legend.
fn chart<Y>(area: &Area, frame: &Frame, series: &[Series], y: Y) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(frame.caption, ("sans-serif", 22))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d::<Range<f64>, Y>(frame.x.clone(), y)
        .map_err(|err| e(&err))?;
    chart
        .configure_mesh()
        .x_desc("step (cumulative over phases)")
        .y_desc(frame.y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|err| e(&err))?;
    for s in series {
        let color = Palette99::pick(s.color).to_rgba();
        let line = ShapeStyle::from(color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), line))
            .map_err(|err| e(&err))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line));
        if s.points.len() < 50 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|err| e(&err))?;
        }
    }
    chart
        .configure_series_labels()
        .position(frame.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|err| e(&err))
}
