//! The tokio `WebSocket` over real loopback sockets: against itself and against
//! tokio-tungstenite in both roles. Every test is bounded by `TIMEOUT`.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;
use wschannel::handshake::{AcceptOptions, ClientOptions};
use wschannel::tokio::WebSocket;
use wschannel::{Config, DeflateConfig, Error, Message};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

/// A wschannel server task echoing one connection; returns the close code it saw.
async fn echo_server(
    options: AcceptOptions,
) -> (String, tokio::task::JoinHandle<Result<Option<u16>, String>>) {
    let (listener, address) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut ws = WebSocket::accept_with(stream, &options, Config::default())
            .await
            .map_err(|e| e.to_string())?;
        while let Some(message) = ws.read().await.map_err(|e| e.to_string())? {
            match message {
                Message::Text(text) => ws.send_text(&text).await,
                Message::Binary(data) => ws.send_binary(&data).await,
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(ws.close_code())
    });
    (address, server)
}

#[tokio::test]
async fn client_and_server_echo_compressed_and_close_cleanly() {
    bounded(async {
        let accept = AcceptOptions {
            deflate: Some(DeflateConfig::default()),
            ..AcceptOptions::default()
        };
        let (address, server) = echo_server(accept).await;
        let options = ClientOptions {
            deflate: Some(DeflateConfig::default()),
            ..ClientOptions::default()
        };
        let stream = TcpStream::connect(&address).await.unwrap();
        let mut ws = WebSocket::connect_with(stream, &address, "/", &options, Config::default())
            .await
            .unwrap();
        for i in 0..20 {
            let text = format!("message {i} ").repeat(100);
            ws.send_text(&text).await.unwrap();
            assert_eq!(ws.read().await.unwrap(), Some(Message::Text(text)));
        }
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        ws.send_binary(&big).await.unwrap();
        assert_eq!(ws.read().await.unwrap(), Some(Message::Binary(big)));
        ws.close(Some(1000), "bye").await.unwrap();
        assert_eq!(ws.read().await.unwrap(), None);
        assert_eq!(ws.close_code(), Some(1000));
        assert_eq!(server.await.unwrap(), Ok(Some(1000)));
    })
    .await
}

#[tokio::test]
async fn client_talks_to_a_tokio_tungstenite_server() {
    bounded(async {
        let (listener, address) = listen().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            ws.send(tungstenite::Message::Ping(b"hi".to_vec().into()))
                .await
                .unwrap();
            let mut code = None;
            // tokio-tungstenite sends its close echo on the next poll: read to the end.
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)) => {
                        ws.send(m).await.unwrap()
                    }
                    tungstenite::Message::Pong(data) => assert_eq!(&data[..], b"hi"),
                    tungstenite::Message::Close(frame) => code = frame.map(|f| u16::from(f.code)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            code
        });
        let stream = TcpStream::connect(&address).await.unwrap();
        let mut ws = WebSocket::connect(stream, &address, "/").await.unwrap();
        ws.send_text("ping me").await.unwrap();
        assert_eq!(
            ws.read().await.unwrap(),
            Some(Message::Text("ping me".into()))
        );
        ws.close(Some(3000), "").await.unwrap();
        assert_eq!(ws.read().await.unwrap(), None);
        assert_eq!(server.await.unwrap(), Some(3000));
    })
    .await
}

#[tokio::test]
async fn server_talks_to_a_tokio_tungstenite_client() {
    bounded(async {
        let (address, server) = echo_server(AcceptOptions::default()).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/x"))
            .await
            .unwrap();
        ws.send(tungstenite::Message::Ping(b"p".to_vec().into()))
            .await
            .unwrap();
        ws.send(tungstenite::Message::Binary(vec![9; 70_000].into()))
            .await
            .unwrap();
        let pong = ws.next().await.unwrap().unwrap();
        assert_eq!(pong, tungstenite::Message::Pong(b"p".to_vec().into()));
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo, tungstenite::Message::Binary(vec![9; 70_000].into()));
        ws.close(None).await.unwrap();
        while let Some(message) = ws.next().await {
            match message {
                Ok(tungstenite::Message::Close(_)) => {}
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        assert_eq!(server.await.unwrap(), Ok(Some(1005)));
    })
    .await
}

#[tokio::test]
async fn server_answers_both_pings_of_one_read() {
    bounded(async {
        let (address, server) = echo_server(AcceptOptions::default()).await;
        let mut raw = TcpStream::connect(&address).await.unwrap();
        raw.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = vec![0; 129];
        raw.read_exact(&mut head).await.unwrap();
        // Two pings and a close, masked with the key 0, in one write.
        let wire = b"\x89\x81\0\0\0\0a\x89\x81\0\0\0\0b\x88\x82\0\0\0\0\x03\xe8";
        raw.write_all(wire).await.unwrap();
        let mut replies = vec![0; 10];
        raw.read_exact(&mut replies).await.unwrap();
        assert_eq!(replies, b"\x8a\x01a\x8a\x01b\x88\x02\x03\xe8");
        assert_eq!(server.await.unwrap(), Ok(Some(1000)));
    })
    .await
}

#[tokio::test]
async fn client_reports_a_stream_ended_without_a_close_frame() {
    bounded(async {
        let (listener, address) = listen().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = WebSocket::accept(stream).await.unwrap();
            ws.send_text("last words").await.unwrap();
        });
        let stream = TcpStream::connect(&address).await.unwrap();
        let mut ws = WebSocket::connect(stream, &address, "/").await.unwrap();
        let first = ws.read().await.unwrap();
        assert_eq!(first, Some(Message::Text("last words".into())));
        server.await.unwrap();
        match ws.read().await {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
        assert_eq!(ws.close_code(), Some(1006));
    })
    .await
}
