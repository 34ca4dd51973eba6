//! One target's way out: a signed webhook, a back-channel relay or a JetStream publish, each
//! attempt answered as delivered, to retry, or dead.

use std::time::Duration;

use tokio::sync::Mutex;

use super::http_target::{self, Attempt, WebhookSecret};
use super::nats::{JetStream, NatsError};
use crate::config::{DeliveryKind, DeliverySettings};

/// What one attempt sends.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// The delivery's id (`webhook-id`, `Nats-Msg-Id`).
    pub delivery_id: String,
    /// The JSON event.
    pub body: Vec<u8>,
    /// The original logout token (back-channel relays).
    pub token: Option<String>,
}

/// How a target is reached, ready to send.
#[derive(Debug)]
pub(super) enum Sender {
    /// Standard Webhooks POST.
    Webhook {
        client: reqwest::Client,
        url: String,
        secret: Box<WebhookSecret>,
    },
    /// Back-channel relay.
    Backchannel {
        client: reqwest::Client,
        url: String,
    },
    /// JetStream publish over a connection made at the first attempt and remade after a failure.
    Nats {
        servers: Vec<String>,
        subject: String,
        stream: Option<(String, bool)>,
        timeout: Duration,
        conn: Mutex<Option<JetStream>>,
    },
}

impl Sender {
    /// The sender a target's settings describe.
    pub(super) fn new(target: &DeliverySettings) -> Result<Self, reqwest::Error> {
        Ok(match &target.kind {
            DeliveryKind::Webhook { url, key } => Self::Webhook {
                client: http_target::client(target.timeout)?,
                url: url.to_string(),
                secret: Box::new(WebhookSecret::from_key(key.expose())),
            },
            DeliveryKind::Backchannel { url } => Self::Backchannel {
                client: http_target::client(target.timeout)?,
                url: url.to_string(),
            },
            DeliveryKind::Nats {
                servers,
                subject,
                stream,
                create_stream,
            } => Self::Nats {
                servers: servers.clone(),
                subject: subject.clone(),
                stream: stream.clone().map(|s| (s, *create_stream)),
                timeout: target.timeout,
                conn: Mutex::new(None),
            },
        })
    }

    /// Whether an attempt needs the original token (read by id), not only the record.
    pub(super) fn needs_token(&self) -> bool {
        matches!(self, Self::Backchannel { .. })
    }

    /// Makes one attempt; `now_secs` is its Unix time (the webhook's timestamp).
    pub(super) async fn send(&self, m: &Message, now_secs: i64) -> Attempt {
        match self {
            Self::Webhook {
                client,
                url,
                secret,
            } => {
                http_target::post_webhook(client, url, secret, &m.delivery_id, &m.body, now_secs)
                    .await
            }
            Self::Backchannel { client, url } => match &m.token {
                Some(token) => http_target::post_backchannel(client, url, token).await,
                None => Attempt::Dead("the record keeps no token to relay".into()),
            },
            Self::Nats {
                servers,
                subject,
                stream,
                timeout,
                conn,
            } => {
                let js = match connection(conn, servers, subject, stream.as_ref(), *timeout).await {
                    Ok(js) => js,
                    Err(e) => return Attempt::Retry(format!("NATS: {e}")),
                };
                match js.publish(subject, &m.delivery_id, &m.body).await {
                    Ok(_) => Attempt::Delivered,
                    Err(e) => {
                        if matches!(e, NatsError::Closed | NatsError::Io(_) | NatsError::Timeout) {
                            *conn.lock().await = None;
                        }
                        Attempt::Retry(format!("NATS: {e}"))
                    }
                }
            }
        }
    }
}

/// The target's JetStream connection: the one made before, or a new one (with its stream
/// created, if missing, when `create_stream` says so).
async fn connection(
    conn: &Mutex<Option<JetStream>>,
    servers: &[String],
    subject: &str,
    stream: Option<&(String, bool)>,
    timeout: Duration,
) -> Result<JetStream, NatsError> {
    let mut guard = conn.lock().await;
    if let Some(js) = guard.as_ref() {
        return Ok(js.clone());
    }
    let js = JetStream::connect(servers, timeout).await?;
    if let Some((name, true)) = stream {
        js.ensure_stream(name, subject).await?;
    }
    *guard = Some(js.clone());
    Ok(js)
}
