//! The trigger's properties (Kestra's `queueUrl`, `region`, `accessKeyId`, `secretKeyId`,
//! `sessionToken`, `endpointOverride`, `waitTime`, `maxNumberOfMessage`, `visibilityTimeout`,
//! `clientRetryMaxAttempts`, `serdeType`), checked when the flow is built. The address and
//! credential properties may be templates (`{{ secret('AWS_ACCESS_KEY_ID') }}`), rendered each
//! time the trigger connects.

use std::time::Duration;

use crate::props::{DynamicText, optional_dynamic, present, scalar};
pub use crate::props::{SERDE_TYPE_NAMES, SerdeType};
use serde_json::Value;

/// How long one `ReceiveMessage` call waits for messages by default (SQS long polling; 20 s is
/// SQS's maximum and Kestra's default).
pub const DEFAULT_WAIT_TIME: Duration = Duration::from_secs(20);
/// Messages per `ReceiveMessage` call by default (Kestra's default).
pub const DEFAULT_MAX_NUMBER_OF_MESSAGE: u8 = 5;
/// How long a received message stays hidden from other consumers by default, in seconds.
pub const DEFAULT_VISIBILITY_TIMEOUT_SECONDS: u32 = 30;
/// Attempts per SQS call by default (the SDK's standard retry strategy).
pub const DEFAULT_CLIENT_RETRY_MAX_ATTEMPTS: u32 = 3;

/// Kestra's STS role properties, not supported yet.
const STS_PROPERTIES: &[&str] = &[
    "stsRoleArn",
    "stsRoleExternalId",
    "stsRoleSessionName",
    "stsRoleSessionDuration",
    "stsEndpointOverride",
];

/// A checked SQS realtime trigger.
#[derive(Debug, Clone)]
pub struct SqsTriggerConfig {
    /// The queue (it must exist: the trigger does not create it).
    pub queue_url: DynamicText,
    /// The region; when unset, the one in an `sqs.REGION.amazonaws.com` queue URL, else the
    /// SDK's default (`AWS_REGION`, the profile …).
    pub region: Option<DynamicText>,
    /// Static credentials; when unset, the SDK's default credential chain (environment,
    /// profile, web identity, container and instance metadata).
    pub credentials: Option<StaticCredentials>,
    /// Another endpoint than AWS's (LocalStack, moto, an SQS-compatible service).
    pub endpoint_override: Option<DynamicText>,
    /// How long one `ReceiveMessage` call waits for messages (0 to 20 s, whole seconds).
    pub wait_time: Duration,
    /// Messages per `ReceiveMessage` call (1 to 10).
    pub max_number_of_message: u8,
    /// How long a received message stays hidden from other consumers (0 to 43,200 s).
    pub visibility_timeout_seconds: u32,
    /// Attempts per SQS call (the SDK's standard retry strategy).
    pub client_retry_max_attempts: u32,
    pub serde_type: SerdeType,
}

/// `accessKeyId`, `secretKeyId` and the optional `sessionToken`.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: DynamicText,
    pub secret_key_id: DynamicText,
    pub session_token: Option<DynamicText>,
}

impl SqsTriggerConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<SqsTriggerConfig, String> {
        if let Some(sts) = STS_PROPERTIES.iter().find(|p| present(v, p).is_some()) {
            return Err(format!(
                "`{sts}`: assuming an IAM role through STS is not supported yet; give `accessKeyId` and `secretKeyId`, or leave them out to use the default credential chain (which follows AWS_ROLE_ARN with a web identity token)"
            ));
        }
        let queue_url = optional_dynamic(v, "queueUrl")?.ok_or(
            "`queueUrl` (such as `https://sqs.eu-west-1.amazonaws.com/123456789012/orders`) is required",
        )?;
        if queue_url.as_written().trim().is_empty() {
            return Err("`queueUrl` is empty".into());
        }
        let access_key_id = optional_dynamic(v, "accessKeyId")?;
        let secret_key_id = optional_dynamic(v, "secretKeyId")?;
        let session_token = optional_dynamic(v, "sessionToken")?;
        let credentials = match (access_key_id, secret_key_id) {
            (Some(access_key_id), Some(secret_key_id)) => Some(StaticCredentials {
                access_key_id,
                secret_key_id,
                session_token,
            }),
            (None, None) if session_token.is_some() => {
                return Err("`sessionToken` needs `accessKeyId` and `secretKeyId`".into());
            }
            (None, None) => None,
            (Some(_), None) => return Err("`accessKeyId` needs `secretKeyId`".into()),
            (None, Some(_)) => return Err("`secretKeyId` needs `accessKeyId`".into()),
        };
        let wait_time = match present(v, "waitTime") {
            None => DEFAULT_WAIT_TIME,
            Some(w) => seconds_duration(w, "waitTime")?,
        };
        if wait_time > Duration::from_secs(20) {
            return Err(format!(
                "`waitTime` is at most PT20S (SQS's longest poll), got {}s",
                wait_time.as_secs()
            ));
        }
        let max_number_of_message = match present(v, "maxNumberOfMessage") {
            None => DEFAULT_MAX_NUMBER_OF_MESSAGE,
            Some(n) => scalar(n, "maxNumberOfMessage")?
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    format!("`maxNumberOfMessage` must be 1 to 10 (SQS's limit per call), got {n}")
                })?,
        };
        let visibility_timeout_seconds = match present(v, "visibilityTimeout") {
            None => DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
            Some(t) => {
                let seconds = seconds_duration(t, "visibilityTimeout")?.as_secs();
                u32::try_from(seconds)
                    .ok()
                    .filter(|s| *s <= 43_200)
                    .ok_or_else(|| {
                        format!(
                            "`visibilityTimeout` is at most 12 hours (43200 s), got {seconds} s"
                        )
                    })?
            }
        };
        let client_retry_max_attempts = match present(v, "clientRetryMaxAttempts") {
            None => DEFAULT_CLIENT_RETRY_MAX_ATTEMPTS,
            Some(n) => scalar(n, "clientRetryMaxAttempts")?
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    format!("`clientRetryMaxAttempts` must be a positive integer, got {n}")
                })?,
        };
        let serde_type = match present(v, "serdeType") {
            Some(s) => SerdeType::parse(&scalar(s, "serdeType")?)?,
            None => SerdeType::String,
        };
        Ok(SqsTriggerConfig {
            queue_url,
            region: optional_dynamic(v, "region")?,
            credentials,
            endpoint_override: optional_dynamic(v, "endpointOverride")?,
            wait_time,
            max_number_of_message,
            visibility_timeout_seconds,
            client_retry_max_attempts,
            serde_type,
        })
    }
}

/// Whole seconds, written as a number of seconds or an ISO-8601 duration (`PT20S`).
fn seconds_duration(v: &Value, what: &str) -> Result<Duration, String> {
    let text = scalar(v, what)?;
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => swoop_core::duration::parse_duration(text)
            .map_err(|e| format!("`{what}` must be seconds or a duration such as PT20S: {e}"))?,
    };
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "`{what}` must be whole seconds (SQS counts in seconds), got `{text}`"
        ));
    }
    Ok(duration)
}

/// The region of an AWS queue URL (`https://sqs.eu-west-1.amazonaws.com/…` → `eu-west-1`).
pub fn region_of_queue_url(url: &str) -> Option<&str> {
    let host = url.split_once("://")?.1.split(['/', ':']).next()?;
    let rest = host.strip_prefix("sqs.")?;
    let (region, domain) = rest.split_once('.')?;
    (domain.starts_with("amazonaws.") && !region.is_empty()).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": "io.kestra.plugin.aws.sqs.RealtimeTrigger",
            "queueUrl": "https://sqs.eu-central-1.amazonaws.com/000000000000/test-queue",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        SqsTriggerConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> SqsTriggerConfig {
        SqsTriggerConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(json!({}));
        assert_eq!(c.wait_time, Duration::from_secs(20));
        assert_eq!(c.max_number_of_message, 5);
        assert_eq!(c.visibility_timeout_seconds, 30);
        assert_eq!(c.client_retry_max_attempts, 3);
        assert_eq!(c.serde_type, SerdeType::String);
        assert!(c.credentials.is_none());
        assert!(c.region.is_none());
        assert!(c.endpoint_override.is_none());
    }

    #[test]
    fn every_property() {
        let c = ok(json!({
            "accessKeyId": "{{ secret('AWS_ACCESS_KEY_ID') }}",
            "secretKeyId": "{{ secret('AWS_SECRET_ACCESS_KEY') }}",
            "sessionToken": "token",
            "region": "eu-central-1",
            "endpointOverride": "http://127.0.0.1:5000",
            "waitTime": "PT5S",
            "maxNumberOfMessage": 10,
            "visibilityTimeout": 60,
            "clientRetryMaxAttempts": "5",
            "serdeType": "JSON",
        }));
        let credentials = c.credentials.unwrap();
        assert_eq!(
            credentials.access_key_id.as_written(),
            "{{ secret('AWS_ACCESS_KEY_ID') }}"
        );
        assert_eq!(
            credentials
                .session_token
                .unwrap()
                .resolve("sessionToken")
                .unwrap(),
            "token"
        );
        assert_eq!(c.wait_time, Duration::from_secs(5));
        assert_eq!(c.max_number_of_message, 10);
        assert_eq!(c.visibility_timeout_seconds, 60);
        assert_eq!(c.client_retry_max_attempts, 5);
        assert_eq!(c.serde_type, SerdeType::Json);
        assert_eq!(
            ok(json!({"visibilityTimeout": "PT2M"})).visibility_timeout_seconds,
            120
        );
        assert_eq!(ok(json!({"waitTime": 0})).wait_time, Duration::ZERO);
    }

    #[test]
    fn problems() {
        assert!(err(json!({"queueUrl": null})).contains("`queueUrl`"));
        assert!(err(json!({"queueUrl": " "})).contains("empty"));
        assert!(err(json!({"queueUrl": "{{ oops"})).starts_with("`queueUrl`: "));
        assert!(err(json!({"accessKeyId": "a"})).contains("needs `secretKeyId`"));
        assert!(err(json!({"secretKeyId": "a"})).contains("needs `accessKeyId`"));
        assert!(err(json!({"sessionToken": "a"})).contains("needs `accessKeyId`"));
        assert!(err(json!({"waitTime": "PT21S"})).contains("at most PT20S"));
        assert!(err(json!({"waitTime": "PT0.5S"})).contains("whole seconds"));
        assert!(err(json!({"waitTime": "soon"})).contains("duration"));
        assert!(err(json!({"maxNumberOfMessage": 11})).contains("1 to 10"));
        assert!(err(json!({"maxNumberOfMessage": 0})).contains("1 to 10"));
        assert!(err(json!({"visibilityTimeout": 50000})).contains("12 hours"));
        assert!(err(json!({"clientRetryMaxAttempts": 0})).contains("positive"));
        assert!(err(json!({"serdeType": "AVRO"})).contains("STRING or JSON"));
        assert!(err(json!({"stsRoleArn": "arn:aws:iam::1:role/x"})).contains("not supported yet"));
    }

    #[test]
    fn regions_come_from_aws_queue_urls() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-central-1.amazonaws.com/000000000000/q"),
            Some("eu-central-1")
        );
        assert_eq!(
            region_of_queue_url("https://sqs.cn-north-1.amazonaws.com.cn/1/q"),
            Some("cn-north-1")
        );
        assert_eq!(region_of_queue_url("http://127.0.0.1:5000/123/q"), None);
        assert_eq!(region_of_queue_url("https://queue.amazonaws.com/1/q"), None);
        assert_eq!(region_of_queue_url("not a url"), None);
    }
}
