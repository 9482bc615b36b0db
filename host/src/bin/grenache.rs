//! `grenache`: the Grenache command-line client. Not implemented yet.

fn main() -> std::process::ExitCode {
    eprintln!("grenache: not implemented yet (see README.md)");
    std::process::ExitCode::from(2)
}
