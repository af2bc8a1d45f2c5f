//! Metrics: the JSONL log, TensorBoard event files (read back by our decoder and, when installed,
//! by TensorBoard itself), resume truncation, the PNG plot and the step line.

use std::path::Path;

use serde_json::Value;

use super::event_proto::What;
use super::tensorboard::read_events;
use super::*;

fn step(step: u64, loss: f64) -> StepMetrics {
    StepMetrics {
        step,
        loss,
        lr_muon: 1e-3 * step as f64,
        lr_adamw: 1e-4,
        grad_norm: 0.5,
        tokens_per_sec: 1000.0,
        mfu: None,
        step_ms: 10.0 + step as f64,
        data_wait_ms: 0.25,
        tokens: 1024 * step,
        fwd_ms: None,
        bwd_ms: None,
        opt_ms: None,
        chunks: Vec::new(),
        skipped_chunks: 0,
    }
}

fn eval(step: u64, val_loss: f64) -> EvalMetrics {
    EvalMetrics { step, tokens: 1024 * step, val_loss, val_ppl: val_loss.exp() }
}

fn event_files(run_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(run_dir.join(TB_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Checks the PNG signature and returns the IHDR width and height.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&b[12..16], b"IHDR");
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn step_line_has_a_fixed_format() {
    let mut m = StepMetrics {
        step: 120,
        loss: 5.43214,
        lr_muon: 9e-4,
        lr_adamw: 9e-5,
        grad_norm: 0.8123,
        tokens_per_sec: 12345.4,
        step_ms: 812.34,
        data_wait_ms: 0.42,
        ..step(0, 0.0)
    };
    assert_eq!(
        format_step_line(&m, "ring 2/3"),
        "step   120 | loss 5.4321 | lr 9.00e-04/9.00e-05 | gnorm 0.812 | 12345 tok/s | MFU n/a |  812.3 ms | wait 0.4 ms | ring 2/3"
    );
    (m.fwd_ms, m.bwd_ms, m.opt_ms) = (Some(1.0), Some(2.25), Some(0.5));
    (m.lr_muon, m.mfu) = (1.5e12, Some(0.18549));
    assert!(format_step_line(&m, "").ends_with(
        "lr 1.50e+12/9.00e-05 | gnorm 0.812 | 12345 tok/s | MFU 18.5% |  812.3 ms | wait 0.4 ms | fwd 1.0 bwd 2.2 opt 0.5 ms"
    ));
}

#[test]
fn mfu_is_in_the_step_record_when_known_and_absent_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::open(dir.path(), None).unwrap();
    w.log_step(&StepMetrics { mfu: Some(0.185), ..step(1, 9.0) }).unwrap();
    w.log_step(&step(2, 8.0)).unwrap();
    w.flush().unwrap();
    let recs = read_jsonl(&dir.path().join(METRICS_FILE)).unwrap();
    assert_eq!(recs[0]["mfu"], 0.185);
    assert!(recs[1].get("mfu").is_none(), "{}", recs[1]);
    let scalars = read_tensorboard_scalars(&event_files(dir.path())[0]).unwrap();
    let mfu: Vec<(i64, f32)> = scalars.iter().filter(|s| s.tag == "perf/mfu").map(|s| (s.step, s.value)).collect();
    assert_eq!(mfu, vec![(1, 0.185)]);
}

#[test]
fn steps_and_evals_go_to_jsonl_tensorboard_and_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut w = MetricsWriter::open(&run, None).unwrap();
    for s in 1..=3 {
        w.log_step(&StepMetrics {
            fwd_ms: Some(1.5),
            bwd_ms: Some(2.5),
            opt_ms: Some(0.5),
            ..step(s, 10.0 - s as f64)
        })
        .unwrap();
    }
    w.log_eval(&eval(3, 7.5)).unwrap();
    w.flush().unwrap();

    let recs = read_jsonl(&run.join(METRICS_FILE)).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["kind"], "step");
    assert_eq!(recs[0]["step"], 1);
    assert_eq!(recs[0]["loss"], 9.0);
    assert_eq!(recs[0]["tokens"], 1024);
    assert_eq!(recs[0]["fwd_ms"], 1.5);
    assert!(recs[0]["time"].as_f64().unwrap() > 1.6e9);
    assert_eq!(recs[3]["kind"], "eval");
    assert_eq!(recs[3]["val_loss"], 7.5);
    assert_eq!(recs[3]["val_ppl"], 7.5f64.exp());

    let files = event_files(&run);
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = read_events(&files[0]).unwrap();
    assert_eq!(events[0].what, What::FileVersion("brain.Event:2".into()));
    assert_eq!((events[1].step, &events[1].what), (0, &What::SessionStart));
    assert_eq!(events.len(), 2 + 3 + 1);
    let What::Scalars(first) = &events[2].what else { panic!("{:?}", events[2]) };
    assert_eq!(events[2].step, 1);
    let tags: Vec<&str> = first.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tags,
        [
            "train/loss",
            "train/lr_muon",
            "train/lr_adamw",
            "train/grad_norm",
            "perf/tokens_per_sec",
            "perf/step_ms",
            "perf/data_wait_ms",
            "perf/fwd_ms",
            "perf/bwd_ms",
            "perf/opt_ms"
        ]
    );
    assert_eq!(first[0].1, 9.0);
    assert_eq!(first[1].1, 1e-3f32);
    assert!(events[2].wall_time > 1.6e9);
    assert_eq!(events[5].step, 3);
    assert_eq!(events[5].what, What::Scalars(vec![("val/loss".into(), 7.5), ("val/ppl".into(), 7.5f64.exp() as f32)]));

    assert_eq!(png_size(&run.join(PLOT_FILE)), (PLOT_WIDTH, LOSS_PLOT_HEIGHT));
    assert!(!run.join(".loss.png.tmp.png").exists());
    let scalars = read_tensorboard_scalars(&files[0]).unwrap();
    assert_eq!(scalars.len(), 3 * 10 + 2);
    assert_eq!((scalars[10].step, scalars[10].tag.as_str(), scalars[10].value), (2, "train/loss", 8.0));

    // Our reader checks the CRCs.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    let bad = dir.path().join("bad.tfevents");
    std::fs::write(&bad, bytes).unwrap();
    let e = read_tensorboard_scalars(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.tfevents") && e.contains("CRC"), "{e}");
}

#[test]
fn resume_keeps_records_up_to_the_resume_step_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::open(dir.path(), None).unwrap();
    for s in 1..=6 {
        w.log_step(&step(s, 5.0)).unwrap();
        if s % 3 == 0 {
            w.log_eval(&eval(s, 4.0)).unwrap();
        }
    }
    drop(w);
    // The killed process was writing a line when it died.
    let path = dir.path().join(METRICS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(br#"{"kind":"step","st"#);
    std::fs::write(&path, bytes).unwrap();
    assert!(read_jsonl(&path).unwrap_err().to_string().contains("line 9"));

    let mut w = MetricsWriter::open(dir.path(), Some(4)).unwrap();
    assert_eq!(
        (w.curves.train.len(), w.curves.val.len(), w.curves.lr_muon.len(), w.curves.grad_norm.len()),
        (4, 1, 4, 4),
        "the plot data comes back too"
    );
    w.log_step(&step(5, 4.5)).unwrap();
    let recs = read_jsonl(&path).unwrap();
    let kinds_steps: Vec<(String, u64)> =
        recs.iter().map(|r| (r["kind"].as_str().unwrap().to_string(), r["step"].as_u64().unwrap())).collect();
    let expected: Vec<(String, u64)> = [("step", 1), ("step", 2), ("step", 3), ("eval", 3), ("step", 4), ("step", 5)]
        .iter()
        .map(|(k, s)| (k.to_string(), *s))
        .collect();
    assert_eq!(kinds_steps, expected);
    assert_eq!(recs[5]["loss"], 4.5);

    // A second event file, which starts with a SessionLog START at step 5.
    let files = event_files(dir.path());
    assert_eq!(files.len(), 2);
    let second = files.iter().map(|f| read_events(f).unwrap()).find(|e| e.len() == 3).unwrap();
    assert_eq!((second[1].step, &second[1].what), (5, &What::SessionStart));
}

#[test]
fn a_fresh_run_moves_old_metrics_aside_and_bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(METRICS_FILE);
    std::fs::write(&path, "{\"kind\":\"step\",\"step\":1}\nnot json\n").unwrap();
    let e = read_jsonl(&path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("line 2"), "{e}");
    // Resuming over a file with a bad line in the middle is an error, not silent loss.
    let e = MetricsWriter::open(dir.path(), Some(1)).err().unwrap().to_string();
    assert!(e.contains("line 2"), "{e}");
    let w = MetricsWriter::open(dir.path(), None).unwrap();
    drop(w);
    assert!(std::fs::read_to_string(dir.path().join("metrics.jsonl.prev")).unwrap().contains("not json"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

#[test]
fn plots_handle_log_scale_empty_and_non_finite_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.png");
    let train: Vec<(u64, f64)> = (0..500)
        .map(|s| (s, 10.0 * (-(s as f64) / 150.0).exp() + 2.0 + 0.3 * ((s * 7919 % 13) as f64 / 13.0)))
        .collect();
    let val = vec![(100, 4.6), (200, 3.3), (300, 2.8), (400, 2.6), (499, 2.5)];
    let lr = |peak: f64| -> Vec<(u64, f64)> {
        (0..500).map(|s| (s, peak * (s as f64 / 50.0).min(1.0) * (1.0 - s as f64 / 1000.0))).collect()
    };
    let grad_norm: Vec<(u64, f64)> = (0..500).map(|s| (s, 0.3 + 2.0 / (1.0 + s as f64 / 20.0))).collect();
    let curves = Curves { train: train.clone(), val: val.clone(), lr_muon: lr(3e-3), lr_adamw: lr(1e-3), grad_norm };
    write_loss_png(&p, &curves, true).unwrap();
    assert_eq!(png_size(&p), (PLOT_WIDTH, LOSS_PLOT_HEIGHT));
    write_loss_png(&p, &Curves::default(), false).unwrap();
    let bad = vec![(1, f64::NAN), (2, f64::INFINITY), (3, 1.0)];
    let odd = Curves {
        train: bad.clone(),
        val: vec![(3, 0.0)],
        lr_muon: bad.clone(),
        lr_adamw: vec![(3, 0.0)],
        grad_norm: bad,
    };
    write_loss_png(&p, &odd, true).unwrap();
    assert_eq!(png_size(&p), (PLOT_WIDTH, LOSS_PLOT_HEIGHT));
    // Labels get the decimals their spacing needs.
    assert_eq!(
        (
            plot::label_decimals(10.0),
            plot::label_decimals(1.0),
            plot::label_decimals(0.002),
            plot::label_decimals(f64::NAN)
        ),
        (0, 1, 4, 2)
    );
    // The smoothed curve starts at the first point (bias correction) and stays within the data.
    let s = plot::smooth(&train);
    assert_eq!(s[0], train[0]);
    assert!(s.iter().all(|&(_, y)| (2.0..=12.3).contains(&y)));
    if let Ok(keep) = std::env::var("MAMBA_KEEP_PLOT") {
        // To look at the images: MAMBA_KEEP_PLOT=/tmp/x cargo test ... plots_handle
        write_loss_png(Path::new(&format!("{keep}.linear.png")), &curves, false).unwrap();
        write_loss_png(Path::new(&format!("{keep}.log.png")), &curves, true).unwrap();
    }
}

/// Reads the event files with TensorBoard's own `EventAccumulator` when TensorBoard is installed
/// (`MAMBA_TEST_PYTHON` picks the interpreter, default python3); skipped otherwise.
#[test]
fn tensorboard_reads_our_event_files() {
    let python = std::env::var("MAMBA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import tensorboard"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: {python} cannot import tensorboard (pip install tensorboard to run this check)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = MetricsWriter::open(dir.path(), None).unwrap();
    for s in 1..=4 {
        w.log_step(&step(s, 6.0 - s as f64 * 0.5)).unwrap();
    }
    w.log_eval(&eval(4, 4.25)).unwrap();
    w.log_sample(&SampleMetrics { step: 2, prompt: "Once".into(), text: " upon a time ✓".into() }).unwrap();
    drop(w);
    // A resume from step 2: TensorBoard must drop the old steps 3 and 4 and show the new ones.
    let mut w = MetricsWriter::open(dir.path(), Some(2)).unwrap();
    w.log_step(&step(3, 1.25)).unwrap();
    drop(w);
    let script = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
acc.Reload()
out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
for tag in acc.Tags()["tensors"]:
    plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
    out[tag] = [[e.step, plugin, [s.decode() for s in e.tensor_proto.string_val]] for e in acc.Tensors(tag)]
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python).args(["-c", script]).arg(dir.path().join(TB_DIR)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["train/loss"], serde_json::json!([[1, 5.5], [2, 5.0], [3, 1.25]]), "{got}");
    assert_eq!(got["perf/data_wait_ms"], serde_json::json!([[1, 0.25], [2, 0.25], [3, 0.25]]));
    assert_eq!(got["val/loss"], serde_json::json!([]), "the eval at step 4 belonged to the lost part: {got}");
    assert_eq!(
        got["samples/text"],
        serde_json::json!([[2, "text", ["**Once** upon a time ✓"]]]),
        "a text summary of the text plugin: {got}"
    );
}
