//! The subscription consumer behind the realtime trigger, as a [`RealtimeSource`].
//!
//! Each connection renders the dynamic properties, builds the credentials (anonymous for the
//! emulator), checks the subscription (creating it on the topic when `autoCreateSubscription`
//! is on), then opens a streaming pull (google-cloud-pubsub's `Subscriber`, which extends the
//! leases of the messages it handed out until they are acknowledged):
//!
//! - `run` reads the stream and emits every message (waiting for an in-flight slot); at most
//!   [`MAX_OUTSTANDING`] messages are leased at once;
//! - an event's ack acknowledges its message (`Handler::ack`) once the runtime has stored the
//!   execution; a released event (the trigger stopped first) is nacked (its ack deadline set to
//!   0), and Pub/Sub delivers it again at once; after a crash, the leases run out and Pub/Sub
//!   delivers the messages again;
//! - on stop, `run` shuts the stream down, which waits for the last acknowledgements;
//! - `run` asks for the subscription every [`PROBE_INTERVAL`]: the client library retries a
//!   broken stream by itself, silently, so the probe is what turns an outage into
//!   [`SourceError::Transient`] — the trigger's status shows it and the runtime reconnects
//!   with backoff.
//!
//! Every Pub/Sub message has a `messageId`; with its `publishTime` it is the event's dedup key:
//! a message delivered again after a crash (its execution stored, its ack lost) creates
//! nothing new.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};

use super::config::{EMULATOR_HOST_VARIABLE, PubSubTriggerConfig, SerdeType, full_name};
use crate::props::error_chain;

/// Messages leased at once at most (the stream's flow control). The client library sends acks
/// every 100 ms, and an acknowledged message stays leased until then: this bounds throughput at
/// about ten times this figure per second.
pub const MAX_OUTSTANDING: i64 = 1000;
/// How long connecting (credentials, the subscription check) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the subscription is asked for, to notice an outage the stream hides.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How far a lease is extended at a time: after a crash, Pub/Sub delivers the messages that
/// were leased again within about this long (10 s is the library's minimum).
pub const LEASE_EXTENSION: Duration = Duration::from_secs(10);

/// A configured Pub/Sub realtime trigger.
pub struct PubSubSource {
    config: PubSubTriggerConfig,
}

/// Where and how to connect, the dynamic properties rendered.
struct Target {
    endpoint: Option<String>,
    credentials: Credentials,
    topic: String,
    subscription: String,
}

impl PubSubSource {
    pub fn new(config: PubSubTriggerConfig) -> Self {
        PubSubSource { config }
    }

    pub fn config(&self) -> &PubSubTriggerConfig {
        &self.config
    }

    fn target(&self) -> Result<Target, SourceError> {
        let config = &self.config;
        let fatal = SourceError::Fatal;
        let emulator_host = match &config.emulator_host {
            Some(host) => Some(host.resolve("emulatorHost").map_err(fatal)?),
            None => std::env::var(EMULATOR_HOST_VARIABLE)
                .ok()
                .filter(|h| !h.trim().is_empty()),
        };
        let service_account = match &config.service_account {
            Some(key) => {
                let key = key.resolve("serviceAccount").map_err(fatal)?;
                Some(serde_json::from_str::<Value>(&key).map_err(|e| {
                    fatal(format!(
                        "`serviceAccount` is not a service account key (JSON): {e}"
                    ))
                })?)
            }
            None => None,
        };
        let project = match &config.project_id {
            Some(project) => Some(project.resolve("projectId").map_err(fatal)?),
            None => service_account
                .as_ref()
                .and_then(|key| key["project_id"].as_str().map(str::to_string))
                .or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok()),
        };
        let topic = full_name(
            project.as_deref(),
            "topics",
            &config.topic.resolve("topic").map_err(fatal)?,
        )
        .map_err(|e| fatal(format!("`topic`: {e}")))?;
        let subscription = full_name(
            project.as_deref(),
            "subscriptions",
            &config.subscription.resolve("subscription").map_err(fatal)?,
        )
        .map_err(|e| fatal(format!("`subscription`: {e}")))?;
        let credentials = match &emulator_host {
            Some(_) => credentials::anonymous::Builder::new().build(),
            None => self.credentials(service_account)?,
        };
        Ok(Target {
            endpoint: emulator_host.map(|host| format!("http://{}", host.trim())),
            credentials,
            topic,
            subscription,
        })
    }

    fn credentials(&self, service_account: Option<Value>) -> Result<Credentials, SourceError> {
        let config = &self.config;
        let scopes = config.scopes.clone();
        let base = match service_account {
            Some(key) => credentials::service_account::Builder::new(key)
                .with_access_specifier(credentials::service_account::AccessSpecifier::from_scopes(
                    scopes.clone(),
                ))
                .build(),
            None => credentials::Builder::default()
                .with_scopes(scopes.clone())
                .build(),
        }
        .map_err(|e| {
            SourceError::Fatal(format!(
                "Pub/Sub credentials: {e} (give `serviceAccount`, or set up Application Default Credentials)"
            ))
        })?;
        match &config.impersonated_service_account {
            None => Ok(base),
            Some(principal) => {
                let principal = principal
                    .resolve("impersonatedServiceAccount")
                    .map_err(SourceError::Fatal)?;
                credentials::impersonated::Builder::from_source_credentials(base)
                    .with_target_principal(principal)
                    .with_scopes(scopes)
                    .build()
                    .map_err(|e| SourceError::Fatal(format!("`impersonatedServiceAccount`: {e}")))
            }
        }
    }
}

fn transient(subscription: &str, what: &str, e: impl std::error::Error + 'static) -> SourceError {
    SourceError::Transient(format!(
        "Pub/Sub {subscription}: {what}: {}",
        error_chain(&e)
    ))
}

fn code(e: &google_cloud_pubsub::Error) -> Option<Code> {
    e.status().map(|s| s.code)
}

/// Checks the subscription, creating it on the topic when asked to.
async fn ensure_subscription(
    admin: &SubscriptionAdmin,
    target: &Target,
    auto_create: bool,
) -> Result<(), SourceError> {
    let subscription = &target.subscription;
    let found = admin
        .get_subscription()
        .set_subscription(subscription.clone())
        .send()
        .await;
    match found {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some(Code::NotFound) && auto_create => {
            let created = admin
                .create_subscription()
                .set_name(subscription.clone())
                .set_topic(target.topic.clone())
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(subscription = %subscription, topic = %target.topic, "pubsub trigger: created the subscription");
                    Ok(())
                }
                Err(e) if code(&e) == Some(Code::AlreadyExists) => Ok(()),
                Err(e) => Err(transient(
                    subscription,
                    &format!(
                        "cannot create the subscription on `{}` (does the topic exist?)",
                        target.topic
                    ),
                    e,
                )),
            }
        }
        Err(e) if code(&e) == Some(Code::NotFound) => Err(transient(
            subscription,
            "the subscription does not exist (create it, or set `autoCreateSubscription: true`)",
            e,
        )),
        Err(e) if code(&e) == Some(Code::InvalidArgument) => Err(SourceError::Fatal(format!(
            "Pub/Sub {subscription}: the name is refused: {e}"
        ))),
        Err(e) => Err(transient(subscription, "cannot read the subscription", e)),
    }
}

#[async_trait]
impl RealtimeSource for PubSubSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let target = self.target()?;
        let subscription = target.subscription.clone();
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut admin =
                SubscriptionAdmin::builder().with_credentials(target.credentials.clone());
            let mut subscriber = Subscriber::builder().with_credentials(target.credentials.clone());
            if let Some(endpoint) = &target.endpoint {
                admin = admin.with_endpoint(endpoint.clone());
                subscriber = subscriber.with_endpoint(endpoint.clone());
            }
            let admin = admin
                .build()
                .await
                .map_err(|e| transient(&subscription, "cannot build the admin client", e))?;
            ensure_subscription(&admin, &target, self.config.auto_create_subscription).await?;
            let subscriber = subscriber
                .build()
                .await
                .map_err(|e| transient(&subscription, "cannot build the subscriber", e))?;
            Ok::<_, SourceError>((admin, subscriber))
        })
        .await
        .map_err(|_| {
            SourceError::Transient(format!(
                "Pub/Sub {subscription}: connecting took longer than {CONNECT_TIMEOUT:?}"
            ))
        })??;
        let (admin, subscriber) = opened;
        let mut stream = subscriber
            .subscribe(subscription.clone())
            .set_max_outstanding_messages(MAX_OUTSTANDING)
            .set_max_lease_extension(LEASE_EXTENSION)
            .build();
        ctx.connected();
        let result = read(
            &ctx,
            &mut stream,
            &admin,
            &subscription,
            self.config.serde_type,
        )
        .await;
        // Stops reading and waits for the acknowledgements of what was emitted.
        if result.is_ok()
            && !crate::realtime::settle_until_done(stream.shutdown_token().shutdown()).await
        {
            tracing::warn!(subscription = %subscription, "pubsub trigger: events not settled in time; Pub/Sub will deliver them again");
        }
        result
    }
}

/// Emits the stream's messages until the trigger stops (Ok), the stream ends or the probe
/// notices an outage (Err).
async fn read(
    ctx: &SourceContext,
    stream: &mut google_cloud_pubsub::subscriber::MessageStream,
    admin: &SubscriptionAdmin,
    subscription: &str,
    serde_type: SerdeType,
) -> Result<(), SourceError> {
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = ctx.stopped() => return Ok(()),
            next = stream.next() => match next {
                Some(Ok((message, handler))) => {
                    let ack = Ack::new(move |outcome| {
                        if outcome.is_recorded() {
                            handler.ack()
                        } else {
                            handler.nack()
                        }
                    });
                    if ctx.emit(event(serde_type, message, ack)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(transient(subscription, "the stream stopped", e)),
                None => return Err(SourceError::Transient(format!(
                    "Pub/Sub {subscription}: the stream ended"
                ))),
            },
            _ = probe.tick() => {
                let asked = tokio::time::timeout(
                    PROBE_INTERVAL,
                    admin.get_subscription().set_subscription(subscription).send(),
                )
                .await;
                match asked {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(transient(subscription, "the subscription does not answer", e)),
                    Err(_) => return Err(SourceError::Transient(format!(
                        "Pub/Sub {subscription}: the subscription did not answer within {PROBE_INTERVAL:?}"
                    ))),
                }
            }
        }
    }
}

/// The event of one message (its variables are Kestra's outputs).
fn event(serde_type: SerdeType, message: Message, ack: Ack) -> Event {
    let (data, decode_error) = serde_type.decode(&message.data, "the message");
    let ordering_key = (!message.ordering_key.is_empty()).then_some(message.ordering_key);
    let mut variables = Map::new();
    variables.insert("data".into(), data);
    variables.insert(
        "attributes".into(),
        Value::Object(
            message
                .attributes
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    variables.insert(
        "messageId".into(),
        Value::String(message.message_id.clone()),
    );
    variables.insert(
        "orderingKey".into(),
        ordering_key.clone().map_or(Value::Null, Value::String),
    );
    let publish_time = message.publish_time.map(String::from);
    variables.insert(
        "publishTime".into(),
        publish_time.clone().map_or(Value::Null, Value::String),
    );
    // Message ids are unique in a topic, but the emulator counts them from 1 again after a
    // restart: the publish time, which a redelivery keeps too, tells such messages apart.
    let dedup_key = (!message.message_id.is_empty()).then(|| match &publish_time {
        Some(time) => format!("{}@{time}", message.message_id),
        None => message.message_id.clone(),
    });
    Event {
        variables,
        dedup_key,
        key: ordering_key.clone(),
        partition: ordering_key,
        decode_error,
        execution_id: None,
        ack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_carry_kestras_outputs() {
        let message = Message::new()
            .set_data(r#"{"id": 1}"#)
            .set_attributes([("who", "me")])
            .set_message_id("m-1")
            .set_ordering_key("customer-7")
            .set_publish_time(google_cloud_wkt::Timestamp::clamp(1_700_000_000, 0));
        let e = event(SerdeType::Json, message, Ack::none());
        assert_eq!(e.variables["data"], json!({"id": 1}));
        assert_eq!(e.variables["attributes"], json!({"who": "me"}));
        assert_eq!(e.variables["messageId"], "m-1");
        assert_eq!(e.variables["orderingKey"], "customer-7");
        assert_eq!(e.variables["publishTime"], "2023-11-14T22:13:20Z");
        assert_eq!(e.dedup_key.as_deref(), Some("m-1@2023-11-14T22:13:20Z"));
        assert_eq!(e.key.as_deref(), Some("customer-7"));
    }

    #[test]
    fn undecodable_bodies() {
        let message = Message::new()
            .set_data("this is { not json")
            .set_message_id("m-2");
        let e = event(SerdeType::Json, message, Ack::none());
        assert_eq!(e.variables["data"], "this is { not json");
        assert!(e.decode_error.unwrap().contains("not valid JSON"));
        assert_eq!(e.variables["orderingKey"], Value::Null);
        assert_eq!(e.dedup_key.as_deref(), Some("m-2"));
        assert!(e.key.is_none());
    }
}
