//! Watches the transport's log for peers refused because they run another chain, so that
//! `join` can refuse a foreign genesis before writing anything and `status` can say plainly
//! "this peer has another genesis" (the transport reports refusals only in its log).

use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const MAX_KEPT: usize = 16;

static REFUSALS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Refusals seen so far (most recent last, at most 16).
pub fn genesis_refusals() -> Vec<String> {
    REFUSALS.lock().map(|r| r.clone()).unwrap_or_default()
}

/// Whether a transport message says a peer runs another chain or genesis.
pub fn is_genesis_refusal(msg: &str) -> bool {
    msg.contains("genesis hash") || msg.contains("runs chain")
}

fn record(msg: String) {
    if let Ok(mut r) = REFUSALS.lock() {
        if r.len() >= MAX_KEPT {
            r.remove(0);
        }
        r.push(msg);
    }
}

/// A layer that sees warnings of `tendr_net`, whatever the log level.
pub struct RefusalLayer;

struct Message(String);
impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

fn wanted(m: &Metadata<'_>) -> bool {
    m.target().starts_with("tendr_net") && *m.level() <= Level::WARN
}

impl<S: Subscriber> Layer<S> for RefusalLayer {
    fn enabled(&self, m: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(m)
    }
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !wanted(event.metadata()) {
            return;
        }
        let mut v = Message(String::new());
        event.record(&mut v);
        if is_genesis_refusal(&v.0) {
            record(v.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn classifies_refusals() {
        assert!(super::is_genesis_refusal(
            "peer refused: peer 0x12 has genesis hash aa, this node has bb; both must use the same genesis file"
        ));
        assert!(!super::is_genesis_refusal("peer refused: hello not completed in time"));
    }
}
