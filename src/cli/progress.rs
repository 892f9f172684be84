//! Human progress on stderr for the job commands: a phase list with a spinner
//! for the running phase when stderr is a terminal, otherwise one plain line
//! per phase when it ends (and the phase's detail lines before it).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tendril::pipeline::{PhaseEvent, PhaseOutcome};
use tendril::terraform::Event;

/// Where progress goes: a live spinner on a terminal, plain lines elsewhere.
pub struct Progress {
    total: usize,
    live: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    index: usize,
    bar: Option<ProgressBar>,
    title: &'static str,
}

impl Progress {
    /// Progress for a job of `total` phases; live when stderr is a terminal
    /// and `TERM` is not `dumb`.
    pub fn new(total: usize) -> Self {
        let live = std::io::stderr().is_terminal()
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Progress {
            total,
            live,
            state: Mutex::new(State::default()),
        }
    }

    /// Shows a phase event.
    pub fn phase(&self, event: &PhaseEvent) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match event {
            PhaseEvent::Started(phase) => {
                st.index += 1;
                st.title = phase.title();
                let head = format!("[{}/{}] {}", st.index, self.total, phase.title());
                if self.live {
                    let bar = ProgressBar::new_spinner();
                    if let Ok(style) =
                        ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}")
                    {
                        bar.set_style(style);
                    }
                    bar.set_prefix(head);
                    bar.enable_steady_tick(Duration::from_millis(100));
                    st.bar = Some(bar);
                }
            }
            PhaseEvent::Finished {
                phase,
                outcome,
                elapsed,
            } => {
                let mark = match outcome {
                    PhaseOutcome::Ok => "ok",
                    PhaseOutcome::Failed => "FAILED",
                    PhaseOutcome::Skipped => "skipped",
                };
                let line = if *outcome == PhaseOutcome::Skipped {
                    format!("      {} {mark}", phase.title())
                } else {
                    format!(
                        "[{}/{}] {} {mark} in {}",
                        st.index,
                        self.total,
                        phase.title(),
                        human(*elapsed)
                    )
                };
                if let Some(bar) = st.bar.take() {
                    bar.finish_and_clear();
                }
                say(&line);
            }
        }
    }

    /// Shows one line of detail inside the running phase (a terraform
    /// resource event, an applied object, a readiness change).
    pub fn detail(&self, text: &str) {
        let Ok(st) = self.state.lock() else {
            return;
        };
        match &st.bar {
            Some(bar) => bar.set_message(text.to_string()),
            None => say(&format!("      {text}")),
        }
    }

    /// Shows an event of terraform's stream. Every resource and provisioner
    /// event is shown (a long apply keeps printing "still creating" lines),
    /// so a supervisor reading stderr sees the job alive.
    pub fn terraform(&self, event: &Event) {
        match event {
            Event::ApplyStart { address, action } => self.detail(&format!("{address}: {action}…")),
            Event::ApplyProgress {
                address,
                action,
                elapsed_seconds,
            } => self.detail(&format!(
                "{address}: still {} ({elapsed_seconds}s elapsed)",
                ongoing(action)
            )),
            Event::ApplyComplete {
                address,
                action,
                elapsed_seconds,
                ..
            } => self.line(&format!(
                "      {address}: {action} complete after {elapsed_seconds}s"
            )),
            Event::ApplyErrored {
                address, action, ..
            } => self.line(&format!("      {address}: {action} FAILED")),
            Event::Provisioner {
                address,
                provisioner,
                phase,
                output,
            } => match output {
                Some(out) => self.line(&format!("      {address} ({provisioner}): {out}")),
                None => self.detail(&format!("{address}: {provisioner} {phase}")),
            },
            Event::Diagnostic(d) => self.line(&format!(
                "      {}: {}{}",
                d.severity,
                d.summary,
                d.address
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            )),
            Event::ChangeSummary { operation, changes } => self.detail(&format!(
                "{operation}: {} added, {} changed, {} destroyed",
                changes.add, changes.change, changes.remove
            )),
            Event::Log { message, .. } => self.detail(message),
            // what a plan will do, one line per resource (a PLAN shows it all)
            Event::PlannedChange { address, action } if action != "noop" => {
                self.line(&format!("      {action:>8} {address}"))
            }
            Event::Version { .. }
            | Event::PlannedChange { .. }
            | Event::Outputs { .. }
            | Event::Text { .. } => {}
        }
    }

    /// Prints a line above the live display (or plainly).
    pub fn line(&self, text: &str) {
        let Ok(st) = self.state.lock() else {
            return;
        };
        match &st.bar {
            Some(bar) => bar.println(text),
            None => say(text),
        }
    }
}

/// Writes one line to stderr. A stderr nobody reads any more (a closed pipe,
/// a supervisor that died) loses the line instead of panicking, which would
/// abandon terraform in the middle of writing its state.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// terraform's action as an ongoing verb: `create` → `creating`.
fn ongoing(action: &str) -> String {
    match action {
        "create" => "creating".into(),
        "update" => "updating".into(),
        "delete" => "destroying".into(),
        "read" => "reading".into(),
        "replace" => "replacing".into(),
        other => format!("{other} running"),
    }
}

/// `850 ms`, `3.2 s`, `2m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_millis(3240)), "3.2 s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
    }
}
