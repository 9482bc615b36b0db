//! An embassy-time driver on the CLINT of QEMU's RISC-V virt board: one machine timer
//! interrupt per millisecond.
//!
//! `now()` reads the CLINT's 64-bit `mtime` (10 MHz on QEMU virt) and divides it down to the
//! 1 kHz tick of embassy-time-driver (`tick-hz-1_000`), so time never depends on interrupts
//! being served. The interrupt is periodic, as qemu-mps2's SysTick: each one moves `mtimecmp`
//! to the next millisecond, wakes the timers that are due and lets the virtio-net driver look at
//! its used rings. A tickless design (`mtimecmp` at the earliest deadline) would sleep longer,
//! but the NIC is polled every millisecond anyway, so the tick costs nothing more and needs no
//! re-arming logic between `schedule_wake` and the handler. Between ticks the executor sleeps in
//! `wfi` (embassy-executor's riscv32 thread executor).

use core::cell::RefCell;
use core::task::Waker;

use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;
use riscv::interrupt::Interrupt;

/// The CLINT's `mtime` (64 bits, read-only here) on QEMU virt.
const MTIME: usize = 0x0200_bff8;
/// Hart 0's `mtimecmp` on QEMU virt.
const MTIMECMP0: usize = 0x0200_4000;
/// `mtime` counts at 10 MHz on QEMU virt (`RISCV_ACLINT_DEFAULT_TIMEBASE_FREQ`).
const MTIME_HZ: u64 = 10_000_000;
/// `mtime` counts per embassy tick.
const PER_TICK: u64 = MTIME_HZ / embassy_time_driver::TICK_HZ;

struct ClintDriver {
    /// Wakers waiting for a deadline (a bounded queue: 16 timers at once).
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: ClintDriver = ClintDriver {
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[allow(unsafe_code)]
fn read_u32(addr: usize) -> u32 {
    // SAFETY: only called with MTIME and MTIME + 4: the two aligned 32-bit halves of the CLINT's
    // mtime register on QEMU virt, device memory no Rust object aliases; reading it has no side
    // effect.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

#[allow(unsafe_code)]
fn write_u32(addr: usize, value: u32) {
    // SAFETY: only called with MTIMECMP0 and MTIMECMP0 + 4: the aligned halves of hart 0's
    // mtimecmp in the CLINT, device memory no Rust object aliases; the only effect of a write is
    // when the timer interrupt fires.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// The raw `mtime` (10 MHz since QEMU started), for the stack's seed.
pub fn counter() -> u64 {
    mtime()
}

/// `mtime`, read as two halves (RV32 has no 64-bit load): the high half is read again until it
/// did not change, so a carry between the two reads cannot give a value 2^32 off.
fn mtime() -> u64 {
    loop {
        let hi = read_u32(MTIME + 4);
        let lo = read_u32(MTIME);
        if read_u32(MTIME + 4) == hi {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

/// Sets hart 0's `mtimecmp`. The high half first goes to all ones, so that no intermediate value
/// (new low half with the old high half) is in the past and fires early.
fn set_mtimecmp(at: u64) {
    write_u32(MTIMECMP0 + 4, u32::MAX);
    write_u32(MTIMECMP0, at as u32);
    write_u32(MTIMECMP0 + 4, (at >> 32) as u32);
}

impl Driver for ClintDriver {
    fn now(&self) -> u64 {
        mtime() / PER_TICK
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        // A deadline already passed is served by the next tick, at most 1 ms later.
        critical_section::with(|cs| {
            self.queue.borrow_ref_mut(cs).schedule_wake(at, waker);
        });
    }
}

/// Starts the 1 kHz tick and enables machine interrupts. Call once, before anything awaits a
/// timer.
#[allow(unsafe_code)]
pub fn init() {
    set_mtimecmp(next_tick(mtime()));
    // SAFETY: the machine timer handler below is defined (riscv-rt dispatches to it) and only
    // touches state behind critical sections or atomics; nothing before this point holds a
    // critical section that interrupts would break.
    unsafe {
        riscv::interrupt::enable_interrupt(Interrupt::MachineTimer);
        riscv::interrupt::enable();
    }
}

/// The `mtime` value of the next millisecond boundary after `now`.
fn next_tick(now: u64) -> u64 {
    (now / PER_TICK).saturating_add(1).saturating_mul(PER_TICK)
}

#[riscv_rt::core_interrupt(Interrupt::MachineTimer)]
fn machine_timer() {
    let now = mtime();
    // Re-arming from `now` (not from the previous compare value) skips ticks lost while
    // interrupts were masked instead of firing them back to back.
    set_mtimecmp(next_tick(now));
    critical_section::with(|cs| {
        DRIVER
            .queue
            .borrow_ref_mut(cs)
            .next_expiration(now / PER_TICK);
    });
    crate::virtio_net::poll_tick();
}
