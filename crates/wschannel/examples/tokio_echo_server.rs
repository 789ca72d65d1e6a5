//! An echo server on tokio: a task per connection, every message goes back as it came.
//!
//!     cargo run --features tokio --example tokio_echo_server -- [ADDRESS] [CONNECTIONS]
//!
//! ADDRESS defaults to 127.0.0.1:9001 (port 0: any free port). It prints
//! `listening on ADDRESS`, then serves CONNECTIONS connections (default: no end) and exits.

use tokio::net::{TcpListener, TcpStream};

use wschannel::tokio::WebSocket;
use wschannel::Message;

async fn echo(stream: TcpStream) -> Result<(), wschannel::Error> {
    let mut ws = WebSocket::accept(stream).await?;
    while let Some(message) = ws.read().await? {
        match message {
            Message::Text(text) => ws.send_text(&text).await?,
            Message::Binary(data) => ws.send_binary(&data).await?,
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let connections: Option<usize> = args.next().map(|n| n.parse().expect("a count"));
    let listener = TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut tasks = Vec::new();
    for _ in 0..connections.unwrap_or(usize::MAX) {
        let (stream, _) = listener.accept().await?;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("connection failed: {e}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a task panicked");
    }
    Ok(())
}
