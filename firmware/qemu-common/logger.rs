//! A `log` backend over semihosting, so the adapter's traces reach the host's stdout (the QEMU
//! boards include it as `#[path = "../../qemu-common/logger.rs"] mod logger;`; it prints through
//! board.rs's `print`).

use log::{LevelFilter, Log, Metadata, Record};

struct Semihosting;

impl Log for Semihosting {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let ms = embassy_time::Instant::now().as_millis();
        crate::board::print(format_args!(
            "[{} ms] {} {}",
            ms,
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: Semihosting = Semihosting;

/// Installs the logger (a second call changes nothing).
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
