//! The tutorial's Fibonacci worker ("Microservices with Grenache") in Rust.
//! `fib_server [GRAPE_URL] [PORT]`, or `GRAPE` / `PORT` in the environment
//! (defaults `http://127.0.0.1:30001`, 1337).
use grenache_tokio::{rpc::ws::PeerRpcServer, Link, LinkConfig, Request, RpcError};

/// fib(0) = fib(1) = 1 as in the tutorial, without its exponential recursion.
fn fibonacci(n: u64) -> Option<u64> {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..n {
        (a, b) = (b, a.checked_add(b)?);
    }
    Some(b)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, var: &str, default: &str| {
        let given = std::env::args().nth(i).or_else(|| std::env::var(var).ok());
        given.unwrap_or_else(|| default.to_string())
    };
    let link = Link::new(LinkConfig::new(arg(1, "GRAPE", "http://127.0.0.1:30001")))?;
    let port: u16 = arg(2, "PORT", "1337").parse()?;
    let service = PeerRpcServer::builder(link)
        .handler(|req: Request| async move {
            let number = req.payload["number"].as_u64();
            let result = number.and_then(fibonacci).map(serde_json::Value::from);
            result.ok_or_else(|| RpcError::new("ERR_BAD_NUMBER"))
        })
        .build();
    service.listen(port).await?;
    service.start_announcing("fibonacci_worker");
    println!("fibonacci_worker listening on port {port}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
