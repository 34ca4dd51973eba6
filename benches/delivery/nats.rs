//! A minimal NATS client over a raw TCP connection, for the benchmark's side of the NATS
//! target: a core subscriber on the target's subject (it sees each message as the server routes
//! the JetStream publish, so its arrival time is the delivery time) and one request/reply (the
//! `$JS.API.STREAM.DELETE.<stream>` that removes the benchmark's stream afterwards).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

/// The CONNECT options: no `+OK` after each operation, headers understood (JetStream
/// publishes carry `Nats-Msg-Id`, so they arrive as `HMSG`).
const CONNECT: &str =
    r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}"#;
/// Longest a connection attempt or the request/reply may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One open connection, split for reading and writing.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    /// Connects to `addr` (`host:port`), reads `INFO` and sends `CONNECT` and `commands`, then
    /// waits for the `PONG` that follows them (so a subscription is in place on return).
    async fn open(addr: &str, commands: &str) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to NATS at {addr}: timed out"))?
            .with_context(|| format!("connect to NATS at {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        let mut conn = Self {
            reader: BufReader::new(read),
            writer,
        };
        let info = conn.line().await?;
        ensure!(info.starts_with("INFO"), "NATS greeted with {info:?}");
        let hello = format!("CONNECT {CONNECT}\r\n{commands}PING\r\n");
        conn.writer.write_all(hello.as_bytes()).await?;
        loop {
            let line = tokio::time::timeout(TIMEOUT, conn.line())
                .await
                .context("NATS did not answer PING")??;
            match line.as_str() {
                "PONG" => return Ok(conn),
                "PING" => conn.writer.write_all(b"PONG\r\n").await?,
                l if l.starts_with("-ERR") => bail!("NATS: {l}"),
                _ => {}
            }
        }
    }

    /// One protocol line, without its CRLF.
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await?;
        ensure!(n > 0, "NATS closed the connection");
        Ok(line.trim_end().to_owned())
    }

    /// The next message's payload (answering `PING`s on the way); `-ERR` fails.
    async fn message(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            let line = self.line().await?;
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.first().copied() {
                Some("PING") => self.writer.write_all(b"PONG\r\n").await?,
                Some("MSG") => {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let total: usize = parts.last().context("MSG without size")?.parse()?;
                    return self.payload(0, total).await;
                }
                Some("HMSG") => {
                    // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
                    ensure!(parts.len() >= 5, "short HMSG line {line:?}");
                    let total: usize = parts[parts.len() - 1].parse()?;
                    let headers: usize = parts[parts.len() - 2].parse()?;
                    return self.payload(headers, total).await;
                }
                Some(op) if op.starts_with("-ERR") => bail!("NATS: {line}"),
                _ => {}
            }
        }
    }

    /// Reads `total` bytes and the CRLF after them; returns those after the first `skip`.
    async fn payload(&mut self, skip: usize, total: usize) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; total + 2];
        self.reader.read_exact(&mut buf).await?;
        buf.truncate(total);
        Ok(buf.split_off(skip.min(total)))
    }
}

/// Every message's arrival time and payload.
type Log = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A core subscription recording every message's arrival time and payload.
pub(crate) struct Subscriber {
    log: Log,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Subscriber {
    /// Subscribes to `subject` on `addr`; returns once the server has the subscription.
    pub(crate) async fn start(addr: &str, subject: &str) -> anyhow::Result<Self> {
        let mut conn = Conn::open(addr, &format!("SUB {subject} 1\r\n")).await?;
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let task = tokio::spawn(async move {
            loop {
                let payload = conn.message().await?;
                let at = Instant::now();
                if let Ok(mut log) = sink.lock() {
                    log.push((at, payload));
                }
            }
        });
        Ok(Self { log, task })
    }

    /// Messages received so far.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().map_or(0, |l| l.len())
    }

    /// Ends the subscription; returns every `(arrival, payload)`.
    pub(crate) fn finish(self) -> Vec<(Instant, Vec<u8>)> {
        self.task.abort();
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// Deletes JetStream stream `stream` (`$JS.API.STREAM.DELETE.<stream>`); returns the answer.
pub(crate) async fn delete_stream(addr: &str, stream: &str) -> anyhow::Result<String> {
    let inbox = format!("_INBOX.llbench.{}", std::process::id());
    let mut conn = Conn::open(addr, &format!("SUB {inbox} 1\r\n")).await?;
    let request = format!("PUB $JS.API.STREAM.DELETE.{stream} {inbox} 0\r\n\r\n");
    conn.writer.write_all(request.as_bytes()).await?;
    let answer = tokio::time::timeout(TIMEOUT, conn.message())
        .await
        .context("no answer to the stream deletion")??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
