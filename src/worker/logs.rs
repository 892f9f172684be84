//! Log lines from a running job: the sink the runner writes to, redaction,
//! and the shipper that batches lines into chunks and sends them in order.

use crate::queue::{LogChunk, LogStream};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Secrets shorter than this are not redacted (they would shred every line).
pub const MIN_SECRET_LEN: usize = 3;

/// Replaces known secret values with `[redacted]`.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Adds a value to redact (ignored when shorter than [`MIN_SECRET_LEN`]).
    pub fn add(&mut self, value: &str) {
        let v = value.trim();
        if v.chars().count() >= MIN_SECRET_LEN && !self.secrets.iter().any(|s| s == v) {
            self.secrets.push(v.to_string());
            // Longest first, so a secret containing another is replaced whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// The text with every known secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), crate::secret::REDACTED);
            }
        }
        out
    }
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Which stream.
    pub stream: LogStream,
    /// The text, without its newline.
    pub text: String,
}

/// Where a runner writes its output. Cheap to clone; lines are redacted and
/// shipped in the order written. Writing never blocks and never fails: after
/// the job ended, lines are dropped.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<LogLine>,
    redactor: Arc<Mutex<Redactor>>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl LogSink {
    /// A sink and the receiving end of its lines.
    pub fn channel(
        redactor: Redactor,
    ) -> (
        LogSink,
        mpsc::UnboundedReceiver<LogLine>,
        Arc<Mutex<Redactor>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let redactor = Arc::new(Mutex::new(redactor));
        (
            LogSink {
                tx,
                redactor: redactor.clone(),
            },
            rx,
            redactor,
        )
    }

    /// Writes text to a stream; text with several lines is split into lines.
    pub fn line(&self, stream: LogStream, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            let _ = self.tx.send(LogLine {
                stream,
                text: l.to_string(),
            });
        }
        if text.as_ref().is_empty() {
            let _ = self.tx.send(LogLine {
                stream,
                text: String::new(),
            });
        }
    }

    /// Writes to STDOUT.
    pub fn stdout(&self, text: impl AsRef<str>) {
        self.line(LogStream::Stdout, text);
    }

    /// Writes to STDERR.
    pub fn stderr(&self, text: impl AsRef<str>) {
        self.line(LogStream::Stderr, text);
    }

    /// Writes a worker note (SYSTEM).
    pub fn system(&self, text: impl AsRef<str>) {
        self.line(LogStream::System, text);
    }

    /// Redacts `value` from every line shipped from now on (e.g. a password
    /// the job learned while running). Lines already written but not yet
    /// shipped are redacted too.
    pub fn add_secret(&self, value: &str) {
        if let Ok(mut r) = self.redactor.lock() {
            r.add(value);
        }
    }
}

/// Batches lines into chunks: one stream per chunk, a new chunk when the
/// stream changes or the current one passes `max_bytes`.
#[derive(Debug)]
pub struct Batcher {
    max_bytes: usize,
    current: Option<LogChunk>,
    ready: std::collections::VecDeque<LogChunk>,
}

impl Batcher {
    /// A batcher cutting chunks at `max_bytes`.
    pub fn new(max_bytes: usize) -> Batcher {
        Batcher {
            max_bytes: max_bytes.max(1),
            current: None,
            ready: Default::default(),
        }
    }

    /// Adds one (already redacted) line.
    pub fn push(&mut self, stream: LogStream, text: &str) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.stream_type != stream)
        {
            self.cut();
        }
        let c = self.current.get_or_insert_with(|| LogChunk {
            log_chunk: String::new(),
            stream_type: stream,
        });
        c.log_chunk.push_str(text);
        c.log_chunk.push('\n');
        if c.log_chunk.len() >= self.max_bytes {
            self.cut();
        }
    }

    /// Closes the current chunk.
    pub fn cut(&mut self) {
        if let Some(c) = self.current.take() {
            self.ready.push_back(c);
        }
    }

    /// Bytes waiting in closed chunks.
    pub fn ready_bytes(&self) -> usize {
        self.ready.iter().map(|c| c.log_chunk.len()).sum()
    }

    /// The oldest closed chunk.
    pub fn front(&self) -> Option<&LogChunk> {
        self.ready.front()
    }

    /// Drops the oldest closed chunk (after it was sent).
    pub fn pop(&mut self) -> Option<LogChunk> {
        self.ready.pop_front()
    }

    /// Closed chunks plus the open one.
    pub fn len(&self) -> usize {
        self.ready.len() + usize::from(self.current.is_some())
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything (the job is gone).
    pub fn clear(&mut self) {
        self.current = None;
        self.ready.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_longest_secrets_first_and_skips_tiny_ones() {
        let mut r = Redactor::default();
        r.add("abc");
        r.add("abcdef");
        r.add("x");
        r.add("");
        assert_eq!(
            r.redact("key=abcdef other=abc x"),
            "key=[redacted] other=[redacted] x"
        );
        assert!(!format!("{r:?}").contains("abc"));
    }

    #[test]
    fn batches_cut_on_stream_change_and_size() {
        let mut b = Batcher::new(10);
        b.push(LogStream::Stdout, "a");
        b.push(LogStream::Stdout, "b");
        b.push(LogStream::Stderr, "c");
        assert_eq!(b.pop().unwrap().log_chunk, "a\nb\n");
        b.push(LogStream::Stderr, "0123456789");
        let c = b.pop().unwrap();
        assert_eq!(
            (c.log_chunk.as_str(), c.stream_type),
            ("c\n0123456789\n", LogStream::Stderr)
        );
        assert!(b.is_empty());
    }

    #[test]
    fn the_sink_splits_lines_and_shares_secrets() {
        let (sink, mut rx, red) = LogSink::channel(Redactor::default());
        sink.stdout("one\ntwo");
        sink.add_secret("hunter2");
        assert_eq!(rx.try_recv().unwrap().text, "one");
        assert_eq!(rx.try_recv().unwrap().text, "two");
        assert_eq!(red.lock().unwrap().redact("pw hunter2"), "pw [redacted]");
    }
}
