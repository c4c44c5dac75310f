//! Prometheus metrics of the collector (the `prometheus` crate: an explicit registry per
//! process, no global recorder, so tests can run several collectors side by side).

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the collector exports.
pub struct Metrics {
    registry: Registry,
    /// Market messages received, per exchange.
    pub messages: IntCounterVec,
    /// Market messages per second over the last second, per exchange.
    pub message_rate: GaugeVec,
    /// Exchange event time to receipt, seconds, per exchange.
    pub latency: HistogramVec,
    /// Book resynchronisations, per exchange and symbol.
    pub resyncs: IntGaugeVec,
    /// Rows newly stored, per table.
    pub db_rows: IntCounterVec,
    /// Failed database writes (each retried).
    pub db_errors: IntCounter,
    /// Seconds since the write buffer was last empty or last drained a batch (0 when all
    /// rows are stored): how far the database is behind.
    pub db_write_lag: Gauge,
    /// Rows buffered in memory for the database.
    pub db_buffered_rows: IntGauge,
    /// Rows spilled to disk for the database.
    pub db_spilled_rows: IntGauge,
    /// 1 while the database accepts writes.
    pub db_up: IntGauge,
    /// Events published to Redis.
    pub redis_published: IntCounter,
    /// Failed Redis publishes.
    pub redis_errors: IntCounter,
    /// Events dropped because Redis was unreachable for too long.
    pub redis_dropped: IntCounter,
    /// 1 while Redis accepts publishes.
    pub redis_up: IntGauge,
    /// Resident memory of this process, bytes.
    pub rss_bytes: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new("mmtrader_messages_total", "Market messages received"),
            &["exchange"],
        )
        .expect("valid metric");
        let message_rate = GaugeVec::new(
            Opts::new("mmtrader_messages_per_second", "Market messages per second"),
            &["exchange"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mmtrader_event_latency_seconds",
                "Exchange event time to receipt",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["exchange"],
        )
        .expect("valid metric");
        let resyncs = IntGaugeVec::new(
            Opts::new("mmtrader_book_resyncs", "Book resynchronisations"),
            &["exchange", "symbol"],
        )
        .expect("valid metric");
        let db_rows = IntCounterVec::new(
            Opts::new("mmtrader_db_rows_written_total", "Rows newly stored"),
            &["table"],
        )
        .expect("valid metric");
        let db_errors = IntCounter::new("mmtrader_db_write_errors_total", "Failed database writes")
            .expect("valid metric");
        let db_write_lag = Gauge::new(
            "mmtrader_db_write_lag_seconds",
            "Seconds since the write buffer was last empty or last wrote a batch",
        )
        .expect("valid metric");
        let db_buffered_rows =
            IntGauge::new("mmtrader_db_buffered_rows", "Rows buffered in memory")
                .expect("valid metric");
        let db_spilled_rows = IntGauge::new("mmtrader_db_spilled_rows", "Rows spilled to disk")
            .expect("valid metric");
        let db_up =
            IntGauge::new("mmtrader_db_up", "1 while the database accepts writes").expect("valid");
        let redis_published = IntCounter::new(
            "mmtrader_redis_published_total",
            "Events published to Redis",
        )
        .expect("valid metric");
        let redis_errors = IntCounter::new("mmtrader_redis_errors_total", "Failed Redis publishes")
            .expect("valid metric");
        let redis_dropped = IntCounter::new(
            "mmtrader_redis_dropped_total",
            "Events dropped while Redis was unreachable",
        )
        .expect("valid metric");
        let redis_up =
            IntGauge::new("mmtrader_redis_up", "1 while Redis accepts publishes").expect("valid");
        let rss_bytes = IntGauge::new(
            "mmtrader_process_resident_memory_bytes",
            "Resident memory of the process",
        )
        .expect("valid metric");
        let m = Self {
            registry,
            messages,
            message_rate,
            latency,
            resyncs,
            db_rows,
            db_errors,
            db_write_lag,
            db_buffered_rows,
            db_spilled_rows,
            db_up,
            redis_published,
            redis_errors,
            redis_dropped,
            redis_up,
            rss_bytes,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.messages.clone()),
            Box::new(m.message_rate.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.resyncs.clone()),
            Box::new(m.db_rows.clone()),
            Box::new(m.db_errors.clone()),
            Box::new(m.db_write_lag.clone()),
            Box::new(m.db_buffered_rows.clone()),
            Box::new(m.db_spilled_rows.clone()),
            Box::new(m.db_up.clone()),
            Box::new(m.redis_published.clone()),
            Box::new(m.redis_errors.clone()),
            Box::new(m.redis_dropped.clone()),
            Box::new(m.redis_up.clone()),
            Box::new(m.rss_bytes.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Reads this process's resident memory into the gauge (where `/proc` exists).
    pub fn refresh_rss(&self) {
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| crate::tui::desk::parse_vm_rss(&s))
        {
            self.rss_bytes.set(bytes as i64);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.messages.with_label_values(&["sim"]).inc_by(3);
        m.latency.with_label_values(&["sim"]).observe(0.01);
        m.resyncs.with_label_values(&["sim", "ETHUSDT"]).set(2);
        m.db_rows.with_label_values(&["trades"]).inc_by(5);
        m.message_rate.with_label_values(&["sim"]).set(1.5);
        m.refresh_rss();
        let text = m.encode();
        for name in [
            "mmtrader_messages_total{exchange=\"sim\"} 3",
            "mmtrader_event_latency_seconds_bucket",
            "mmtrader_book_resyncs{exchange=\"sim\",symbol=\"ETHUSDT\"} 2",
            "mmtrader_db_rows_written_total{table=\"trades\"} 5",
            "mmtrader_db_write_lag_seconds",
            "mmtrader_redis_published_total",
            "mmtrader_process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
