//! Training curves from model directories: the records of `metrics.jsonl` turned into a
//! [`seq2seq_plot::Figure`] — for one run (written as `curves.png` and `curves.svg` after each
//! validation) or several runs overlaid (`seq2seq plot`).

use std::path::Path;

use seq2seq_plot::{Figure, Format, Panel, Series};
use serde::Deserialize;

use crate::model_dir::{self, METRICS};
use crate::{Error, Result};

/// The curves written beside a model.
pub const CURVES_PNG: &str = "curves.png";
pub const CURVES_SVG: &str = "curves.svg";

/// One line of `metrics.jsonl`: a training record every `train.log_every` steps (`kind:
/// "train"`), or a validation (`kind: "valid"`, or no kind in logs written before there were
/// training records), which also carries the training loss of its window.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub kind: Option<String>,
    pub step: u64,
    pub train_loss: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_ppl: Option<f64>,
    pub valid_exact: Option<f64>,
    pub valid_bleu: Option<f64>,
    pub lr: Option<f64>,
}

impl Record {
    pub fn is_validation(&self) -> bool {
        self.kind.as_deref() == Some("valid") || (self.kind.is_none() && self.valid_loss.is_some())
    }
}

/// A figure that can be drawn for each run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    TrainLoss,
    ValidLoss,
    ValidPpl,
    ValidBleu,
    ValidExact,
    Lr,
}

impl Metric {
    pub const NAMES: [&'static str; 6] = [
        "train_loss",
        "valid_loss",
        "valid_ppl",
        "valid_bleu",
        "valid_exact",
        "lr",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        let all = [
            Metric::TrainLoss,
            Metric::ValidLoss,
            Metric::ValidPpl,
            Metric::ValidBleu,
            Metric::ValidExact,
            Metric::Lr,
        ];
        Self::NAMES.iter().position(|n| *n == name).map(|i| all[i])
    }

    /// Panel title, y-axis label.
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Metric::TrainLoss => ("training loss", "nats / target token"),
            Metric::ValidLoss => ("validation loss", "nats / target token"),
            Metric::ValidPpl => ("validation perplexity", "perplexity"),
            Metric::ValidBleu => ("validation BLEU (greedy)", "BLEU"),
            Metric::ValidExact => ("validation exact match (greedy)", "% exact"),
            Metric::Lr => ("learning rate", "learning rate"),
        }
    }

    /// The metric's points in a run's records (exact match in %).
    fn points(self, records: &[Record]) -> Vec<(f64, f64)> {
        let value = |r: &Record| match self {
            Metric::TrainLoss => r.train_loss,
            Metric::ValidLoss => r.valid_loss.filter(|_| r.is_validation()),
            Metric::ValidPpl => r.valid_ppl,
            Metric::ValidBleu => r.valid_bleu,
            Metric::ValidExact => r.valid_exact.map(|e| 100.0 * e),
            Metric::Lr => r.lr,
        };
        records
            .iter()
            .filter_map(|r| {
                value(r)
                    .filter(|v| v.is_finite())
                    .map(|v| (r.step as f64, v))
            })
            .collect()
    }
}

/// The records of a model directory's `metrics.jsonl`, in step order. Lines that do not parse
/// (a log cut by a crash before atomic writes) are skipped.
pub fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join(METRICS);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let mut records: Vec<Record> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    records.sort_by_key(|r| r.step);
    Ok(records)
}

/// The validation metric a run reports: BLEU where it has references with more than one token
/// (translation, captioning), exact match where only that is recorded, else perplexity.
fn headline(records: &[Record]) -> Metric {
    if records.iter().any(|r| r.valid_bleu.is_some()) {
        Metric::ValidBleu
    } else if records.iter().any(|r| r.valid_exact.is_some()) {
        Metric::ValidExact
    } else {
        Metric::ValidPpl
    }
}

/// One run's curves: losses (training, thin; validation, with a dot per validation), its
/// validation metric, and the learning rate.
pub fn run_figure(name: &str, records: &[Record]) -> Figure {
    let metric = headline(records);
    let series = |m: Metric, color: usize, markers: bool, thin: bool, label: &str| Series {
        label: label.into(),
        points: m.points(records),
        color,
        markers,
        thin,
    };
    let (metric_title, metric_label) = metric.labels();
    Figure {
        title: format!("{name}: training curves"),
        x_label: "step".into(),
        panels: vec![
            Panel {
                title: "loss (log scale)".into(),
                y_label: "nats / target token".into(),
                series: vec![
                    series(Metric::TrainLoss, 0, false, true, "training"),
                    series(Metric::ValidLoss, 1, true, false, "validation"),
                ],
                height: 1.0,
                log_y: true,
            },
            Panel {
                title: metric_title.into(),
                y_label: metric_label.into(),
                series: vec![series(metric, 2, true, false, metric_label)],
                height: 0.8,
                log_y: false,
            },
            Panel {
                title: "learning rate".into(),
                y_label: "learning rate".into(),
                series: vec![series(Metric::Lr, 6, false, false, "lr")],
                height: 0.6,
                log_y: false,
            },
        ],
    }
}

/// Several runs overlaid, a colour each: one panel of `metric`, or (without one) the loss, each
/// run's validation metric and the learning rate.
pub fn overlay_figure(runs: &[(String, Vec<Record>)], metric: Option<Metric>) -> Figure {
    let panel = |m: Metric, height: f64, thin: bool| {
        let (title, y_label) = m.labels();
        Panel {
            title: title.into(),
            y_label: y_label.into(),
            series: runs
                .iter()
                .enumerate()
                .map(|(i, (name, records))| Series {
                    label: name.clone(),
                    points: m.points(records),
                    color: i,
                    markers: !thin && m != Metric::Lr,
                    thin,
                })
                .collect(),
            height,
            log_y: matches!(m, Metric::TrainLoss | Metric::ValidLoss),
        }
    };
    let panels = match metric {
        Some(m) => vec![panel(m, 1.2, m == Metric::TrainLoss)],
        None => {
            let all: Vec<Record> = runs.iter().flat_map(|(_, r)| r.clone()).collect();
            vec![
                panel(Metric::TrainLoss, 0.8, true),
                panel(Metric::ValidLoss, 0.8, false),
                panel(headline(&all), 0.8, false),
                panel(Metric::Lr, 0.5, false),
            ]
        }
    };
    Figure {
        title: match runs {
            [(name, _)] => name.clone(),
            _ => format!("{} runs", runs.len()),
        },
        x_label: "step".into(),
        panels,
    }
}

/// Redraws a run directory's `curves.png` and `curves.svg` from its metrics log (each written
/// atomically).
pub fn write_run_curves(dir: &Path, name: &str) -> Result<()> {
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = if name.is_empty() {
        dir_name.as_deref().unwrap_or("run")
    } else {
        name
    };
    let figure = run_figure(name, &read_records(dir)?);
    for (file, format) in [(CURVES_PNG, Format::Png), (CURVES_SVG, Format::Svg)] {
        let bytes = seq2seq_plot::curves(&figure, format)?;
        model_dir::write_atomic(&dir.join(file), &bytes)?;
    }
    Ok(())
}

/// `seq2seq plot`: the runs in `dirs` overlaid (labelled by their directory names) and written
/// to `out`, whose extension (`.png`, `.svg`) picks the format.
pub fn plot_runs(dirs: &[std::path::PathBuf], metric: Option<Metric>, out: &Path) -> Result<()> {
    let format = Format::from_path(out).ok_or_else(|| Error::Flag {
        flag: "--out",
        msg: format!("{}: the file name must end in .png or .svg", out.display()),
    })?;
    let runs = dirs
        .iter()
        .map(|d| {
            let name = d.file_name().map_or_else(
                || d.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok((name, read_records(d)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = seq2seq_plot::curves(&overlay_figure(&runs, metric), format)?;
    model_dir::write_atomic(out, &bytes)
}
