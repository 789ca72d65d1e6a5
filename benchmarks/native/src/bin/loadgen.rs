//! A native load generator for the benchmark's servers (tokio-tungstenite client, one thread),
//! so that a server's figure is not capped by a Python client.
//!
//! ```text
//! loadgen echo URL      [--connections N] [--size BYTES] [--inflight K] [--warmup S] [--duration S] [--ca CA.pem] [--server-pid PID]
//! loadgen broadcast URL [--connections N] [--size BYTES] [--warmup S] [--duration S] [--ca CA.pem] [--server-pid PID]
//! ```
//!
//! `echo`: N connections, each keeping K binary messages of BYTES in flight against an echo
//! server. `broadcast`: N connections to a broadcasting server; the first sends a message,
//! the server sends it to all N, and once all N have it the next one goes. Both print
//! `{"count": C, "seconds": S}` — echoes, or whole broadcasts, counted in the window of S
//! seconds that opens after the warm-up — the same line as `wschannel.bench.load`. Before it,
//! `{"window": "start", ...}` and `{"window": "end", ...}` mark the window's edges as they
//! pass, with the CPU time of this process and (`--server-pid PID`) of the server read then.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use wschannel_native_anchors::tls;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Handshakes at a time while connecting (as the Python load generator).
const CONNECT_CONCURRENCY: usize = 64;

#[derive(Clone)]
struct Options {
    mode: String,
    url: String,
    connections: usize,
    size: usize,
    inflight: usize,
    warmup: f64,
    duration: f64,
    ca: Option<String>,
    server_pid: Option<i32>,
}

fn usage(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    eprintln!(
        "usage: loadgen echo|broadcast URL [--connections N] [--size BYTES] [--inflight K] \
         [--warmup S] [--duration S] [--ca CA.pem] [--server-pid PID]"
    );
    std::process::exit(2);
}

fn number<T: std::str::FromStr>(arg: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {arg}: {value:?}")))
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage("a mode is required"));
    if mode != "echo" && mode != "broadcast" {
        usage(&format!("unknown mode {mode:?}"));
    }
    let url = args.next().unwrap_or_else(|| usage("a URL is required"));
    let mut options = Options {
        mode,
        url,
        connections: 1,
        size: 41,
        inflight: 1,
        warmup: 0.5,
        duration: 2.0,
        ca: None,
        server_pid: None,
    };
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--connections" => options.connections = number(&arg, &value),
            "--size" => options.size = number(&arg, &value),
            "--inflight" => options.inflight = number(&arg, &value),
            "--warmup" => options.warmup = number(&arg, &value),
            "--duration" => options.duration = number(&arg, &value),
            "--ca" => options.ca = Some(value),
            "--server-pid" => options.server_pid = Some(number(&arg, &value)),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if options.connections == 0 || options.inflight == 0 {
        usage("--connections and --inflight must be at least 1");
    }
    options
}

fn main() -> Result<(), Error> {
    let options = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (count, seconds) = runtime.block_on(run(options))?;
    println!("{{\"count\": {count}, \"seconds\": {seconds}}}");
    // The connections are dropped with the process: the server sees them go, as it does
    // with the Python load generator.
    std::process::exit(0);
}

/// A connection to the server under test, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

type Ws = WebSocketStream<Box<dyn Stream>>;

async fn connect(
    options: &Options,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<Ws, Error> {
    let rest = options
        .url
        .strip_prefix("ws://")
        .or_else(|| options.url.strip_prefix("wss://"))
        .ok_or("the URL must start with ws:// or wss://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = match connector {
        Some(connector) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())?;
            Box::new(connector.connect(name, tcp).await?)
        }
        None => Box::new(tcp),
    };
    let (ws, _) = tokio_tungstenite::client_async(options.url.as_str(), stream).await?;
    Ok(ws)
}

async fn connect_all(options: &Options) -> Result<Vec<Ws>, Error> {
    let connector = match (&options.ca, options.url.starts_with("wss://")) {
        (Some(ca), true) => Some(tls::connector(ca)?),
        (None, true) => return Err("a wss:// URL needs --ca".into()),
        _ => None,
    };
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let gate = gate.clone();
        let options = options.clone();
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            connect(&options, connector.as_ref()).await
        }));
    }
    let mut connections = Vec::with_capacity(tasks.len());
    for task in tasks {
        connections.push(task.await??);
    }
    Ok(connections)
}

/// Counts in the window that opens after the warm-up; returns (count, seconds).
///
/// The window's start and end are announced on stdout, each line flushed as it is written:
/// `{"window": "start", "loadgen_cpu_s": L}` and the same with `"end"`, where L is this
/// process's CPU time so far; with `--server-pid`, also `"server_cpu_s"`: that process's
/// (all its threads, from its CPU-time clock). Read here, at the moments the count is read,
/// both cover exactly the window counted; the runner uses them to tell what the server
/// spent per message.
async fn measure(count: &AtomicU64, options: &Options) -> (u64, f64) {
    tokio::time::sleep(Duration::from_secs_f64(options.warmup)).await;
    let edge = cpu_times(options.server_pid);
    let (start, before) = (Instant::now(), count.load(Ordering::Relaxed));
    announce("start", edge);
    tokio::time::sleep(Duration::from_secs_f64(options.duration)).await;
    let edge = cpu_times(options.server_pid);
    let (after, seconds) = (count.load(Ordering::Relaxed), start.elapsed().as_secs_f64());
    announce("end", edge);
    (after - before, seconds)
}

/// This process's CPU time and the server's (if its pid is known and its clock readable).
fn cpu_times(server_pid: Option<i32>) -> (Option<f64>, Option<f64>) {
    (cpu_seconds(0), server_pid.and_then(cpu_seconds))
}

/// CPU time, user + system, all threads (also those that ended), of process `pid` (0: this
/// one), from the kernel's CPU-time clock of the process: the clock id
/// `MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)` of Linux's `posix-timers.h`.
#[cfg(target_os = "linux")]
fn cpu_seconds(pid: i32) -> Option<f64> {
    let clock: libc::clockid_t = if pid == 0 {
        libc::CLOCK_PROCESS_CPUTIME_ID
    } else {
        ((!pid) << 3) | 2
    };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; an unknown clock is an error return.
    let done = unsafe { libc::clock_gettime(clock, &mut now) };
    (done == 0).then_some(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// No per-process CPU clocks read here outside Linux: the lines carry no CPU times.
#[cfg(not(target_os = "linux"))]
fn cpu_seconds(_pid: i32) -> Option<f64> {
    None
}

/// One line `{"window": "<edge>", ...}` on stdout, flushed (a pipe would otherwise hold it).
fn announce(edge: &str, (loadgen, server): (Option<f64>, Option<f64>)) {
    let mut line = format!("{{\"window\": \"{edge}\"");
    for (name, value) in [("loadgen_cpu_s", loadgen), ("server_cpu_s", server)] {
        if let Some(value) = value {
            line += &format!(", \"{name}\": {value}");
        }
    }
    line.push('}');
    let mut out = std::io::stdout().lock();
    // Ignored: with stdout gone, the final line's println! ends the process with the error.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn run(options: Options) -> Result<(u64, f64), Error> {
    let connections = connect_all(&options).await?;
    let payload = Bytes::from(vec![b'x'; options.size]);
    let count = Arc::new(AtomicU64::new(0));
    if options.mode == "echo" {
        for ws in connections {
            tokio::spawn(echo(ws, payload.clone(), options.inflight, count.clone()));
        }
    } else {
        broadcast(connections, payload, count.clone());
    }
    Ok(measure(&count, &options).await)
}

/// Keeps `inflight` messages in flight: one more sent for each echo received, the sends of
/// one read's echoes flushed together.
async fn echo(ws: Ws, payload: Bytes, inflight: usize, count: Arc<AtomicU64>) -> Result<(), Error> {
    let (mut sender, mut receiver) = ws.split();
    for _ in 0..inflight {
        sender.feed(Message::Binary(payload.clone())).await?;
    }
    sender.flush().await?;
    while let Some(message) = receiver.next().await {
        let mut message = message?;
        loop {
            if message.is_binary() || message.is_text() {
                count.fetch_add(1, Ordering::Relaxed);
                sender.feed(Message::Binary(payload.clone())).await?;
            }
            match receiver.next().now_or_never() {
                Some(Some(next)) => message = next?,
                Some(None) => return Ok(()),
                None => break,
            }
        }
        sender.flush().await?;
    }
    Ok(())
}

/// One broadcast in flight: the first connection sends; each connection counts what it
/// receives; when all have it, the next one goes.
fn broadcast(connections: Vec<Ws>, payload: Bytes, count: Arc<AtomicU64>) {
    let total = connections.len();
    let received = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(Notify::new());
    let mut publisher = None;
    for ws in connections {
        let (sender, mut receiver) = ws.split();
        if publisher.is_none() {
            publisher = Some(sender);
        }
        let (received, next) = (received.clone(), next.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = receiver.next().await {
                if message.is_binary() && received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    received.store(0, Ordering::Relaxed);
                    next.notify_one();
                }
            }
        });
    }
    let mut publisher = publisher.expect("at least one connection");
    tokio::spawn(async move {
        loop {
            if publisher
                .send(Message::Binary(payload.clone()))
                .await
                .is_err()
            {
                return;
            }
            next.notified().await;
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
}
