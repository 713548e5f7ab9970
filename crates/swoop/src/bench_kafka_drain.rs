//! `swoop bench kafka-drain`: how fast swoop drains a Kafka backlog into one-Log-task
//! executions, against a hand-rolled consumer doing the same durable work per record, in the
//! same run, on the same topic.
//!
//! It produces `--records` records (flat out) to a fresh topic, then drains it twice, one
//! consumer after the other, each with its own consumer group:
//! - **hand-rolled**: an rdkafka `StreamConsumer` that, per record, parses the JSON value,
//!   writes a log line (a buffered file), inserts the record into SQLite (WAL,
//!   `synchronous=NORMAL`, as swoop's store; one autocommit insert per record), then commits
//!   the record's offset (async). Timed from its first record to its last one's commit.
//! - **swoop**: `io.kestra.plugin.kafka.RealtimeTrigger` with its default settings on a flow
//!   with one Log task, the engine in this process on a SQLite store. Timed from the first
//!   execution's creation to the last one's end.
//!
//! It prints both rates and their ratio, and the peak RSS.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use swoop_store::SyncMode;

use crate::bench::{peak_rss_mib, process_cpu};
use crate::bench_kafka::{create_topic, now_us, wait_ended};

#[derive(clap::Args)]
pub struct KafkaDrainArgs {
    /// The broker (e.g. 127.0.0.1:9092).
    #[arg(long)]
    bootstrap: String,
    /// Records in the backlog.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// The trigger's `maxInFlight` (its default when not given).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Drain with swoop only, not the hand-rolled consumer first (to profile swoop alone).
    #[arg(long)]
    swoop_only: bool,
}

fn flow(bootstrap: &str, topic: &str, max_in_flight: Option<usize>) -> String {
    let max_in_flight = max_in_flight
        .map(|n| format!("\n    maxInFlight: {n}"))
        .unwrap_or_default();
    format!(
        r#"id: kafka-drain
namespace: swoop.bench.drain
triggers:
  - id: records
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: {topic}
    groupId: swoop-drain-{topic}
    properties:
      bootstrap.servers: "{bootstrap}"
      auto.offset.reset: earliest
    valueDeserializer: JSON{max_in_flight}
tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: "record {{{{ trigger.offset }}}}"
"#
    )
}

async fn produce(args: &KafkaDrainArgs, topic: &str) -> anyhow::Result<Duration> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .context("admin client")?;
    create_topic(&admin, topic, args.partitions).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .create()
        .context("producer")?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(args.records);
    for i in 0..args.records {
        let payload = format!(
            r#"{{"i": {i}, "sent_us": {}, "customer": "c-{}"}}"#,
            now_us(),
            i % 97
        );
        let key = i.to_string();
        let record = FutureRecord::to(topic).payload(&payload).key(&key);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in deliveries {
        d.await.context("delivery")?.map_err(|(e, _)| e)?;
    }
    Ok(started.elapsed())
}

/// The CPU time this process used since `before` (the broker's is not in it).
fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(before?))
}

/// The hand-rolled consumer: returns the time from its first record to its last commit, and
/// the CPU time the process used meanwhile.
async fn hand_rolled(
    args: &KafkaDrainArgs,
    topic: &str,
) -> anyhow::Result<(Duration, Option<Duration>)> {
    let scratch = tempfile::tempdir()?;
    let db = rusqlite::Connection::open(scratch.path().join("events.db"))?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE events (topic TEXT NOT NULL, partition INTEGER NOT NULL,
             offset INTEGER NOT NULL, customer TEXT, body TEXT NOT NULL,
             PRIMARY KEY (topic, partition, offset));",
    )?;
    let mut log = std::io::BufWriter::new(std::fs::File::create(scratch.path().join("log"))?);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("hand-rolled-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("hand-rolled consumer")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    let mut insert = db.prepare(
        "INSERT OR IGNORE INTO events (topic, partition, offset, customer, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut first = None;
    let cpu = process_cpu();
    for _ in 0..args.records {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("the hand-rolled consumer got nothing for 60 s")??;
        first.get_or_insert_with(Instant::now);
        let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())
            .context("a record that is not JSON")?;
        writeln!(log, "record {} of {}", m.offset(), m.partition())?;
        insert.execute(rusqlite::params![
            m.topic(),
            m.partition(),
            m.offset(),
            value["customer"].as_str(),
            value.to_string(),
        ])?;
        consumer.commit_message(&m, CommitMode::Async)?;
    }
    log.flush()?;
    let cpu = cpu_since(cpu);
    Ok((first.map(|f| f.elapsed()).unwrap_or_default(), cpu))
}

/// swoop: returns the time from the first execution's creation to the last one's end, and the
/// CPU time the process used meanwhile (from the flow's creation).
async fn swoop(args: &KafkaDrainArgs, topic: &str) -> anyhow::Result<(Duration, Option<Duration>)> {
    let scratch = tempfile::tempdir()?;
    let engine = crate::start_engine(scratch.path(), SyncMode::Normal).await?;
    let ended = tokio::spawn(wait_ended(
        engine.subscribe(),
        args.records,
        Duration::from_secs(600),
    ));
    let cpu = process_cpu();
    engine
        .put_flow(&flow(&args.bootstrap, topic, args.max_in_flight))
        .await?;
    ended.await.context("the bench's event listener")??;
    let cpu = cpu_since(cpu);
    engine.store().flush().await?;
    let mut first_created = None;
    let mut last_end = None;
    let all = crate::bench::all_executions(engine.store().as_ref(), "swoop.bench.drain").await?;
    anyhow::ensure!(
        all.len() == args.records,
        "{} executions for {} records",
        all.len(),
        args.records
    );
    for e in &all {
        let created = e.state.histories[0].date;
        first_created =
            Some(first_created.map_or(created, |f: chrono::DateTime<chrono::Utc>| f.min(created)));
        last_end = last_end.max(e.state.end_date());
    }
    engine.shutdown().await;
    match (first_created, last_end) {
        (Some(a), Some(b)) => Ok(((b - a).to_std().unwrap_or_default(), cpu)),
        _ => anyhow::bail!("no execution ended"),
    }
}

pub async fn run(args: KafkaDrainArgs) -> anyhow::Result<()> {
    let topic = format!("drain-{}", now_us());
    let produced = produce(&args, &topic).await?;
    println!(
        "swoop bench kafka-drain: {} records on {} partitions, produced in {:.2} s",
        args.records,
        args.partitions,
        produced.as_secs_f64()
    );
    let rate = |d: Duration| args.records as f64 / d.as_secs_f64().max(1e-9);
    // This process's CPU time per record while `drain` runs (the broker's is not in it).
    let cpu_per_record = |cpu: Option<Duration>| match cpu {
        Some(cpu) => format!(
            ", {:.0} µs CPU per record",
            cpu.as_secs_f64() * 1e6 / args.records as f64
        ),
        None => String::new(),
    };
    let hand = if args.swoop_only {
        None
    } else {
        let (hand, cpu) = hand_rolled(&args, &topic).await?;
        println!(
            "  hand-rolled consumer (parse, log, SQLite insert, commit): {:>8.0} records/s ({:.2} s{})",
            rate(hand),
            hand.as_secs_f64(),
            cpu_per_record(cpu)
        );
        Some(hand)
    };
    let (ours, cpu) = swoop(&args, &topic).await?;
    println!(
        "  swoop (RealtimeTrigger defaults, one Log task):            {:>8.0} executions/s ({:.2} s{})",
        rate(ours),
        ours.as_secs_f64(),
        cpu_per_record(cpu)
    );
    if let Some(hand) = hand {
        println!("  swoop / hand-rolled: {:.2}x", rate(ours) / rate(hand));
    }
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (whole process): {rss:.0} MiB");
    }
    Ok(())
}
