//! Echo and broadcast servers on native Rust WebSocket libraries: the benchmark's anchors.
//!
//! ```text
//! anchor-server --impl tokio-tungstenite|fastwebsockets --port P [--host H]
//!               [--broadcast] [--cert CERT.pem --key KEY.pem] [--threads N]
//! ```
//!
//! An echo server sends every text or binary message back; a broadcast server (`--broadcast`)
//! sends every message it receives to every open connection, itself included — the same two
//! jobs the Python servers of `wschannel.bench` do. One thread by default (a current-thread
//! tokio runtime), like the Python servers, so that the load generator keeps the other core.
//! Once it accepts connections it prints `{"port": P, "pid": PID}` (the line the benchmark's
//! workers answer with), and it exits when its standard input closes (the runner's signal to
//! finish). Compression off.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;

use wschannel_native_anchors::tls;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum Library {
    Tungstenite,
    FastWebSockets,
}

struct Options {
    library: Library,
    address: SocketAddr,
    broadcast: bool,
    tls: Option<(String, String)>,
    threads: usize,
}

fn usage(message: &str) -> ! {
    eprintln!("anchor-server: {message}");
    eprintln!(
        "usage: anchor-server --impl tokio-tungstenite|fastwebsockets --port P [--host H] \
         [--broadcast] [--cert CERT --key KEY] [--threads N]"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut library = None;
    let mut host = "127.0.0.1".to_string();
    let mut port = None;
    let mut broadcast = false;
    let (mut cert, mut key) = (None, None);
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--impl" => {
                library = Some(match value().as_str() {
                    "tokio-tungstenite" => Library::Tungstenite,
                    "fastwebsockets" => Library::FastWebSockets,
                    other => usage(&format!("unknown library {other:?}")),
                })
            }
            "--host" => host = value(),
            "--port" => port = value().parse().ok(),
            "--broadcast" => broadcast = true,
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            "--threads" => threads = value().parse().unwrap_or_else(|_| usage("bad --threads")),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let library = library.unwrap_or_else(|| usage("--impl is required"));
    let port: u16 = port.unwrap_or_else(|| usage("--port is required"));
    let address = format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|_| usage("bad --host or --port"));
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => usage("--cert and --key go together"),
    };
    Options {
        library,
        address,
        broadcast,
        tls,
        threads: threads.max(1),
    }
}

fn main() -> Result<(), Error> {
    let options = options();
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(options))
}

async fn serve(options: Options) -> Result<(), Error> {
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(options.address).await?;
    println!(
        "{{\"port\": {}, \"pid\": {}}}",
        listener.local_addr()?.port(),
        std::process::id()
    );
    std::thread::spawn(|| {
        // Standard input closed (or unreadable): the runner is done with this server.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    // Only the latest messages matter to a subscriber that fell behind: the load generator
    // keeps one broadcast in flight, so this never fills.
    let (hub, _) = broadcast::channel::<Bytes>(1024);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let hub = options.broadcast.then(|| hub.clone());
        let acceptor = acceptor.clone();
        let library = options.library;
        tokio::spawn(async move {
            // A connection that ends badly (the load generator drops them) is not an error.
            let _ = connection(stream, acceptor, library, hub).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    library: Library,
    hub: Option<broadcast::Sender<Bytes>>,
) -> Result<(), Error> {
    match acceptor {
        Some(acceptor) => {
            let stream = acceptor.accept(stream).await?;
            on_stream(stream, library, hub).await
        }
        None => on_stream(stream, library, hub).await,
    }
}

async fn on_stream<S>(
    stream: S,
    library: Library,
    hub: Option<broadcast::Sender<Bytes>>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match (library, hub) {
        (Library::Tungstenite, None) => tungstenite_echo(stream).await,
        (Library::Tungstenite, Some(hub)) => tungstenite_broadcast(stream, hub).await,
        (Library::FastWebSockets, hub) => fastwebsockets_upgrade(stream, hub).await,
    }
}

// -- tokio-tungstenite ---------------------------------------------------------------------

/// Echo, writing once per batch: every message already read is queued (`feed`), then one
/// flush — tungstenite's own way to pipeline.
async fn tungstenite_echo<S>(stream: S) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(message) = ws.next().await {
        let mut message = message?;
        loop {
            match message {
                Message::Text(_) | Message::Binary(_) => ws.feed(message).await?,
                Message::Close(_) => return Ok(()),
                _ => {}
            }
            // Another message already read? Queue it too before flushing.
            match ws.next().now_or_never() {
                Some(Some(next)) => message = next?,
                Some(None) => return Ok(()),
                None => break,
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

async fn tungstenite_broadcast<S>(stream: S, hub: broadcast::Sender<Bytes>) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio_tungstenite::tungstenite::Message;
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (mut sender, mut receiver) = ws.split();
    let mut subscription = hub.subscribe();
    let writer = tokio::spawn(async move {
        while let Ok(payload) = subscription.recv().await {
            if sender.send(Message::Binary(payload)).await.is_err() {
                break;
            }
        }
    });
    while let Some(message) = receiver.next().await {
        match message? {
            Message::Binary(payload) => {
                let _ = hub.send(payload);
            }
            Message::Text(text) => {
                let _ = hub.send(Bytes::copy_from_slice(text.as_bytes()));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    writer.abort();
    Ok(())
}

// -- fastwebsockets ------------------------------------------------------------------------

/// fastwebsockets takes the upgrade through hyper: serve the one HTTP/1.1 request, then run
/// the WebSocket on the upgraded connection.
async fn fastwebsockets_upgrade<S>(
    stream: S,
    hub: Option<broadcast::Sender<Bytes>>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::{Request, Response};

    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let hub = hub.clone();
        async move {
            let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut request)?;
            tokio::spawn(async move {
                let Ok(ws) = upgrade.await else { return };
                let _ = match hub {
                    None => fastwebsockets_echo(ws).await,
                    Some(hub) => fastwebsockets_broadcast(ws, hub).await,
                };
            });
            Ok::<Response<Empty<Bytes>>, fastwebsockets::WebSocketError>(response)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await?;
    Ok(())
}

type Upgraded = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

async fn fastwebsockets_echo(ws: fastwebsockets::WebSocket<Upgraded>) -> Result<(), Error> {
    use fastwebsockets::OpCode;
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

async fn fastwebsockets_broadcast(
    ws: fastwebsockets::WebSocket<Upgraded>,
    hub: broadcast::Sender<Bytes>,
) -> Result<(), Error> {
    use fastwebsockets::{Frame, OpCode, Payload};
    let (mut reader, mut writer) = ws.split(tokio::io::split);
    let mut subscription = hub.subscribe();
    let task = tokio::spawn(async move {
        while let Ok(payload) = subscription.recv().await {
            let frame = Frame::binary(Payload::Borrowed(&payload));
            if writer.write_frame(frame).await.is_err() {
                break;
            }
        }
    });
    // The load generator sends no pings: what the read half would owe (pongs) is dropped.
    let mut owed = |_| async { Ok::<(), fastwebsockets::WebSocketError>(()) };
    loop {
        let frame = reader.read_frame(&mut owed).await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let _ = hub.send(Bytes::copy_from_slice(&frame.payload));
            }
            OpCode::Close => break,
            _ => {}
        }
    }
    task.abort();
    Ok(())
}
