//! Shared pieces of the examples: an `indicatif` progress bar that observes the training engine.

use std::path::Path;

use cellseg::train::{EvalRecord, NonFiniteStep, RunPlan, StepStats, TrainObserver, TrainReport};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar with loss, learning rate, speed and ETA; evaluations and checkpoints are printed
/// above it.
pub struct ProgressObserver {
    bar: ProgressBar,
}

impl ProgressObserver {
    /// A hidden bar until the run starts.
    pub fn new() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    /// Prints above the bar, or plainly when the bar is hidden (output not a terminal).
    fn say(&self, line: String) {
        if self.bar.is_hidden() { println!("{line}") } else { self.bar.println(line) }
    }
}

impl TrainObserver for ProgressObserver {
    fn on_start(&mut self, plan: &RunPlan) {
        let bar = ProgressBar::new(plan.total_steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        bar.set_position(plan.start_step);
        self.bar = bar;
    }

    fn on_step(&mut self, s: &StepStats) {
        self.bar.set_position(s.step);
        self.bar.set_message(format!(
            "epoch {}/{}  loss {:.3}  lr {:.1e}  {:.1} img/s",
            s.epoch, s.epochs, s.loss, s.lr, s.images_per_s
        ));
    }

    fn on_nonfinite(&mut self, s: &NonFiniteStep) {
        self.say(format!(
            "step {}: non-finite {} = {} (images {:?}); skipped ({} so far)",
            s.step, s.what, s.value, s.image_ids, s.count
        ));
    }

    fn on_eval(&mut self, r: &EvalRecord) {
        let per: Vec<String> =
            r.report.per_type.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        self.say(format!(
            "step {} (epoch {}): metric {:.3} [{}]{}",
            r.step,
            r.epoch,
            r.report.score,
            per.join(", "),
            if r.is_best { "  best" } else { "" }
        ));
    }

    fn on_checkpoint(&mut self, _dir: &Path, _step: u64) {}

    fn on_end(&mut self, _report: &TrainReport) {
        self.bar.finish_and_clear();
    }
}
