//! The result table as files: `results.json` (every row, with the run's
//! date, commit and profile) and `ratios.svg` (georep's time over the
//! peer's per row, drawn with `plotters`), so a run can be kept beside the
//! README and compared with the next.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::{json, Value};

use super::Row;

/// The font the chart's text is measured and named with: DejaVu Sans, from
/// Debian's `fonts-dejavu-core` (the SVG names the family; viewers draw it).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// What the files say about the run besides its rows.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// `git describe --always --dirty` of the working directory, if any.
    pub commit: String,
    pub profile: String,
    pub runs: usize,
    pub cpus: usize,
}

impl RunInfo {
    pub fn now(profile: &str, runs: usize) -> RunInfo {
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        RunInfo {
            date: time::OffsetDateTime::now_utc().date().to_string(),
            commit,
            profile: profile.to_owned(),
            runs,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

fn row_json(r: &Row) -> Value {
    json!({
        "workload": r.workload,
        "georep_s": r.georep_s,
        "peer_s": r.rsync_s,
        "ratio": r.ratio(),
        "georep_bytes": r.georep_bytes,
        "peer_bytes": r.rsync_bytes,
        "monitor_rss_kib": r.monitor_rss_kib,
        "slave_rss_kib": r.slave_rss_kib,
        "cpu_s": r.cpu_s,
        "p50_s": r.p50_s,
        "p99_s": r.p99_s,
        "note": r.note,
    })
}

/// The run as JSON.
pub fn to_json(info: &RunInfo, rows: &[Row]) -> Value {
    json!({
        "date": info.date,
        "commit": info.commit,
        "profile": info.profile,
        "runs": info.runs,
        "cpus": info.cpus,
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
    })
}

/// Writes `results.json` and `ratios.svg` into `dir` (made if missing);
/// returns their paths.
pub fn write(dir: &Path, info: &RunInfo, rows: &[Row]) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json_path = dir.join("results.json");
    let text = serde_json::to_string_pretty(&to_json(info, rows))?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = dir.join("ratios.svg");
    chart(&svg_path, info, rows).with_context(|| format!("drawing {}", svg_path.display()))?;
    Ok((json_path, svg_path))
}

fn register_font() -> Result<()> {
    static FONT_BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    if FONT_BYTES.get().is_none() {
        let bytes = std::fs::read(FONT)
            .with_context(|| format!("reading {FONT} (Debian package fonts-dejavu-core)"))?;
        let _ = FONT_BYTES.set(bytes);
    }
    let bytes: &'static [u8] = FONT_BYTES.get().map(Vec::as_slice).unwrap_or_default();
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable TrueType font"))
}

/// One bar per row with both times: georep ÷ peer, parity marked at 1.
fn chart(path: &Path, info: &RunInfo, rows: &[Row]) -> Result<()> {
    register_font()?;
    let bars: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|r| r.ratio().map(|x| (r.workload.as_str(), x)))
        .collect();
    let top = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.15;
    let height = 120 + 26 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(draw)?;
    let caption = format!(
        "georep time ÷ peer time (lower is better): {} {}, profile {}, median of {}, {} CPUs",
        info.date, info.commit, info.profile, info.runs, info.cpus
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..top, (0..bars.len()).into_segmented())
        .map_err(draw)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.to_owned()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ratio")
        .draw()
        .map_err(draw)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, x))| {
            let color = if *x <= 1.0 {
                GREEN.mix(0.7)
            } else {
                RED.mix(0.7)
            };
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*x, SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            )
        }))
        .map_err(draw)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, x))| {
            Text::new(
                format!("{x:.2}x"),
                (*x, SegmentValue::CenterOf(i)),
                ("sans-serif", 12),
            )
        }))
        .map_err(draw)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![
                (1.0, SegmentValue::Exact(0)),
                (1.0, SegmentValue::Exact(bars.len())),
            ],
            BLACK.stroke_width(1),
        )))
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_holds_every_row_and_its_ratio() {
        let rows = vec![
            Row {
                workload: "small-initial".into(),
                georep_s: Some(3.0),
                rsync_s: Some(2.0),
                ..Default::default()
            },
            Row {
                workload: "limits".into(),
                ..Default::default()
            },
        ];
        let info = RunInfo::now("quick", 1);
        let v = to_json(&info, &rows);
        assert_eq!(v["rows"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["rows"][0]["ratio"].as_f64(), Some(1.5));
        assert!(v["rows"][1]["ratio"].is_null());
        assert_eq!(v["profile"], "quick");
    }
}
