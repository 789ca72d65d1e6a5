//! How fast the engine takes frames in, for comparing builds (for example with and without
//! overflow checks: `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true cargo run --release --example
//! receive_throughput`). Prints messages per second for a few sizes, in both roles.

use std::time::{Duration, Instant};

use wschannel::engine::{Config, Connection, Receiver, Role};
use wschannel::Event;

/// Counts what arrives without keeping it.
#[derive(Default)]
struct Count {
    messages: u64,
    bytes: u64,
}

impl Receiver for Count {
    fn text(&mut self, text: &str) {
        self.messages += 1;
        self.bytes += text.len() as u64;
    }
    fn binary(&mut self, data: &[u8]) {
        self.messages += 1;
        self.bytes += data.len() as u64;
    }
    fn control(&mut self, event: Event) {
        panic!("unexpected {event:?}");
    }
}

/// `count` binary messages of `size` bytes as `sender` encodes them.
fn wire(sender: Role, size: usize, count: usize) -> Vec<u8> {
    let mut conn = Connection::with_seed(sender, Config::default(), 1);
    let payload = vec![0x5a; size];
    let mut out = Vec::new();
    for _ in 0..count {
        out.extend(conn.send_binary(&payload).expect("open"));
    }
    out
}

fn measure(receiver: Role, size: usize) -> f64 {
    let sender = match receiver {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let count = (64 << 20) / (size + 14);
    let bytes = wire(sender, size, count);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let mut conn = Connection::new(receiver, Config::default());
        let mut rx = Count::default();
        let started = Instant::now();
        for chunk in bytes.chunks(256 * 1024) {
            conn.receive_data(chunk, &mut rx);
        }
        best = best.min(started.elapsed());
        assert_eq!(rx.messages, count as u64);
    }
    count as f64 / best.as_secs_f64()
}

fn main() {
    for receiver in [Role::Server, Role::Client] {
        for size in [16, 256, 8192, 65536] {
            let rate = measure(receiver, size);
            println!("{receiver:?} receives {size:>6} B: {:>12.0} msg/s", rate);
        }
    }
}
