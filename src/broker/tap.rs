//! A temporary subscription to `wxcourier.results`, used by `demo`, `bench` and tests to read
//! outcomes as a result consumer would.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};

use super::names::RESULTS_EXCHANGE;

/// An exclusive queue bound to the results exchange, deleted once the tap is dropped.
pub struct ResultsTap {
    consumer: Consumer,
}

impl ResultsTap {
    /// Subscribes to every result whose routing key matches `pattern` (e.g. `*.shop`).
    pub async fn open(conn: &Connection, pattern: &str) -> lapin::Result<Self> {
        Self::open_keys(conn, &[pattern]).await
    }

    /// Subscribes to every result whose routing key matches one of `patterns`.
    pub async fn open_keys(conn: &Connection, patterns: &[&str]) -> lapin::Result<Self> {
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                "".into(),
                // Auto-delete as well: an exclusive queue alone lives as long as its connection,
                // and a long-lived one (the benchmark's) would keep every dropped tap's queue
                // filling with every later result.
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        for pattern in patterns {
            ch.queue_bind(
                q.name().clone(),
                RESULTS_EXCHANGE.into(),
                (*pattern).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "tap".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self { consumer })
    }

    /// The next result as JSON, or `None` if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<serde_json::Value> {
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        serde_json::from_slice(&delivery.data).ok()
    }

    /// Collects results until `count` arrived or `wait` passed without a new one.
    pub async fn collect(&mut self, count: usize, wait: Duration) -> Vec<serde_json::Value> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.next(wait).await {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }
}
