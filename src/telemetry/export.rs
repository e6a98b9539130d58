//! The bounded way from a finished span to the collector: a span joins a queue of fixed size
//! without waiting, and one task sends the queue in batches. A collector that is slow, down or
//! a black hole fills the queue; further spans are dropped and counted, and no job ever waits
//! for one. The SDK's own batch processor drops too, but counts only into its log at shutdown.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::span_export;

/// Spans waiting for the collector at most: about a second of a busy worker's spans.
pub(super) const QUEUE: usize = 4096;
/// Spans in one export request at most.
const BATCH: usize = 512;
/// How long a batch that is not full waits for more spans before it goes.
const LINGER: Duration = Duration::from_secs(1);
/// How long the last spans may take to go out when the worker stops.
const LAST_FLUSH: Duration = Duration::from_secs(3);

/// The span processor: hands each finished span to the shipping task, or drops it.
#[derive(Debug)]
pub(super) struct QueueSpans {
    queue: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueSpans {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Never waits: a span that finds the queue full (or the task gone) is dropped.
        if self.queue.try_send(span).is_err() {
            span_export().queue_full.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The running shipping task, and how to stop it.
pub(crate) struct Shipping {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Shipping {
    /// Sends what is queued (for at most [`LAST_FLUSH`]), then ends the task.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(LAST_FLUSH, self.task).await;
    }
}

/// Starts the task that sends queued spans through `exporter`, each request bounded by
/// `limit`; returns the processor that feeds it. Needs the tokio runtime.
pub(super) fn start<E: SpanExporter + 'static>(
    exporter: E,
    limit: Duration,
) -> (QueueSpans, Shipping) {
    start_with(exporter, limit, QUEUE)
}

/// [`start`] with a queue of `capacity` spans.
fn start_with<E: SpanExporter + 'static>(
    exporter: E,
    limit: Duration,
    capacity: usize,
) -> (QueueSpans, Shipping) {
    let (queue, spans) = mpsc::channel(capacity);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(ship(spans, exporter, limit, stopped));
    (QueueSpans { queue }, Shipping { stop, task })
}

async fn ship<E: SpanExporter>(
    mut spans: mpsc::Receiver<SpanData>,
    exporter: E,
    limit: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            got = spans.recv_many(&mut batch, BATCH) => {
                if got == 0 {
                    return;
                }
            }
            _ = &mut stopped => break,
        }
        if batch.len() < BATCH {
            // A quiet worker sends a request a second, not one per span.
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                _ = &mut stopped => break,
            }
            while batch.len() < BATCH {
                let Ok(span) = spans.try_recv() else { break };
                batch.push(span);
            }
        }
        send(&exporter, &mut batch, limit).await;
    }
    // Stopping: what is queued now goes out, in batches, and the task ends.
    loop {
        while batch.len() < BATCH {
            let Ok(span) = spans.try_recv() else { break };
            batch.push(span);
        }
        if batch.is_empty() {
            return;
        }
        send(&exporter, &mut batch, limit).await;
    }
}

/// Exports `batch` (emptying it) and counts what became of it.
async fn send<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, limit: Duration) {
    let n = batch.len() as u64;
    let spans = std::mem::replace(batch, Vec::with_capacity(BATCH));
    match tokio::time::timeout(limit, exporter.export(spans)).await {
        Ok(Ok(())) => {
            span_export().exported.inc_by(n);
        }
        Ok(Err(e)) => {
            span_export().export_failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "span export failed");
        }
        Err(_) => {
            span_export().export_failed.inc_by(n);
            tracing::debug!(spans = n, "span export timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// A collector that takes every request and never answers.
    #[derive(Debug)]
    struct NeverAnswers;

    impl SpanExporter for NeverAnswers {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    fn counted(cause: &str) -> u64 {
        let label = crate::metrics::CauseLabel {
            cause: cause.into(),
        };
        // Read through the family, as the exposition does.
        span_export().dropped.get_or_create(&label).get()
    }

    #[tokio::test]
    async fn spans_the_collector_does_not_take_are_dropped_and_counted_and_ending_one_never_waits()
    {
        let (full, failed) = (counted("queue_full"), counted("export_failed"));
        let (processor, shipping) = start_with(NeverAnswers, Duration::from_millis(100), 4);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let started = Instant::now();
        for _ in 0..40 {
            tracer.start("job").end();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "ending a span waits for nothing: {:?}",
            started.elapsed()
        );
        // At most the queue, and the batch the task took out of it, are not dropped at once.
        assert!(counted("queue_full") - full >= 40 - 4 - 4);
        // The stuck request is given up at its limit, after the batch's wait for more.
        let deadline = Instant::now() + Duration::from_secs(5);
        while counted("export_failed") == failed {
            assert!(Instant::now() < deadline, "a stuck export is never counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shipping.finish().await;
    }
}
