//! A blocking client over `std::net` for an echo server: sends each argument as a text
//! message and a 64 KiB binary one, checks that each comes back unchanged, and closes.
//!
//!     cargo run --example echo_client -- ADDRESS [TEXT...]
//!
//! Prints `echoed: TEXT` per text and `echoed: N bytes` for the binary message; exits with
//! an error if an echo differs.

use std::net::TcpStream;

use wschannel::sync::WebSocket;
use wschannel::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().ok_or("usage: echo_client ADDRESS [TEXT...]")?;
    let texts: Vec<String> = args.collect();
    let binary: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();

    let stream = TcpStream::connect(&address)?;
    let mut ws = WebSocket::connect(stream, &address, "/")?;
    for text in &texts {
        ws.send_text(text)?;
        match ws.read()? {
            Some(Message::Text(echo)) if echo == *text => println!("echoed: {echo}"),
            other => return Err(format!("sent {text:?}, got back {other:?}").into()),
        }
    }
    ws.send_binary(&binary)?;
    match ws.read()? {
        Some(Message::Binary(echo)) if echo == binary => println!("echoed: {} bytes", echo.len()),
        other => return Err(format!("binary echo differs: {other:?}").into()),
    }
    ws.close(Some(1000), "done")?;
    if let Some(message) = ws.read()? {
        return Err(format!("unexpected message after close: {message:?}").into());
    }
    println!("closed: {:?}", ws.close_code());
    Ok(())
}
