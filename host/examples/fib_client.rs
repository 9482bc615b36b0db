//! The tutorial's Fibonacci client ("Microservices with Grenache") in Rust.
//! `fib_client [GRAPE_URL] [NUMBER]`, or `GRAPE` / `NUMBER` in the environment
//! (defaults `http://127.0.0.1:30001`, 10).
use std::time::Duration;

use grenache_tokio::{rpc::ws::PeerRpcClient, Link, LinkConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, var: &str, default: &str| {
        let given = std::env::args().nth(i).or_else(|| std::env::var(var).ok());
        given.unwrap_or_else(|| default.to_string())
    };
    let number: u64 = arg(2, "NUMBER", "10").parse()?;
    let peer = PeerRpcClient::new(Link::new(LinkConfig::new(arg(
        1,
        "GRAPE",
        "http://127.0.0.1:30001",
    )))?);
    let payload = serde_json::json!({ "number": number });
    let result = peer
        .request("fibonacci_worker", payload, Duration::from_secs(10))
        .await?;
    println!("Fibonacci number at place {number} in the sequence: {result}");
    Ok(())
}
