//! A blocking echo server over `std::net`, a thread per connection: every message goes back
//! as it came.
//!
//!     cargo run --example echo_server -- [ADDRESS] [CONNECTIONS]
//!
//! ADDRESS defaults to 127.0.0.1:9001 (port 0: any free port). It prints
//! `listening on ADDRESS`, then serves CONNECTIONS connections (default: no end) and exits.

use std::net::{TcpListener, TcpStream};
use std::thread;

use wschannel::sync::WebSocket;
use wschannel::Message;

fn echo(stream: TcpStream) -> Result<(), wschannel::Error> {
    let mut ws = WebSocket::accept(stream)?;
    while let Some(message) = ws.read()? {
        match message {
            Message::Text(text) => ws.send_text(&text)?,
            Message::Binary(data) => ws.send_binary(&data)?,
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let connections: Option<usize> = args.next().map(|n| n.parse().expect("a count"));
    let listener = TcpListener::bind(&address)?;
    println!("listening on {}", listener.local_addr()?);
    let mut workers = Vec::new();
    for stream in listener.incoming().take(connections.unwrap_or(usize::MAX)) {
        let stream = stream?;
        workers.push(thread::spawn(move || {
            if let Err(e) = echo(stream) {
                eprintln!("connection failed: {e}");
            }
        }));
    }
    for worker in workers {
        worker.join().expect("a worker panicked");
    }
    Ok(())
}
