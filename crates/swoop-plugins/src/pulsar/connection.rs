//! One TCP connection to a Pulsar broker: the CONNECT handshake (token authentication,
//! answering auth challenges), requests matched to their responses by request id, keep-alive
//! (PING/PONG both ways, and a connection that stays silent too long is dropped), and the
//! pushed commands (MESSAGE, CLOSE_CONSUMER …) handed to the consumer as [`Incoming`].
//!
//! A reader task and a writer task own the socket's halves; [`Connection`] is the handle.
//! Frames written from anywhere (an ack settled on another task) go through the writer's
//! channel, which batches them into one write. Dropping the handle ends both tasks and closes
//! the socket, so the broker forgets this connection's consumers at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::proto::{self, BaseCommand, MessageMetadata, command_type as t};

/// How long connecting (TCP and handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often swoop pings the broker.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which the connection counts as lost (two pings unanswered).
const READ_TIMEOUT: Duration = Duration::from_secs(70);
/// Frames written per flush at most.
const WRITE_BATCH: usize = 512;

/// What the broker pushes to the consumer.
#[derive(Debug)]
pub enum Incoming {
    Message {
        consumer_id: u64,
        message: proto::CommandMessage,
        metadata: Box<MessageMetadata>,
        payload: Bytes,
    },
    /// The broker closed this consumer (the topic was unloaded or moved): subscribe again.
    ConsumerClosed { consumer_id: u64, why: String },
    /// The connection ended.
    Closed { broker: String, why: String },
    /// The broker stored a message sent (SEND_RECEIPT), or refused it (SEND_ERROR).
    Receipt {
        sequence_id: u64,
        error: Option<String>,
    },
}

/// A request refused by the broker, or lost with the connection.
#[derive(Debug, Clone)]
pub struct RequestError {
    /// The broker's `ServerError` name, when it answered ERROR.
    pub server_error: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.server_error {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<BaseCommand>>>>;

fn lock(pending: &Pending) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<BaseCommand>>> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected broker.
pub struct Connection {
    /// `host:port`.
    pub broker: String,
    out: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    request_ids: AtomicU64,
    shutdown: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Connection {
    /// Connects to `broker` (`host:port`) and shakes hands; what the broker pushes goes to
    /// `incoming`.
    pub async fn connect(
        broker: &str,
        token: Option<&str>,
        incoming: mpsc::UnboundedSender<Incoming>,
    ) -> Result<Connection, String> {
        let (stream, buf) = tokio::time::timeout(CONNECT_TIMEOUT, handshake(broker, token))
            .await
            .map_err(|_| format!("no answer from {broker} within {CONNECT_TIMEOUT:?}"))??;
        let (read, write) = stream.into_split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let shutdown = CancellationToken::new();
        tokio::spawn(writer(write, out_rx, shutdown.clone()));
        tokio::spawn(reader(
            broker.to_string(),
            read,
            buf,
            out.clone(),
            pending.clone(),
            incoming,
            shutdown.clone(),
        ));
        Ok(Connection {
            broker: broker.to_string(),
            out,
            pending,
            request_ids: AtomicU64::new(1),
            shutdown,
        })
    }

    /// A request id not used yet on this connection.
    pub fn request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A sender of frames for this connection, for acks settled elsewhere.
    pub fn sender(&self) -> mpsc::UnboundedSender<Bytes> {
        self.out.clone()
    }

    /// Sends a command that has no response.
    pub fn send(&self, command: &BaseCommand) {
        let _ = self.out.send(proto::encode(command));
    }

    /// Sends a frame already encoded.
    pub fn send_frame(&self, frame: Bytes) {
        let _ = self.out.send(frame);
    }

    /// Sends the request `command` (whose request id is `request_id`) and waits for its
    /// response; an ERROR response is an `Err`.
    pub async fn request(
        &self,
        request_id: u64,
        command: &BaseCommand,
    ) -> Result<BaseCommand, RequestError> {
        self.request_frame(request_id, proto::encode(command)).await
    }

    /// [`Connection::request`] for a frame already encoded.
    pub async fn request_frame(
        &self,
        request_id: u64,
        frame: Bytes,
    ) -> Result<BaseCommand, RequestError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(request_id, tx);
        let lost = |message: String| RequestError {
            server_error: None,
            message,
        };
        if self.out.send(frame).is_err() {
            lock(&self.pending).remove(&request_id);
            return Err(lost(format!("the connection to {} is closed", self.broker)));
        }
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                return Err(lost(format!(
                    "the connection to {} closed before the answer",
                    self.broker
                )));
            }
            Err(_) => {
                lock(&self.pending).remove(&request_id);
                return Err(lost(format!(
                    "no answer from {} within {REQUEST_TIMEOUT:?}",
                    self.broker
                )));
            }
        };
        match response.error {
            Some(e) if response.r#type == t::ERROR => Err(RequestError {
                server_error: Some(proto::server_error_name(e.error)),
                message: e.message,
            }),
            _ => Ok(response),
        }
    }
}

fn connect_command(token: Option<&str>) -> BaseCommand {
    let mut command = BaseCommand::of(t::CONNECT);
    command.connect = Some(proto::CommandConnect {
        client_version: concat!("swoop-", env!("CARGO_PKG_VERSION")).into(),
        auth_method_name: token.map(|_| "token".into()),
        auth_data: token.map(|t| t.as_bytes().to_vec()),
        protocol_version: Some(proto::PROTOCOL_VERSION),
    });
    command
}

fn auth_response(token: Option<&str>) -> BaseCommand {
    let mut command = BaseCommand::of(t::AUTH_RESPONSE);
    command.auth_response = Some(proto::CommandAuthResponse {
        client_version: Some(concat!("swoop-", env!("CARGO_PKG_VERSION")).into()),
        response: Some(proto::AuthData {
            auth_method_name: Some("token".into()),
            auth_data: Some(token.unwrap_or_default().as_bytes().to_vec()),
        }),
        protocol_version: Some(proto::PROTOCOL_VERSION),
    });
    command
}

/// TCP, CONNECT, then frames until CONNECTED; returns the stream and what was read past it.
async fn handshake(broker: &str, token: Option<&str>) -> Result<(TcpStream, BytesMut), String> {
    let mut stream = TcpStream::connect(broker)
        .await
        .map_err(|e| format!("cannot connect to {broker}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let io =
        |e: std::io::Error| format!("the connection to {broker} failed during the handshake: {e}");
    stream
        .write_all(&proto::encode(&connect_command(token)))
        .await
        .map_err(io)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = proto::decode(&mut buf).map_err(|e| format!("{broker} sent {e}"))? {
            match frame.command.r#type {
                t::CONNECTED => return Ok((stream, buf)),
                t::AUTH_CHALLENGE => stream
                    .write_all(&proto::encode(&auth_response(token)))
                    .await
                    .map_err(io)?,
                t::ERROR => {
                    let e = frame.command.error.unwrap_or_default();
                    return Err(format!(
                        "{broker} refused the connection: {}: {}",
                        proto::server_error_name(e.error),
                        e.message
                    ));
                }
                other => {
                    tracing::debug!(
                        broker,
                        command = other,
                        "pulsar: ignored during the handshake"
                    )
                }
            }
        }
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(format!(
                "{broker} closed the connection during the handshake{}",
                if token.is_some() {
                    " (is the authentication token right?)"
                } else {
                    " (does it need `authenticationToken`?)"
                }
            ));
        }
    }
}

async fn writer(
    write: tokio::net::tcp::OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
    shutdown: CancellationToken,
) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let ping = proto::encode(&BaseCommand::of(t::PING));
    let mut pings = tokio::time::interval(PING_INTERVAL);
    pings.tick().await;
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
            _ = pings.tick() => ping.clone(),
        };
        let mut result = write.write_all(&first).await;
        let mut n = 1;
        while result.is_ok() && n < WRITE_BATCH {
            let Ok(frame) = frames.try_recv() else { break };
            result = write.write_all(&frame).await;
            n += 1;
        }
        if result.is_err() || write.flush().await.is_err() {
            // The reader sees the connection end too and reports it.
            shutdown.cancel();
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn reader(
    broker: String,
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    out: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    incoming: mpsc::UnboundedSender<Incoming>,
    shutdown: CancellationToken,
) {
    let pong = proto::encode(&BaseCommand::of(t::PONG));
    let why = 'read: loop {
        loop {
            let frame = match proto::decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => break 'read format!("{broker} sent {e}"),
            };
            let command = frame.command;
            if let Some(id) = command.response_request_id() {
                if let Some(waiting) = lock(&pending).remove(&id) {
                    let _ = waiting.send(command);
                }
                continue;
            }
            match command.r#type {
                t::MESSAGE => {
                    let (Some(message), Some((metadata, payload))) =
                        (command.message, frame.payload)
                    else {
                        break 'read format!("{broker} sent a MESSAGE without its payload");
                    };
                    let _ = incoming.send(Incoming::Message {
                        consumer_id: message.consumer_id,
                        message,
                        metadata: Box::new(metadata),
                        payload,
                    });
                }
                t::SEND_RECEIPT | t::SEND_ERROR => {
                    let (sequence_id, error) = match (command.send_receipt, command.send_error) {
                        (Some(r), _) => (r.sequence_id, None),
                        (None, Some(e)) => (
                            e.sequence_id,
                            Some(format!(
                                "{}: {}",
                                proto::server_error_name(e.error),
                                e.message
                            )),
                        ),
                        (None, None) => continue,
                    };
                    let _ = incoming.send(Incoming::Receipt { sequence_id, error });
                }
                t::PING => {
                    let _ = out.send(pong.clone());
                }
                t::CLOSE_CONSUMER => {
                    if let Some(c) = command.close_consumer {
                        let _ = incoming.send(Incoming::ConsumerClosed {
                            consumer_id: c.consumer_id,
                            why: "the broker closed the consumer (the topic was unloaded or moved)"
                                .into(),
                        });
                    }
                }
                t::REACHED_END_OF_TOPIC => {
                    if let Some(c) = command.reached_end_of_topic {
                        let _ = incoming.send(Incoming::ConsumerClosed {
                            consumer_id: c.consumer_id,
                            why: "the topic was terminated (reached its end)".into(),
                        });
                    }
                }
                t::AUTH_CHALLENGE => {
                    break 'read format!(
                        "{broker} asked to authenticate again; swoop reconnects to refresh the token"
                    );
                }
                other => tracing::trace!(broker = %broker, command = other, "pulsar: ignored"),
            }
        }
        let read_more = tokio::select! {
            _ = shutdown.cancelled() => break "the connection was closed".to_string(),
            r = tokio::time::timeout(READ_TIMEOUT, read.read_buf(&mut buf)) => r,
        };
        match read_more {
            Ok(Ok(0)) => break format!("{broker} closed the connection"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break format!("the connection to {broker} failed: {e}"),
            Err(_) => break format!("{broker} sent nothing for {READ_TIMEOUT:?}"),
        }
    };
    shutdown.cancel();
    lock(&pending).clear();
    let _ = incoming.send(Incoming::Closed { broker, why });
}
