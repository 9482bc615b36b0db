//! An embassy-time driver on the Cortex-M SysTick: one interrupt per millisecond.
//!
//! SysTick counts the 25 MHz CPU clock of QEMU's mps2-an386 down from a reload value; each
//! underflow adds one tick (1 ms, the `tick-hz-1_000` rate of embassy-time-driver) to a 64-bit
//! counter, wakes the timers that are due and lets the NIC driver poll its FIFOs. A tickless
//! driver would sleep longer, but on a board that polls its NIC every millisecond anyway the
//! periodic tick costs nothing more and stays about thirty lines.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// The CPU clock of the MPS2 FPGA images (AN385/AN386), which QEMU also feeds to SysTick.
const CPU_HZ: u32 = 25_000_000;

struct SysTickDriver {
    /// Milliseconds since `init`; only the SysTick handler writes it.
    ticks: Mutex<Cell<u64>>,
    /// Wakers waiting for a deadline (a bounded queue: 16 timers at once).
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        // A deadline already passed is served by the next tick, at most 1 ms later.
        critical_section::with(|cs| {
            self.queue.borrow_ref_mut(cs).schedule_wake(at, waker);
        });
    }
}

/// Starts the 1 kHz tick. Call once, before anything awaits a timer.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CPU_HZ / embassy_time_driver::TICK_HZ as u32 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get().wrapping_add(1);
        ticks.set(now);
        DRIVER.queue.borrow_ref_mut(cs).next_expiration(now);
    });
    crate::lan9118::poll_tick();
}
