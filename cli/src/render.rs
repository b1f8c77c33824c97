//! Output helpers shared by the commands: JSON printing and the byte
//! progress bar shown on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use microsandbox::ProgressCallback;
use serde::Serialize;

/// Print `value` as one line of JSON on stdout.
pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error[Io]: cannot render JSON: {e}"),
    }
}

/// Run `work` with a byte progress bar labelled `label` on stderr (when it
/// is a terminal and not in JSON mode), cleared when the work ends.
pub async fn with_progress<T, F>(
    label: &str,
    json: bool,
    work: impl FnOnce(Option<ProgressCallback>) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let (bar, progress) = progress_bar(label, json);
    let result = work(progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// A byte progress bar on stderr when it is a terminal (and not in JSON
/// mode), with the callback that drives it.
fn progress_bar(label: &str, json: bool) -> (Option<ProgressBar>, Option<ProgressCallback>) {
    if json || !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    let driven = bar.clone();
    let callback: ProgressCallback = Arc::new(move |event| {
        driven.set_length(event.total_bytes);
        driven.set_position(event.done_bytes);
    });
    (Some(bar), Some(callback))
}

/// Human-readable byte count (binary units).
pub fn human_bytes(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
