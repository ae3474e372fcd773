//! The spool's metric families (DESIGN.md "Delivery"), registered into the
//! server's registry beside the others.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Gauges and counters of the spool and its delivery workers.
#[derive(Clone)]
pub struct SpoolMetrics {
    /// `postern_spool_messages{upstream,state}`: queued, deferred, dead.
    pub messages: IntGaugeVec,
    /// `postern_spool_bytes`: message bytes in the queue.
    pub bytes: IntGauge,
    /// `postern_spool_oldest_seconds{upstream}`: age of the oldest queued message.
    pub oldest: IntGaugeVec,
    /// `postern_delivery_attempts_total{upstream,result}`, one per upstream transaction.
    pub attempts: IntCounterVec,
    /// `postern_dead_letters_total{upstream}`.
    pub dead_letters: IntCounterVec,
}

/// The `result` words of `postern_delivery_attempts_total`.
pub const ATTEMPT_RESULTS: [&str; 4] = ["delivered", "deferred", "rejected", "error"];

impl SpoolMetrics {
    /// Creates the families and registers them into `r`.
    ///
    /// # Errors
    /// If a name is registered twice in `r`.
    pub fn register(r: &Registry) -> prometheus::Result<SpoolMetrics> {
        let messages = IntGaugeVec::new(
            Opts::new(
                "spool_messages",
                "Messages in the spool by upstream and state (queued, deferred, dead)",
            ),
            &["upstream", "state"],
        )?;
        let bytes = IntGauge::new("spool_bytes", "Message bytes waiting in the spool queue")?;
        let oldest = IntGaugeVec::new(
            Opts::new(
                "spool_oldest_seconds",
                "Age of the oldest message waiting in the spool, by upstream",
            ),
            &["upstream"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "delivery_attempts_total",
                "Spool delivery transactions by upstream and result",
            ),
            &["upstream", "result"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "dead_letters_total",
                "Messages moved to the dead-letter directory, by upstream",
            ),
            &["upstream"],
        )?;
        r.register(Box::new(messages.clone()))?;
        r.register(Box::new(bytes.clone()))?;
        r.register(Box::new(oldest.clone()))?;
        r.register(Box::new(attempts.clone()))?;
        r.register(Box::new(dead_letters.clone()))?;
        Ok(SpoolMetrics {
            messages,
            bytes,
            oldest,
            attempts,
            dead_letters,
        })
    }

    /// Every series of `upstream` at 0, so it exists from start.
    pub fn init_upstream(&self, upstream: &str) {
        for state in ["queued", "deferred", "dead"] {
            self.messages.with_label_values(&[upstream, state]).add(0);
        }
        self.oldest.with_label_values(&[upstream]).add(0);
        for result in ATTEMPT_RESULTS {
            self.attempts
                .with_label_values(&[upstream, result])
                .inc_by(0);
        }
        self.dead_letters.with_label_values(&[upstream]).inc_by(0);
    }
}
