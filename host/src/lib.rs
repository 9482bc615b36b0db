//! What the `grape` and `grenache` binaries share.

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, spans), for log collectors
    Json,
}

/// Logs to stderr with `tracing`: warnings only by default, `-v` info, `-vv` debug, `-vvv` and
/// more trace; as text (colours only on a terminal) or as JSON lines.
pub fn init_logging(verbose: u8, format: LogFormat) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The span list carries the request ids of rpc/metrics.rs's spans.
        LogFormat::Json => builder.json().with_span_list(true).init(),
    }
}
