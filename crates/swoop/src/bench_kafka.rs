//! `swoop bench kafka`: Kafka records → executions, end to end, against a running broker.
//!
//! For each rate (records/s, or flat out), it produces records to a fresh topic. Each record
//! carries its send time in microseconds, which is finer than the Kafka timestamp's
//! milliseconds. The records are consumed at the same time by:
//! - swoop, through `io.kestra.plugin.kafka.RealtimeTrigger` on a one-Log-task flow, with the
//!   engine in this process on a SQLite store;
//! - a bare rdkafka consumer with the same client settings: the broker's floor.
//!
//! It prints, per rate, latency percentiles from send to the execution's RUNNING and to its
//! SUCCESS, the floor's percentiles, the sustained executions/s and the peak RSS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use swoop_core::State;
use swoop_store::SyncMode;

use crate::bench::{peak_rss_mib, percentile};

#[derive(clap::Args)]
pub struct KafkaBenchArgs {
    /// The broker (e.g. 127.0.0.1:9092).
    #[arg(long)]
    bootstrap: String,
    /// Records per run.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Rates to run, in records/s; 0 means flat out.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 5000, 0])]
    rates: Vec<u64>,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// The consumers' fetch.wait.max.ms (swoop's default is 10).
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u64,
    /// The trigger's maxInFlight.
    #[arg(long, default_value_t = 1000)]
    max_in_flight: usize,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn flow(args: &KafkaBenchArgs, topic: &str) -> String {
    format!(
        r#"id: kafka-bench
namespace: swoop.bench.kafka
triggers:
  - id: records
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: {topic}
    groupId: swoop-bench-{topic}
    maxInFlight: {max_in_flight}
    properties:
      bootstrap.servers: "{bootstrap}"
      fetch.wait.max.ms: {fetch_wait}
      auto.offset.reset: earliest
    valueDeserializer: JSON
tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: "record {{{{ trigger.offset }}}}"
"#,
        max_in_flight = args.max_in_flight,
        bootstrap = args.bootstrap,
        fetch_wait = args.fetch_wait_ms,
    )
}

fn line(name: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    println!(
        "  {name:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   p99.9 {:>7.2} ms   (n={})",
        percentile(samples, 50.0),
        percentile(samples, 99.0),
        percentile(samples, 99.9),
        samples.len()
    );
}

/// The bare consumer: reads `n` records and returns send→receive latencies in ms.
async fn floor(args: &KafkaBenchArgs, topic: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("floor-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", args.fetch_wait_ms.to_string())
        .set("fetch.min.bytes", "1")
        .create()
        .context("floor consumer")?;
    consumer.subscribe(&[topic]).context("floor subscribe")?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("the floor consumer got nothing for 60 s")??;
        let received = now_us();
        if let Some(sent) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v["sent_us"].as_u64())
        {
            out.push(received.saturating_sub(sent) as f64 / 1000.0);
        }
    }
    Ok(out)
}

/// Creates `topic` with `partitions` partitions (replication 1).
pub(crate) async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("create topic")?;
    Ok(())
}

/// Waits until `n` executions have ended, counted from the engine's events (the bench does not
/// poll the store while it measures). Callers spawn it as soon as they subscribe, so that it
/// runs as a task of the runtime beside the engine's own (not on `block_on`'s thread, which
/// each of an execution's four events would have to wake) and keeps up from the start (the
/// channel holds 65,536 events); one deadline covers it all.
pub(crate) async fn wait_ended(
    mut events: tokio::sync::broadcast::Receiver<swoop_engine::ExecutionEvent>,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut ended = 0usize;
    let count = async {
        while ended < n {
            match events.recv().await {
                Ok(ev) if ev.state.is_terminal() => ended += 1,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    anyhow::bail!("the bench's event listener lagged by {n} events")
                }
                Err(e) => anyhow::bail!("engine events: {e}"),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, count).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("only {ended} of {n} executions ended in {timeout:?}"),
    }
}

pub async fn run(args: KafkaBenchArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .context("admin client")?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        // A 1 ms linger lets the producer batch at high rates: per-record produce requests
        // saturate tansu long before its consumers do. Latency is measured from before the send,
        // so the linger counts against swoop and the floor alike.
        .set("linger.ms", "1")
        .create()
        .context("producer")?;
    println!(
        "swoop bench kafka: {} records per run, {} partitions, fetch.wait.max.ms={}, maxInFlight={}",
        args.records, args.partitions, args.fetch_wait_ms, args.max_in_flight
    );
    for &rate in &args.rates {
        let topic = format!(
            "bench-{}-{}",
            if rate == 0 {
                "max".to_string()
            } else {
                rate.to_string()
            },
            now_us()
        );
        create_topic(&admin, &topic, args.partitions).await?;
        let scratch = tempfile::tempdir()?;
        let engine = crate::start_engine(scratch.path(), SyncMode::Normal).await?;
        let ended = tokio::spawn(wait_ended(
            engine.subscribe(),
            args.records,
            Duration::from_secs(300),
        ));
        engine.put_flow(&flow(&args, &topic)).await?;
        let floor_task = {
            let args_bootstrap = args.bootstrap.clone();
            let topic = topic.clone();
            let n = args.records;
            let fetch = args.fetch_wait_ms;
            tokio::spawn(async move {
                let a = KafkaBenchArgs {
                    bootstrap: args_bootstrap,
                    records: n,
                    rates: vec![],
                    partitions: 0,
                    fetch_wait_ms: fetch,
                    max_in_flight: 0,
                };
                floor(&a, &topic, n).await
            })
        };
        // Let both consumers join before producing, so latency is not startup time.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let started = Instant::now();
        let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
        let mut deliveries = Vec::with_capacity(args.records);
        for i in 0..args.records {
            if let Some(iv) = interval {
                let due = started + iv.mul_f64(i as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let payload = format!(r#"{{"i": {i}, "sent_us": {}}}"#, now_us());
            let key = i.to_string();
            let record = FutureRecord::to(&topic).payload(&payload).key(&key);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for d in deliveries {
            d.await.context("delivery")?.map_err(|(e, _)| e)?;
        }
        let produced_in = started.elapsed();

        // Wait until every record's execution ended: counted from the engine's events, so the
        // bench does not poll the store while it measures.
        ended.await.context("the bench's event listener")??;
        engine.store().flush().await?;
        let drained_in = started.elapsed();
        let mut to_created = Vec::new();
        let mut to_running = Vec::new();
        let mut to_end = Vec::new();
        let mut first_created = None;
        let mut last_end = None;
        for e in &crate::bench::all_executions(engine.store().as_ref(), "swoop.bench.kafka").await?
        {
            let Some(sent) = e
                .trigger
                .as_ref()
                .and_then(|t| t.variables.get("value"))
                .and_then(|v| v["sent_us"].as_u64())
            else {
                continue;
            };
            let at = |s: State| {
                e.state
                    .histories
                    .iter()
                    .find(|h| h.state == s)
                    .map(|h| h.date.timestamp_micros() as u64)
            };
            if let Some(c) = at(State::Created) {
                to_created.push(c.saturating_sub(sent) as f64 / 1000.0);
            }
            if let Some(r) = at(State::Running) {
                to_running.push(r.saturating_sub(sent) as f64 / 1000.0);
            }
            if let Some(end) = e.state.end_date() {
                to_end.push((end.timestamp_micros() as u64).saturating_sub(sent) as f64 / 1000.0);
                last_end = last_end.max(Some(end));
            }
            let created = e.state.histories[0].date;
            first_created = Some(
                first_created.map_or(created, |f: chrono::DateTime<chrono::Utc>| f.min(created)),
            );
        }
        let mut floor_lat = floor_task.await??;
        let busy = match (first_created, last_end) {
            (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
            _ => drained_in,
        };
        println!(
            "\nrate {}: produced {} records in {:.2} s; all executions ended after {:.2} s",
            if rate == 0 {
                "flat out".to_string()
            } else {
                format!("{rate}/s")
            },
            args.records,
            produced_in.as_secs_f64(),
            drained_in.as_secs_f64()
        );
        line("bare consumer (floor)", &mut floor_lat);
        line("swoop: send → CREATED", &mut to_created);
        line("swoop: send → RUNNING", &mut to_running);
        line("swoop: send → SUCCESS", &mut to_end);
        println!(
            "  sustained: {:.0} executions/s (first creation to last end)",
            args.records as f64 / busy.as_secs_f64().max(1e-9)
        );
        engine.shutdown().await;
    }
    if let Some(rss) = peak_rss_mib() {
        println!("\npeak RSS (whole process): {rss:.0} MiB");
    }
    Ok(())
}
