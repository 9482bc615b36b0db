//! A window of memory-mapped device registers: the one place the QEMU boards' NIC drivers
//! (lan9118, virtio-net) read and write hardware.
//!
//! The safety argument is made once, where a window is created ([`Mmio::new`], `unsafe`);
//! accesses through it are safe because every one is checked to fall, aligned, inside the
//! window (the offsets are constants, so the checks fold away).

/// `WINDOW` bytes of device registers at a fixed physical address.
#[derive(Clone, Copy)]
pub struct Mmio<const WINDOW: usize> {
    base: usize,
}

impl<const WINDOW: usize> Mmio<WINDOW> {
    /// The window of `WINDOW` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be 4-byte aligned and `base..base + WINDOW` must be device registers that
    /// no Rust object aliases and that the caller owns for as long as the window is used, on
    /// which no read or write can break Rust's memory safety (a device that does DMA must be
    /// given only memory set aside for it). Reads have effects on some devices (a FIFO port
    /// pops): accesses are volatile, each one happens exactly as written.
    #[allow(unsafe_code)]
    pub const unsafe fn new(base: usize) -> Self {
        Mmio { base }
    }

    /// The window's start address.
    // Not every board prints where its NIC is.
    #[allow(dead_code)]
    pub fn base(self) -> usize {
        self.base
    }

    /// The address of the `size`-byte register at `offset`, which must lie aligned inside the
    /// window (a driver bug otherwise: the offsets are the drivers' constants).
    fn at(self, offset: usize, size: usize) -> usize {
        assert!(
            offset.is_multiple_of(size) && offset + size <= WINDOW,
            "register outside the window"
        );
        self.base + offset
    }

    /// Reads the 32-bit register at `offset`.
    #[allow(unsafe_code)]
    pub fn read(self, offset: usize) -> u32 {
        let address = self.at(offset, 4);
        // SAFETY: an aligned 32-bit register inside the window, which `new`'s caller vouched
        // for (device registers that no Rust object aliases).
        unsafe { core::ptr::read_volatile(address as *const u32) }
    }

    /// Writes the 32-bit register at `offset`.
    #[allow(unsafe_code)]
    pub fn write(self, offset: usize, value: u32) {
        let address = self.at(offset, 4);
        // SAFETY: as in `read`; `new`'s caller vouched that writes to these registers cannot
        // break memory safety.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) }
    }

    /// Reads the byte register at `offset`.
    // The LAN9118 has no byte registers; virtio-net reads its MAC address bytewise.
    #[allow(dead_code, unsafe_code)]
    pub fn read_u8(self, offset: usize) -> u8 {
        let address = self.at(offset, 1);
        // SAFETY: as in `read`, for a byte inside the window.
        unsafe { core::ptr::read_volatile(address as *const u8) }
    }
}
