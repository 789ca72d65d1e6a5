//! Echo throughput of the `wschannel` crate beside `tungstenite` (blocking) and
//! `tokio-tungstenite` (tokio), each library talking to itself over 127.0.0.1.
//!
//!     cargo run --release -p wschannel-bench -- [--seconds S] [--reps N] [--sizes A,B] [--out FILE]
//!
//! (`make bench-rust`). For every case (flavour × message size × mode) and every
//! repetition, each library in turn runs an echo server on a thread (blocking) or a task
//! (tokio) and a client that counts echoed binary messages for S seconds (default 0.5):
//! request/response sends one message and waits for its echo; pipelined keeps a window of
//! messages in flight (64 for small messages, fewer for large ones: at most 256 KiB, so that
//! a blocking client that writes its window before reading cannot fill both socket buffers).
//! Both libraries send each message with their "send now" call (written and flushed).
//! Repetitions are interleaved, so that a slow moment of a shared machine hits both; the
//! table gives the median of each and the ratio wschannel / tungstenite.

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tungstenite::Message as TMessage;

#[derive(Clone, Copy, PartialEq)]
enum Flavour {
    Blocking,
    Tokio,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    RequestResponse,
    Pipelined,
}

#[derive(Clone, Copy, PartialEq)]
enum Lib {
    Wschannel,
    Tungstenite,
}

#[derive(Clone, Copy)]
struct Case {
    flavour: Flavour,
    mode: Mode,
    size: usize,
}

impl Case {
    /// Messages in flight at once.
    fn window(self) -> usize {
        match self.mode {
            Mode::RequestResponse => 1,
            Mode::Pipelined => (256 * 1024 / self.size).clamp(1, 64),
        }
    }
}

const SIZES: [usize; 3] = [16, 256, 64 * 1024];

fn main() {
    let mut seconds = 0.5;
    let mut reps = 5;
    let mut out = None;
    let mut sizes = SIZES.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the option");
        match arg.as_str() {
            "--seconds" => seconds = value().parse().expect("seconds"),
            "--reps" => reps = value().parse().expect("a count"),
            "--out" => out = Some(value()),
            "--sizes" => {
                sizes = value()
                    .split(',')
                    .map(|s| s.parse().expect("sizes in bytes, comma-separated"))
                    .collect()
            }
            _ => panic!(
                "usage: wschannel-bench [--seconds S] [--reps N] [--sizes A,B,..] [--out FILE]"
            ),
        }
    }
    let duration = Duration::from_secs_f64(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .expect("a tokio runtime");

    let mut cases = Vec::new();
    for flavour in [Flavour::Blocking, Flavour::Tokio] {
        for mode in [Mode::RequestResponse, Mode::Pipelined] {
            for &size in &sizes {
                cases.push(Case {
                    flavour,
                    mode,
                    size,
                });
            }
        }
    }
    // rates[case][lib] over the repetitions.
    let mut rates = vec![[Vec::new(), Vec::new()]; cases.len()];
    for rep in 0..reps {
        eprintln!("repetition {}/{reps}", rep + 1);
        for (i, case) in cases.iter().enumerate() {
            // Alternate which library goes first, so neither always runs on a warm cache.
            let order = if (rep + i) % 2 == 0 {
                [Lib::Wschannel, Lib::Tungstenite]
            } else {
                [Lib::Tungstenite, Lib::Wschannel]
            };
            for lib in order {
                let rate = match case.flavour {
                    Flavour::Blocking => blocking(*case, lib, duration),
                    Flavour::Tokio => runtime.block_on(tokio_case(*case, lib, duration)),
                };
                rates[i][lib as usize].push(rate);
            }
        }
    }
    let table = table(&cases, &mut rates, reps, seconds);
    print!("{table}");
    if let Some(path) = out {
        std::fs::write(path, &table).expect("writing the table");
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn table(cases: &[Case], rates: &mut [[Vec<f64>; 2]], reps: usize, seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Echo messages per second over 127.0.0.1, median of {reps} interleaved runs of \
         {seconds} s (binary messages; ratio = wschannel / the tungstenite flavour).\n"
    );
    out.push_str("| flavour | mode | size | wschannel | tungstenite | ratio |\n");
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for (case, [ours, theirs]) in cases.iter().zip(rates.iter_mut()) {
        let (ours, theirs) = (median(ours), median(theirs));
        let flavour = match case.flavour {
            Flavour::Blocking => "blocking (`sync` / `tungstenite`)",
            Flavour::Tokio => "tokio (`tokio` / `tokio-tungstenite`)",
        };
        let mode = match case.mode {
            Mode::RequestResponse => "request/response".to_owned(),
            Mode::Pipelined => format!("pipelined ({} in flight)", case.window()),
        };
        let size = match case.size {
            s if s >= 1024 => format!("{} KiB", s / 1024),
            s => format!("{s} B"),
        };
        let _ = writeln!(
            out,
            "| {flavour} | {mode} | {size} | {ours:.0} | {theirs:.0} | {:.2} |",
            ours / theirs
        );
    }
    out
}

/// Counts echoes for `duration` after a warm-up window: messages per second.
fn count<S: FnMut(), R: FnMut() -> usize>(
    case: Case,
    duration: Duration,
    mut send: S,
    mut recv: R,
) -> f64 {
    let window = case.window();
    let round = |send: &mut S, recv: &mut R| {
        for _ in 0..window {
            send();
        }
        for _ in 0..window {
            assert_eq!(recv(), case.size, "an echo of the size sent");
        }
    };
    round(&mut send, &mut recv);
    let start = Instant::now();
    let mut messages = 0;
    while start.elapsed() < duration {
        round(&mut send, &mut recv);
        messages += window;
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

// Blocking: a server thread and the client on this one.

fn blocking(case: Case, lib: Lib, duration: Duration) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("a connection");
        stream.set_nodelay(true).expect("nodelay");
        match lib {
            Lib::Wschannel => serve_wschannel(stream),
            Lib::Tungstenite => serve_tungstenite(stream),
        }
    });
    let stream = TcpStream::connect(&address).expect("connected");
    stream.set_nodelay(true).expect("nodelay");
    let payload = vec![0x5a; case.size];
    let rate = match lib {
        Lib::Wschannel => {
            let mut ws =
                wschannel::sync::WebSocket::connect(stream, &address, "/").expect("handshake");
            let rate = {
                let ws = std::cell::RefCell::new(&mut ws);
                count(
                    case,
                    duration,
                    || ws.borrow_mut().send_binary(&payload).expect("sent"),
                    || match ws.borrow_mut().read().expect("read") {
                        Some(wschannel::Message::Binary(data)) => data.len(),
                        other => panic!("unexpected {other:?}"),
                    },
                )
            };
            ws.close(Some(1000), "").expect("close");
            while ws.read().expect("read").is_some() {}
            rate
        }
        Lib::Tungstenite => {
            let url = format!("ws://{address}/");
            let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
            let rate = {
                let ws = std::cell::RefCell::new(&mut ws);
                count(
                    case,
                    duration,
                    || {
                        let message = TMessage::Binary(payload.clone().into());
                        ws.borrow_mut().send(message).expect("sent")
                    },
                    || match ws.borrow_mut().read().expect("read") {
                        TMessage::Binary(data) => data.len(),
                        other => panic!("unexpected {other:?}"),
                    },
                )
            };
            ws.close(None).expect("close");
            while ws.read().is_ok() {}
            rate
        }
    };
    server.join().expect("the server thread");
    rate
}

fn serve_wschannel(stream: TcpStream) {
    let mut ws = wschannel::sync::WebSocket::accept(stream).expect("handshake");
    while let Some(message) = ws.read().expect("read") {
        match message {
            wschannel::Message::Binary(data) => ws.send_binary(&data).expect("echo"),
            wschannel::Message::Text(text) => ws.send_text(&text).expect("echo"),
        }
    }
}

fn serve_tungstenite(stream: TcpStream) {
    let mut ws = tungstenite::accept(stream).expect("handshake");
    loop {
        match ws.read() {
            Ok(message @ (TMessage::Binary(_) | TMessage::Text(_))) => {
                ws.send(message).expect("echo")
            }
            Ok(_) => {}
            Err(_) => return, // closed
        }
    }
}

// Tokio: a server task and the client on the runtime's other worker.

async fn tokio_case(case: Case, lib: Lib, duration: Duration) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("a connection");
        stream.set_nodelay(true).expect("nodelay");
        match lib {
            Lib::Wschannel => serve_wschannel_tokio(stream).await,
            Lib::Tungstenite => serve_tungstenite_tokio(stream).await,
        }
    });
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connected");
    stream.set_nodelay(true).expect("nodelay");
    let payload = vec![0x5a; case.size];
    let window = case.window();
    let mut messages = 0;
    let mut start = Instant::now();
    let mut elapsed = Duration::ZERO;
    match lib {
        Lib::Wschannel => {
            let mut ws = wschannel::tokio::WebSocket::connect(stream, &address, "/")
                .await
                .expect("handshake");
            for round in 0.. {
                if round == 1 {
                    start = Instant::now(); // round 0 warms up
                } else if round > 1 && start.elapsed() >= duration {
                    elapsed = start.elapsed();
                    break;
                }
                if round > 0 {
                    messages += window;
                }
                for _ in 0..window {
                    ws.send_binary(&payload).await.expect("sent");
                }
                for _ in 0..window {
                    match ws.read().await.expect("read") {
                        Some(wschannel::Message::Binary(data)) => assert_eq!(data.len(), case.size),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            ws.close(Some(1000), "").await.expect("close");
            while ws.read().await.expect("read").is_some() {}
        }
        Lib::Tungstenite => {
            let url = format!("ws://{address}/");
            let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .expect("handshake");
            for round in 0.. {
                if round == 1 {
                    start = Instant::now();
                } else if round > 1 && start.elapsed() >= duration {
                    elapsed = start.elapsed();
                    break;
                }
                if round > 0 {
                    messages += window;
                }
                for _ in 0..window {
                    let message = TMessage::Binary(payload.clone().into());
                    ws.send(message).await.expect("sent");
                }
                for _ in 0..window {
                    match ws.next().await.expect("a message").expect("read") {
                        TMessage::Binary(data) => assert_eq!(data.len(), case.size),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            ws.close(None).await.expect("close");
            while let Some(Ok(_)) = ws.next().await {}
        }
    }
    server.await.expect("the server task");
    messages as f64 / elapsed.as_secs_f64()
}

async fn serve_wschannel_tokio(stream: tokio::net::TcpStream) {
    let mut ws = wschannel::tokio::WebSocket::accept(stream)
        .await
        .expect("handshake");
    while let Some(message) = ws.read().await.expect("read") {
        match message {
            wschannel::Message::Binary(data) => ws.send_binary(&data).await.expect("echo"),
            wschannel::Message::Text(text) => ws.send_text(&text).await.expect("echo"),
        }
    }
}

async fn serve_tungstenite_tokio(stream: tokio::net::TcpStream) {
    let mut ws = tokio_tungstenite::accept_async(stream)
        .await
        .expect("handshake");
    while let Some(Ok(message)) = ws.next().await {
        if message.is_binary() || message.is_text() {
            ws.send(message).await.expect("echo");
        }
    }
}
