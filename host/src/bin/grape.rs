//! `grape`: a drop-in for the Node `grenache-grape` CLI. Not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("grape: not implemented yet (the DHT node lands after the core; see README.md)");
    std::process::ExitCode::from(2)
}
