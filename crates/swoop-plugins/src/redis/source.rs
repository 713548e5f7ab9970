//! The list consumer behind the realtime trigger.
//!
//! Kestra pops with `LPOP` (an element is gone before its execution exists: at most once).
//! Here every element is moved atomically into a processing list of its own trigger
//! (`<key>:swoop:processing:<consumer name>`) with `BLMOVE … LEFT RIGHT`, and removed from it
//! (`LREM <processing> 1 <element>`) only by the event's [`Ack`], once its execution is
//! durable. On every connect the processing list is recovered first: what a crash, a lost
//! connection or a dropped call left there is handed out again, before new elements (less
//! the elements this process still has in flight, which will be acknowledged).
//!
//! Redis lists carry no ids, so events have no dedup key: after a crash an element whose
//! execution was stored but not yet acknowledged makes a second execution. Duplicates are
//! possible, losses are not (at least once).
//!
//! `run` reads on its own connection: it waits with `BLMOVE` (a short block timeout, in a
//! loop), then takes up to [`BATCH`] more with one pipeline of non-blocking `LMOVE`s, and emits
//! them one by one (waiting for an in-flight slot: what was moved and is not emitted yet is at
//! most one batch). Acknowledgements go to another task ([`Settler`]), which removes them in
//! pipelines on its own connection. A released event (the trigger stopped before recording it)
//! stays in the processing list and is handed out again on the next run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError};
use async_trait::async_trait;
use serde_json::Map;
use swoop_core::realtime::{Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use crate::realtime::{Settled, Settler, unless_stopped};

use super::config::{RedisTriggerConfig, SerdeType};

/// How long one `BLMOVE` blocks (seconds) before the pump asks again.
pub const BLOCK_TIMEOUT_SECS: f64 = 1.0;
/// Elements moved per round trip at most (one `BLMOVE`, then a pipeline of `LMOVE`s).
pub const BATCH: usize = 64;
/// Acknowledgements removed per pipeline at most.
const ACK_BATCH: usize = 256;
/// How many times a batch of acknowledgements is tried before it is left to the next
/// recovery (its elements then make duplicate executions, never lost ones).
const ACK_ATTEMPTS: u32 = 20;
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the block timeout, how long a reply may take.
const RESPONSE_GRACE: Duration = Duration::from_secs(5);

/// The elements handed out by this process and not acknowledged yet, per processing list, so
/// that a reconnect does not hand them out again.
#[derive(Default)]
struct InFlight(Mutex<HashMap<Vec<u8>, usize>>);

impl InFlight {
    fn add(&self, element: &[u8]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(element.to_vec()).or_default() += 1;
    }

    fn remove(&self, element: &[u8]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(element) {
            *n -= 1;
            if *n == 0 {
                m.remove(element);
            }
        }
    }

    fn snapshot(&self) -> HashMap<Vec<u8>, usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counts an element in flight until dropped (after its `LREM`, or when its ack is dropped).
struct InFlightGuard {
    in_flight: Arc<InFlight>,
    element: Vec<u8>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.remove(&self.element);
    }
}

/// A configured Redis list trigger.
pub struct RedisSource {
    config: RedisTriggerConfig,
    client: Client,
    in_flight: Mutex<HashMap<String, Arc<InFlight>>>,
}

impl RedisSource {
    pub fn new(config: RedisTriggerConfig) -> Result<RedisSource, String> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| format!("`url` `{}`: {e}", config.display_url()))?;
        Ok(RedisSource {
            config,
            client,
            in_flight: Mutex::default(),
        })
    }

    fn in_flight(&self, processing: &str) -> Arc<InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(processing.to_string())
            .or_default()
            .clone()
    }
}

fn connection_config(response_timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
}

/// A Redis error as a [`SourceError`]: a server too old for `BLMOVE` is fatal, the rest
/// (connection refused or lost, timeouts, a key of another type …) is worth retrying.
fn source_error(url: &str, what: &str, e: &RedisError) -> SourceError {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("unknown command") {
        SourceError::Fatal(format!(
            "Redis at {url}: {what}: {text} (the trigger needs Redis 6.2 or later, for BLMOVE)"
        ))
    } else {
        SourceError::Transient(format!("Redis at {url}: {what}: {text}"))
    }
}

#[async_trait]
impl RealtimeSource for RedisSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let url = self.config.display_url();
        let key = self.config.key.clone();
        let processing = self.config.processing_key(ctx.consumer_name());
        let in_flight = self.in_flight(&processing);

        let reader_timeout = Duration::from_secs_f64(BLOCK_TIMEOUT_SECS) + RESPONSE_GRACE;
        let mut reader = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config(reader_timeout))
            .await
            .map_err(|e| source_error(&url, "cannot connect", &e))?;
        let acker = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config(RESPONSE_GRACE))
            .await
            .map_err(|e| source_error(&url, "cannot connect", &e))?;
        let recovered = recover(&mut reader, &url, &key, &processing, &in_flight).await?;
        ctx.connected();
        let backlog = (acker.clone(), key.clone());
        ctx.watch_backlog(crate::realtime::backlog_probe(move || {
            let (mut conn, key) = backlog.clone();
            async move {
                ::redis::cmd("LLEN")
                    .arg(&key)
                    .query_async::<u64>(&mut conn)
                    .await
                    .ok()
            }
        }));

        let (settler, settlements) = crate::realtime::settlements();
        let acks = tokio::spawn(ack_loop(
            self.client.clone(),
            acker,
            url.clone(),
            processing.clone(),
            settlements,
        ));
        let reading = Reading {
            serde_type: self.config.serde_type,
            in_flight,
            settler,
        };
        let result = reading
            .run(&ctx, &mut reader, &url, &key, &processing, recovered)
            .await;
        // The last acknowledgements; an element moved and not emitted stays in the processing
        // list, and is handed out on the next run.
        drop(reading);
        if result.is_ok() && !crate::realtime::settle_until_done(acks).await {
            tracing::warn!(url = %url, processing = %processing, "redis trigger: events not settled in time; their elements will be handed out again");
        }
        result
    }
}

/// What the processing list holds and this process does not have in flight: a crash, a lost
/// connection or a stop left it there; it is handed out again (the snapshot is taken first: an
/// element acknowledged meanwhile is then skipped rather than handed out twice).
async fn recover(
    reader: &mut MultiplexedConnection,
    url: &str,
    key: &str,
    processing: &str,
    in_flight: &InFlight,
) -> Result<Vec<Vec<u8>>, SourceError> {
    let mut skip = in_flight.snapshot();
    let left: Vec<Vec<u8>> = ::redis::cmd("LRANGE")
        .arg(processing)
        .arg(0)
        .arg(-1)
        .query_async(reader)
        .await
        .map_err(|e| source_error(url, "cannot read the processing list", &e))?;
    let recovered: Vec<Vec<u8>> = left
        .into_iter()
        .filter(|element| match skip.get_mut(element) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect();
    if !recovered.is_empty() {
        tracing::info!(
            key = %key,
            processing = %processing,
            count = recovered.len(),
            "redis trigger: handing out again the elements whose executions were not acknowledged"
        );
    }
    Ok(recovered)
}

/// How one run turns elements into events.
struct Reading {
    serde_type: SerdeType,
    in_flight: Arc<InFlight>,
    settler: Settler<InFlightGuard>,
}

impl Reading {
    /// Emits the recovered elements, then moves and emits new ones until the trigger stops
    /// (Ok) or Redis fails (Err).
    async fn run(
        &self,
        ctx: &SourceContext,
        conn: &mut MultiplexedConnection,
        url: &str,
        key: &str,
        processing: &str,
        recovered: Vec<Vec<u8>>,
    ) -> Result<(), SourceError> {
        for element in recovered {
            if ctx.emit(self.event(element)).await.is_err() {
                return Ok(());
            }
        }
        let mut more = ::redis::pipe();
        for _ in 0..BATCH - 1 {
            more.cmd("LMOVE")
                .arg(key)
                .arg(processing)
                .arg("LEFT")
                .arg("RIGHT");
        }
        loop {
            // Stopping during a BLMOVE: an element it moved stays in the processing list.
            let first: Result<Option<Vec<u8>>, RedisError> = match unless_stopped(
                ctx,
                ::redis::cmd("BLMOVE")
                    .arg(key)
                    .arg(processing)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .arg(BLOCK_TIMEOUT_SECS)
                    .query_async(conn),
            )
            .await
            {
                Some(first) => first,
                None => return Ok(()),
            };
            let first = match first {
                Ok(Some(element)) => element,
                Ok(None) => continue,
                Err(e) => return Err(source_error(url, "BLMOVE failed", &e)),
            };
            if ctx.emit(self.event(first)).await.is_err() {
                return Ok(());
            }
            // More may be waiting: take them in one round trip.
            let batch: Vec<Option<Vec<u8>>> = more
                .query_async(conn)
                .await
                .map_err(|e| source_error(url, "LMOVE failed", &e))?;
            for element in batch.into_iter().flatten() {
                if ctx.emit(self.event(element)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    fn event(&self, element: Vec<u8>) -> Event {
        let (value, decode_error) = self.serde_type.decode(&element, "the element");
        let mut variables = Map::new();
        variables.insert("value".into(), value);
        self.in_flight.add(&element);
        let guard = InFlightGuard {
            in_flight: self.in_flight.clone(),
            element,
        };
        Event {
            variables,
            dedup_key: None,
            key: None,
            partition: None,
            decode_error,
            // Released, or the ack task gone: the guard is dropped, and the element is handed
            // out again on the next run.
            execution_id: None,
            ack: self.settler.ack(guard),
        }
    }
}

/// Removes acknowledged elements from the processing list, in pipelines, until every event of
/// the run is settled (a released one stays there).
async fn ack_loop(
    client: Client,
    conn: MultiplexedConnection,
    url: String,
    processing: String,
    mut rx: mpsc::UnboundedReceiver<Settled<InFlightGuard>>,
) {
    let mut conn = Some(conn);
    let mut settled = Vec::with_capacity(ACK_BATCH);
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut settled, ACK_BATCH).await > 0 {
        batch.extend(settled.drain(..).filter_map(|s| match s {
            Settled::Ack(guard) => Some(guard),
            Settled::Nack(_) => None,
        }));
        if batch.is_empty() {
            continue;
        }
        let mut pipe = ::redis::pipe();
        for guard in &batch {
            pipe.cmd("LREM")
                .arg(&processing)
                .arg(1)
                .arg(&guard.element)
                .ignore();
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match conn.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await,
                None => match client
                    .get_multiplexed_async_connection_with_config(&connection_config(
                        RESPONSE_GRACE,
                    ))
                    .await
                {
                    Ok(c) => pipe.query_async::<()>(conn.insert(c)).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    conn = None;
                    if attempt >= ACK_ATTEMPTS {
                        tracing::warn!(url = %url, processing = %processing, error = %e, count = batch.len(), "redis trigger: cannot acknowledge; these elements will be handed out again on the next connect");
                        break;
                    }
                    let wait = Duration::from_millis(100 * u64::from(attempt.min(20)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bare source's speed against a running server (no engine): push, then take and
    /// acknowledge every element. `SWOOP_REDIS_URL=redis://127.0.0.1:6379/0 cargo test -p
    /// swoop-plugins --features redis bare_source -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Redis server in SWOOP_REDIS_URL"]
    async fn bare_source_throughput() {
        let url = std::env::var("SWOOP_REDIS_URL").expect("SWOOP_REDIS_URL");
        let key = format!("swoop-bare-{}", std::process::id());
        let config = RedisTriggerConfig::from_json(&json!({"url": url, "key": key})).unwrap();
        let source = RedisSource::new(config.clone()).unwrap();
        let client = Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        const N: usize = 100_000;
        for chunk in (0..N).collect::<Vec<_>>().chunks(10_000) {
            let values: Vec<String> = chunk.iter().map(|n| format!(r#"{{"n": {n}}}"#)).collect();
            let _: usize = ::redis::cmd("RPUSH")
                .arg(&key)
                .arg(values)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let started = std::time::Instant::now();
        let (ctx, mut events, stop) = SourceContext::channel("bench", 1024);
        let run = tokio::spawn(async move { source.run(ctx).await });
        for _ in 0..N {
            events
                .recv()
                .await
                .expect("an event")
                .ack
                .settle(swoop_core::realtime::Outcome::Created);
        }
        let took = started.elapsed();
        println!(
            "{N} events in {:.2} s: {:.0} events/s",
            took.as_secs_f64(),
            N as f64 / took.as_secs_f64()
        );
        // The run waits for its acknowledgements before it returns.
        stop.cancel();
        drop(events);
        run.await.expect("joins").expect("a clean stop");
        let left: usize = ::redis::cmd("LLEN")
            .arg(config.processing_key("bench"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "every element acknowledged");
    }
}
