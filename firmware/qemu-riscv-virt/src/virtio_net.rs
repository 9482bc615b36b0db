//! A polled virtio-net driver over virtio-mmio (virtio 1.x, "modern" register layout), as
//! modelled by QEMU's `virt` boards (`-device virtio-net-device`), and its
//! `embassy_net_driver::Driver`.
//!
//! QEMU virt has eight virtio-mmio slots from 0x1000_1000, 0x1000 apart; [`VirtioNet::probe`]
//! looks for the one holding a network device (device id 1). QEMU offers the legacy (version 1)
//! register layout by default: boot with `-global virtio-mmio.force-legacy=false` to get the
//! modern one this driver speaks.
//!
//! Two virtqueues of [`QUEUE_SIZE`] descriptors each live in one static block of memory
//! ([`Dma`]): the receive queue has one frame buffer per descriptor, all handed to the device at
//! start and handed back one by one as soon as a frame is copied out; the transmit queue has one
//! buffer per descriptor too, each free or owned by the device (a bitmap keeps track, so the
//! device may complete them in any order). Every buffer starts with the 12-byte
//! `virtio_net_hdr` (no offloads: all zero on transmit, ignored on receive). Addresses are
//! physical: the board runs in machine mode without translation.
//!
//! No interrupts: the machine timer handler calls [`poll_tick`] every millisecond, which wakes
//! the network task when it waits for a frame or for a free transmit buffer.
//!
//! The registers are reached through `qemu-common/mmio.rs`; the `unsafe` of this module is the
//! creation of the slots' windows in [`VirtioNet::probe`] and the accesses to the static [`Dma`]
//! block, each with its safety argument.

use core::cell::UnsafeCell;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, AtomicBool, Ordering};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use crate::mmio::Mmio;

/// The first virtio-mmio slot of QEMU's virt boards.
pub const VIRT_MMIO_BASE: usize = 0x1000_1000;
/// Distance between two virtio-mmio slots.
pub const VIRT_MMIO_STRIDE: usize = 0x1000;
/// Number of virtio-mmio slots on QEMU virt.
pub const VIRT_MMIO_SLOTS: usize = 8;

/// Descriptors per virtqueue (a power of two; QEMU accepts up to 256).
const QUEUE_SIZE: usize = 8;
/// The `virtio_net_hdr` in front of every frame (with VIRTIO_F_VERSION_1 it has `num_buffers`).
const HDR: usize = 12;
/// Largest Ethernet frame handled, without the FCS (1500 bytes of payload plus the header).
const MTU: usize = 1514;
/// One buffer: the header and a full frame.
const BUF: usize = HDR + MTU;

// virtio-mmio registers (byte offsets into a slot), virtio 1.x section 4.2.2.
const MAGIC_VALUE: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DESC_HIGH: usize = 0x084;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DRIVER_HIGH: usize = 0x094;
const QUEUE_DEVICE_LOW: usize = 0x0a0;
const QUEUE_DEVICE_HIGH: usize = 0x0a4;
/// Device configuration space; for a network device it starts with the 6-byte MAC address.
const CONFIG: usize = 0x100;

/// "virt" in little-endian ASCII.
const MAGIC: u32 = 0x7472_6976;
const DEVICE_ID_NET: u32 = 1;
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 128;
/// VIRTIO_NET_F_MAC (bit 5 of the first feature word): the MAC address is in the config space.
const F_MAC: u32 = 1 << 5;
/// VIRTIO_F_VERSION_1 (bit 32, so bit 0 of the second feature word): the modern interface.
const F_VERSION_1_HIGH: u32 = 1;
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
/// VIRTQ_DESC_F_WRITE: the device writes into this buffer.
const DESC_F_WRITE: u16 = 2;
/// VIRTQ_AVAIL_F_NO_INTERRUPT: this driver polls, the device need not interrupt.
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// The MAC used when the device does not offer one (locally administered).
const FALLBACK_MAC: [u8; 6] = [0x02, 0x00, 0x52, 0x56, 0x00, 0x01];

/// Woken by [`poll_tick`]: the network task waiting for a frame or for a transmit buffer.
static WAKER: AtomicWaker = AtomicWaker::new();
/// Set once the DMA block has an owner (see [`VirtioNet::probe`]).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Called from the machine timer handler every millisecond: lets the network task look at the
/// used rings.
pub fn poll_tick() {
    WAKER.wake();
}

/// Why the device could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The driver was already taken.
    Taken,
    /// No virtio-mmio slot holds a network device.
    NotFound,
    /// The network device speaks only the legacy interface (QEMU's default): boot with
    /// `-global virtio-mmio.force-legacy=false`.
    Legacy,
    /// The device does not offer VIRTIO_F_VERSION_1 or refused the features.
    Features,
    /// A queue is already in use or smaller than [`QUEUE_SIZE`].
    Queue,
}

/// A split-virtqueue descriptor (virtio 1.x section 2.7.5).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// The driver area ("available ring").
#[repr(C, align(2))]
struct Avail {
    flags: u16,
    idx: u16,
    ring: [u16; QUEUE_SIZE],
    used_event: u16,
}

/// One entry of the device area.
#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElem {
    id: u32,
    len: u32,
}

/// The device area ("used ring").
#[repr(C, align(4))]
struct Used {
    flags: u16,
    idx: u16,
    ring: [UsedElem; QUEUE_SIZE],
    avail_event: u16,
}

/// One virtqueue with its buffers (descriptor `i` always points at `bufs[i]`).
#[repr(C)]
struct Queue {
    desc: [Desc; QUEUE_SIZE],
    avail: Avail,
    used: Used,
    bufs: [[u8; BUF]; QUEUE_SIZE],
}

impl Queue {
    const EMPTY: Self = Self {
        desc: [Desc {
            addr: 0,
            len: 0,
            flags: 0,
            next: 0,
        }; QUEUE_SIZE],
        avail: Avail {
            flags: 0,
            idx: 0,
            ring: [0; QUEUE_SIZE],
            used_event: 0,
        },
        used: Used {
            flags: 0,
            idx: 0,
            ring: [UsedElem { id: 0, len: 0 }; QUEUE_SIZE],
            avail_event: 0,
        },
        bufs: [[0; BUF]; QUEUE_SIZE],
    };
}

/// The memory shared with the device: both virtqueues and their buffers.
#[repr(C)]
struct Dma {
    rx: Queue,
    tx: Queue,
}

/// The static home of [`Dma`]: the device writes into it behind the compiler's back, so it is
/// only reached through raw pointers, with volatile accesses for the ring indices and entries.
struct DmaCell(UnsafeCell<Dma>);

// SAFETY: the block is reached only through the single `VirtioNet` that `probe` hands out (the
// TAKEN flag), which is not shared between threads of execution (no interrupt handler touches
// it); sharing the static itself gives no access.
#[allow(unsafe_code)]
unsafe impl Sync for DmaCell {}

static DMA: DmaCell = DmaCell(UnsafeCell::new(Dma {
    rx: Queue::EMPTY,
    tx: Queue::EMPTY,
}));

/// One virtio-mmio slot's register window (0x1000 bytes: registers, then from [`CONFIG`] the
/// device's configuration space).
#[derive(Clone, Copy)]
struct Regs(Mmio<VIRT_MMIO_STRIDE>);

impl Regs {
    fn read(self, offset: usize) -> u32 {
        self.0.read(offset)
    }

    fn write(self, offset: usize, value: u32) {
        self.0.write(offset, value)
    }

    /// Byte `index` of the device configuration space (virtio-mmio allows byte reads there).
    fn config_byte(self, index: usize) -> u8 {
        self.0.read_u8(CONFIG + index)
    }

    fn set_status(self, bits: u32) {
        self.write(STATUS, self.read(STATUS) | bits);
    }

    /// Gives queue `queue` its rings: the addresses of its descriptor table, driver area and
    /// device area.
    fn setup_queue(self, queue: u32, rings: [usize; 3]) -> Result<(), InitError> {
        self.write(QUEUE_SEL, queue);
        if self.read(QUEUE_READY) != 0 || (self.read(QUEUE_NUM_MAX) as usize) < QUEUE_SIZE {
            return Err(InitError::Queue);
        }
        self.write(QUEUE_NUM, QUEUE_SIZE as u32);
        // Physical addresses are the pointers themselves (machine mode, no MMU), and 32 bits.
        let [desc, avail, used] = rings;
        self.write(QUEUE_DESC_LOW, desc as u32);
        self.write(QUEUE_DESC_HIGH, 0);
        self.write(QUEUE_DRIVER_LOW, avail as u32);
        self.write(QUEUE_DRIVER_HIGH, 0);
        self.write(QUEUE_DEVICE_LOW, used as u32);
        self.write(QUEUE_DEVICE_HIGH, 0);
        self.write(QUEUE_READY, 1);
        Ok(())
    }
}

/// The addresses of queue `q`'s descriptor table, driver area and device area.
#[allow(unsafe_code)]
fn rings(q: *mut Queue) -> [usize; 3] {
    // SAFETY: `q` points into the static DMA block; taking field addresses reads nothing and
    // creates no reference.
    unsafe {
        [
            addr_of_mut!((*q).desc) as usize,
            addr_of_mut!((*q).avail) as usize,
            addr_of_mut!((*q).used) as usize,
        ]
    }
}

/// The transmit side: its queue, the next available index and the free buffers.
pub struct Tx {
    regs: Regs,
    q: *mut Queue,
    /// The next value of the available ring's `idx`.
    avail_idx: u16,
    /// The used ring's `idx` up to which completions were taken back.
    used_seen: u16,
    /// Bit `i` set: buffer and descriptor `i` belong to the driver.
    free: u32,
}

impl Tx {
    /// Takes back the buffers the device has sent.
    #[allow(unsafe_code)]
    fn reclaim(&mut self) {
        // SAFETY: `q` points into the static DMA block this driver owns; `idx` and the ring
        // entries are written by the device, hence read with volatile loads, the entries only
        // after the fence that orders them after the index.
        let used_idx = unsafe { core::ptr::read_volatile(addr_of!((*self.q).used.idx)) };
        fence(Ordering::SeqCst);
        while self.used_seen != used_idx {
            let slot = usize::from(self.used_seen) % QUEUE_SIZE;
            // SAFETY: as above; `slot` < QUEUE_SIZE.
            let elem = unsafe { core::ptr::read_volatile(addr_of!((*self.q).used.ring[slot])) };
            // An id out of range would be a device bug: ignore it rather than corrupt the bitmap.
            if (elem.id as usize) < QUEUE_SIZE {
                self.free |= 1 << elem.id;
            }
            self.used_seen = self.used_seen.wrapping_add(1);
        }
    }

    fn has_room(&mut self) -> bool {
        self.reclaim();
        self.free != 0
    }
}

/// The virtio-net device with its queues: give it to `embassy_net::new`.
pub struct VirtioNet {
    regs: Regs,
    mac: [u8; 6],
    rx: *mut Queue,
    /// The used ring's `idx` up to which received frames were taken.
    rx_used_seen: u16,
    /// The next value of the receive queue's available `idx`.
    rx_avail_idx: u16,
    /// The last received frame, copied out so that its buffer goes back to the device at once.
    frame: [u8; MTU],
    tx: Tx,
}

impl VirtioNet {
    /// Finds the virtio-mmio slot holding a network device, initialises it (features, both
    /// queues, receive buffers) and reads its MAC address. Fails if called twice, if there is
    /// no network device or if it cannot be driven.
    #[allow(unsafe_code)]
    pub fn probe() -> Result<Self, InitError> {
        if critical_section::with(|_| TAKEN.swap(true, Ordering::Relaxed)) {
            return Err(InitError::Taken);
        }
        let mut found = None;
        for slot in 0..VIRT_MMIO_SLOTS {
            // SAFETY: QEMU virt's virtio-mmio slots are 0x1000-byte windows of device
            // registers from VIRT_MMIO_BASE, VIRT_MMIO_STRIDE apart (an empty slot reads as
            // zero); `TAKEN` makes this the only driver on them, and the registers written only
            // steer the device, whose DMA is confined to the static `Dma` block whose addresses
            // this driver gives it.
            let regs = Regs(unsafe { Mmio::new(VIRT_MMIO_BASE + slot * VIRT_MMIO_STRIDE) });
            if regs.read(MAGIC_VALUE) == MAGIC && regs.read(DEVICE_ID) == DEVICE_ID_NET {
                found = Some(regs);
                break;
            }
        }
        let regs = found.ok_or(InitError::NotFound)?;
        if regs.read(VERSION) != 2 {
            return Err(InitError::Legacy);
        }
        // Initialisation as virtio 1.x section 3.1.1 orders it.
        regs.write(STATUS, 0);
        regs.set_status(STATUS_ACKNOWLEDGE);
        regs.set_status(STATUS_DRIVER);
        regs.write(DEVICE_FEATURES_SEL, 0);
        let low = regs.read(DEVICE_FEATURES);
        regs.write(DEVICE_FEATURES_SEL, 1);
        let high = regs.read(DEVICE_FEATURES);
        if high & F_VERSION_1_HIGH == 0 {
            regs.set_status(STATUS_FAILED);
            return Err(InitError::Features);
        }
        regs.write(DRIVER_FEATURES_SEL, 0);
        regs.write(DRIVER_FEATURES, low & F_MAC);
        regs.write(DRIVER_FEATURES_SEL, 1);
        regs.write(DRIVER_FEATURES, F_VERSION_1_HIGH);
        regs.set_status(STATUS_FEATURES_OK);
        if regs.read(STATUS) & STATUS_FEATURES_OK == 0 {
            regs.set_status(STATUS_FAILED);
            return Err(InitError::Features);
        }

        let dma = DMA.0.get();
        // SAFETY: TAKEN guarantees this is the only code that ever reaches the block; taking
        // field addresses creates no reference.
        let (rx, tx) = unsafe { (addr_of_mut!((*dma).rx), addr_of_mut!((*dma).tx)) };
        // SAFETY: the device does not own any of the block yet (its queues are not ready), so
        // plain writes through the raw pointers race with nothing. Every receive descriptor
        // points at its own buffer, device-writable, and all are offered; transmit descriptors
        // are filled per frame.
        unsafe {
            for i in 0..QUEUE_SIZE {
                (*rx).desc[i] = Desc {
                    addr: addr_of_mut!((*rx).bufs[i]) as usize as u64,
                    len: BUF as u32,
                    flags: DESC_F_WRITE,
                    next: 0,
                };
                (*rx).avail.ring[i] = i as u16;
            }
            (*rx).avail.flags = AVAIL_F_NO_INTERRUPT;
            (*rx).avail.idx = QUEUE_SIZE as u16;
            (*tx).avail.flags = AVAIL_F_NO_INTERRUPT;
        }
        fence(Ordering::SeqCst);
        let queues = regs
            .setup_queue(RX_QUEUE, rings(rx))
            .and_then(|()| regs.setup_queue(TX_QUEUE, rings(tx)));
        if let Err(e) = queues {
            regs.set_status(STATUS_FAILED);
            return Err(e);
        }
        let mac = if low & F_MAC != 0 {
            core::array::from_fn(|i| regs.config_byte(i))
        } else {
            FALLBACK_MAC
        };
        regs.set_status(STATUS_DRIVER_OK);
        regs.write(QUEUE_NOTIFY, RX_QUEUE);
        Ok(Self {
            regs,
            mac,
            rx,
            rx_used_seen: 0,
            rx_avail_idx: QUEUE_SIZE as u16,
            frame: [0; MTU],
            tx: Tx {
                regs,
                q: tx,
                avail_idx: 0,
                used_seen: 0,
                free: (1 << QUEUE_SIZE) - 1,
            },
        })
    }

    /// The MAC address (from the device's configuration space).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The base address of the virtio-mmio slot in use.
    pub fn base(&self) -> usize {
        self.regs.0.base()
    }

    /// Copies the next good received frame into `self.frame`, gives its buffer back to the
    /// device and returns the frame's length. Frames too short or too long are dropped.
    #[allow(unsafe_code)]
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            // SAFETY: `rx` points into the static DMA block this driver owns; the device writes
            // the used ring, hence the volatile load, and the fence orders the entry and the
            // buffer contents after the index.
            let used_idx = unsafe { core::ptr::read_volatile(addr_of!((*self.rx).used.idx)) };
            if used_idx == self.rx_used_seen {
                return None;
            }
            fence(Ordering::SeqCst);
            let entry = usize::from(self.rx_used_seen) % QUEUE_SIZE;
            // SAFETY: as above; `entry` < QUEUE_SIZE.
            let elem = unsafe { core::ptr::read_volatile(addr_of!((*self.rx).used.ring[entry])) };
            self.rx_used_seen = self.rx_used_seen.wrapping_add(1);
            let id = elem.id as usize;
            if id >= QUEUE_SIZE {
                continue; // a device bug; nothing to give back
            }
            let len = (elem.len as usize).saturating_sub(HDR);
            let keep = (14..=MTU).contains(&len);
            if keep {
                // SAFETY: the device handed buffer `id` back through the used ring (and does not
                // touch it until it is offered again below); the fence above orders its
                // contents; HDR + len <= BUF, so the range is inside the buffer.
                let buf = unsafe { &*addr_of!((*self.rx).bufs[id]) };
                if let (Some(dst), Some(src)) = (self.frame.get_mut(..len), buf.get(HDR..HDR + len))
                {
                    dst.copy_from_slice(src);
                }
            }
            let slot = usize::from(self.rx_avail_idx) % QUEUE_SIZE;
            self.rx_avail_idx = self.rx_avail_idx.wrapping_add(1);
            // SAFETY: the available ring belongs to the driver; the entry is written before the
            // fence and the index after it (volatile), so the device sees the entry first.
            unsafe {
                core::ptr::write_volatile(addr_of_mut!((*self.rx).avail.ring[slot]), id as u16);
                fence(Ordering::SeqCst);
                core::ptr::write_volatile(addr_of_mut!((*self.rx).avail.idx), self.rx_avail_idx);
            }
            fence(Ordering::SeqCst);
            // Frames QEMU could not deliver for lack of buffers wait for this notification.
            self.regs.write(QUEUE_NOTIFY, RX_QUEUE);
            if keep {
                return Some(len);
            }
        }
    }
}

/// A received frame, already copied out of its receive buffer.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame in a free transmit buffer (the driver made sure one is free).
pub struct TxToken<'a> {
    tx: &'a mut Tx,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    #[allow(unsafe_code)]
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let tx = self.tx;
        let len = len.min(MTU);
        let id = tx.free.trailing_zeros() as usize % QUEUE_SIZE; // free != 0 (Driver checks)
        tx.free &= !(1 << id);
        let q = tx.q;
        // SAFETY: buffer `id` was free, so the device does not read it; `q` points into the
        // static DMA block this driver owns, and this is the only reference to the buffer.
        let buf = unsafe { &mut *addr_of_mut!((*q).bufs[id]) };
        buf[..HDR].fill(0); // no checksum or segmentation offload
        let result = f(&mut buf[HDR..HDR + len]);
        let slot = usize::from(tx.avail_idx) % QUEUE_SIZE;
        tx.avail_idx = tx.avail_idx.wrapping_add(1);
        // SAFETY: descriptor `id` and the available ring belong to the driver until the index
        // store; the fence orders descriptor, entry and buffer before the volatile index store.
        unsafe {
            (*q).desc[id] = Desc {
                addr: addr_of_mut!((*q).bufs[id]) as usize as u64,
                len: (HDR + len) as u32,
                flags: 0,
                next: 0,
            };
            core::ptr::write_volatile(addr_of_mut!((*q).avail.ring[slot]), id as u16);
            fence(Ordering::SeqCst);
            core::ptr::write_volatile(addr_of_mut!((*q).avail.idx), tx.avail_idx);
        }
        fence(Ordering::SeqCst);
        tx.regs.write(QUEUE_NOTIFY, TX_QUEUE);
        result
    }
}

impl embassy_net_driver::Driver for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.tx.has_room() {
            WAKER.register(cx.waker());
            return None;
        }
        match self.pop_frame() {
            Some(len) => Some((
                RxToken {
                    frame: self.frame.get_mut(..len)?, // len <= MTU: always Some
                },
                TxToken { tx: &mut self.tx },
            )),
            None => {
                WAKER.register(cx.waker());
                None
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        if self.tx.has_room() {
            Some(TxToken { tx: &mut self.tx })
        } else {
            WAKER.register(cx.waker());
            None
        }
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        // VIRTIO_NET_F_STATUS is not negotiated: the link counts as up, as the spec says.
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
