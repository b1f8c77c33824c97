//! Output helpers shared by the commands: JSON printing and the byte
//! progress bar shown on a terminal. `--json` output is one document on
//! stdout: a single value pretty-printed, a list as an array with one
//! compact element per line (streamed, so a listing of any size starts at
//! once and runs in constant memory). The shapes are the core's serialized
//! views, documented in `docs/json.md`.

use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use microsandbox::ProgressCallback;
use serde::Serialize;

/// Print `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error[Io]: cannot render JSON: {e}"),
    }
}

/// Print `items` as a JSON array, one compact element per line.
pub fn print_json_list<T: Serialize>(items: impl IntoIterator<Item = T>) {
    let mut list = JsonList::new();
    for item in items {
        if !list.push(&item) {
            break;
        }
    }
    list.finish();
}

/// A JSON array written to stdout as its elements arrive: `[`, then one
/// compact element per line, then `]` from [`finish`](Self::finish).
/// Output is buffered in large blocks; [`discard`](Self::discard) drops
/// what is still buffered (a listing that failed part-way prints its error
/// instead of an array). A closed pipe ends the listing quietly.
pub struct JsonList {
    out: BufWriter<Stdout>,
    first: bool,
    open: bool,
}

impl JsonList {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, std::io::stdout()),
            first: true,
            open: true,
        }
    }

    /// Append `item`; `false` once stdout is closed (stop producing).
    pub fn push(&mut self, item: &impl Serialize) -> bool {
        let separator: &[u8] = if self.first { b"[\n" } else { b",\n" };
        self.first = false;
        self.open = self.open
            && self.out.write_all(separator).is_ok()
            && serde_json::to_writer(&mut self.out, item).is_ok();
        self.open
    }

    /// Close the array and flush it.
    pub fn finish(mut self) {
        let end: &[u8] = if self.first { b"[]\n" } else { b"\n]\n" };
        if self.open {
            let _ = self.out.write_all(end);
            let _ = self.out.flush();
        }
    }

    /// Drop what is still buffered without writing it.
    pub fn discard(self) {
        drop(self.out.into_parts());
    }
}

/// `--json` of a command whose result is only that something was removed.
#[derive(Serialize)]
pub struct Removed<'a> {
    pub removed: &'a str,
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
