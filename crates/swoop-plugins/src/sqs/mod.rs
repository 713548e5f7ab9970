//! AWS SQS: `io.kestra.plugin.aws.sqs.RealtimeTrigger`, one execution per message of a queue.
//!
//! - [`config`]: the trigger's properties (Kestra's `queueUrl`, `region`, `accessKeyId`,
//!   `secretKeyId`, `sessionToken`, `endpointOverride`, `waitTime`, `maxNumberOfMessage`,
//!   `visibilityTimeout`, `clientRetryMaxAttempts`, `serdeType`), checked when the flow is
//!   built.
//! - [`source`]: the consumer (aws-sdk-sqs, long polling, deletes in batches), as a
//!   [`swoop_core::realtime::RealtimeSource`].
//!
//! Delivery is at least once and creates no duplicate: a message is deleted only once its
//! execution is stored; a message never deleted (crash, lost connection) becomes visible again
//! after `visibilityTimeout`, and its `MessageId` (the dedup key) makes the second receive
//! create nothing new.
//!
//! The queue must exist; the trigger does not create it. Outputs: `data` (the body, as text or
//! parsed JSON), `messageId`, `groupId` and `deduplicationId` (FIFO queues), `attributes` (the
//! message attributes: text, or base64 for binary ones) and `systemAttributes`. On FIFO queues,
//! `ordering: KEY` runs one message group's executions one after another. Not supported yet:
//! the STS role properties (`stsRoleArn` …).

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{SerdeType, SqsTriggerConfig};
pub use source::SqsSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.aws.sqs.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added by
/// the registry).
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("queueUrl", PropType::String),
    PropSpec::optional("region", PropType::String),
    PropSpec::optional("accessKeyId", PropType::String),
    PropSpec::optional("secretKeyId", PropType::String),
    PropSpec::optional("sessionToken", PropType::String),
    PropSpec::optional("endpointOverride", PropType::String),
    PropSpec::optional("waitTime", PropType::String),
    PropSpec::optional("maxNumberOfMessage", PropType::Int),
    PropSpec::optional("visibilityTimeout", PropType::String),
    PropSpec::optional("clientRetryMaxAttempts", PropType::Int),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
    PropSpec::optional("stsRoleArn", PropType::String),
    PropSpec::optional("stsRoleExternalId", PropType::String),
    PropSpec::optional("stsRoleSessionName", PropType::String),
    PropSpec::optional("stsRoleSessionDuration", PropType::String),
    PropSpec::optional("stsEndpointOverride", PropType::String),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<SqsSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for SqsSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(SqsSource::new(SqsTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::realtime::{DEFAULT_MAX_IN_FLIGHT, Ordering, RealtimeSettings};

    fn parse(trigger: &str) -> RealtimeSettings {
        let (type_name, settings) =
            crate::realtime::test_flows::parse(super::REALTIME_TRIGGER, trigger);
        assert_eq!(type_name, super::REALTIME_TRIGGER);
        settings
    }

    fn errors(trigger: &str) -> Vec<String> {
        crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
    }

    #[test]
    fn kestras_example_parses() {
        let settings = parse(
            "    accessKeyId: \"{{ secret('AWS_ACCESS_KEY_ID') }}\"\n    secretKeyId: \"{{ secret('AWS_SECRET_ACCESS_KEY') }}\"\n    region: \"{{ secret('AWS_DEFAULT_REGION') }}\"\n    queueUrl: https://sqs.eu-central-1.amazonaws.com/000000000000/test-queue\n",
        );
        assert_eq!(settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        let settings = parse(
            "    queueUrl: http://127.0.0.1:5000/123456789012/orders\n    endpointOverride: http://127.0.0.1:5000\n    region: us-east-1\n    serdeType: JSON\n    waitTime: PT1S\n    maxNumberOfMessage: 10\n    ordering: KEY\n",
        );
        assert_eq!(settings.ordering, Ordering::Key);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    region: us-east-1\n");
        assert!(e[0].contains("`queueUrl`"), "{e:?}");
        let e = errors("    queueUrl: q\n    maxNumberOfMessage: 50\n");
        assert!(e[0].contains("1 to 10"), "{e:?}");
        let e = errors("    queueUrl: q\n    stsRoleArn: arn\n");
        assert!(e[0].contains("not supported yet"), "{e:?}");
        let e = errors("    queueUrl: q\n    autoDelete: false\n");
        assert!(e[0].contains("unknown property `autoDelete`"), "{e:?}");
    }
}
