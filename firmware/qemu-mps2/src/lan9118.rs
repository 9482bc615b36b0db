//! A polled driver for the SMSC LAN9118 (LAN9220 family) Ethernet controller, as found on the
//! ARM MPS2 boards and modelled by QEMU (`hw/net/lan9118.c`), and its `embassy_net_driver::Driver`.
//!
//! The chip has no DMA: frames go in and out through 32-bit data FIFOs, each received frame has
//! a status word in the RX status FIFO (length including the 4-byte FCS, error bit), and each
//! transmitted frame is preceded by two command words. This driver copies one frame at a time
//! through a buffer of its own. It does not use the chip's interrupt line: the SysTick handler
//! calls [`poll_tick`] every millisecond, which wakes the network task when it waits for a frame.
//!
//! The registers are reached through `qemu-common/mmio.rs`; the one `unsafe` here is the
//! creation of the window in [`Lan9118::take`].

use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use crate::mmio::Mmio;

/// The LAN9118's register window on the MPS2 boards (AN385, AN386, AN500, AN505...).
pub const MPS2_LAN9118_BASE: usize = 0x4020_0000;

/// Largest Ethernet frame handled, without the FCS (1500 bytes of payload plus the header).
const MTU: usize = 1514;
/// Frame buffers: MTU rounded up to whole FIFO words.
const BUF: usize = 1516;

// System control and status registers (byte offsets into the window).
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6c;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const FREE_RUN: usize = 0x9c;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

/// BYTE_TEST always reads this pattern: it proves the chip is there and the bus is 32-bit LE.
const BYTE_TEST_PATTERN: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1;
const PMT_CTRL_READY: u32 = 1;
const TX_CFG_TX_ON: u32 = 1 << 1;
/// Lets the TX status FIFO overflow: this driver does not look at per-frame TX status.
const TX_CFG_TXSAO: u32 = 1 << 2;
const RX_STS_ERROR: u32 = 1 << 15;
const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
const TX_CMD_A_FIRST_SEG: u32 = 1 << 13;
const TX_CMD_A_LAST_SEG: u32 = 1 << 12;

// MAC control registers, reached through MAC_CSR_CMD/MAC_CSR_DATA.
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;
const MII_BUSY: u32 = 1;
/// The internal PHY's address on the MII bus.
const PHY_ADDR: u32 = 1;
const PHY_BMSR: u32 = 1;
const BMSR_LINK_UP: u32 = 1 << 2;

/// How often a register poll (reset, CSR busy) is retried before the driver gives up.
const SPIN_LIMIT: u32 = 100_000;

/// Woken by [`poll_tick`]: the network task waiting for a frame or for TX space.
static WAKER: AtomicWaker = AtomicWaker::new();
/// Set once the register window has an owner (see [`Lan9118::take`]).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Called from the SysTick handler every millisecond: lets the network task look at the FIFOs.
pub fn poll_tick() {
    WAKER.wake();
}

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The driver was already taken.
    Taken,
    /// BYTE_TEST did not read 0x87654321: no LAN9118 at this address.
    NotFound(u32),
    /// A soft reset or a register access did not complete.
    Timeout,
}

/// The register window (256 bytes). Only [`Lan9118::take`] makes one, at most once.
#[derive(Clone, Copy)]
struct Regs(Mmio<0x100>);

impl Regs {
    fn read(self, offset: usize) -> u32 {
        self.0.read(offset)
    }

    fn write(self, offset: usize, value: u32) {
        self.0.write(offset, value)
    }

    fn spin_until(self, offset: usize, mask: u32, want: u32) -> Result<(), InitError> {
        for _ in 0..SPIN_LIMIT {
            if self.read(offset) & mask == want {
                return Ok(());
            }
        }
        Err(InitError::Timeout)
    }

    fn mac_read(self, reg: u32) -> Result<u32, InitError> {
        self.spin_until(MAC_CSR_CMD, CSR_BUSY, 0)?;
        self.write(MAC_CSR_CMD, CSR_BUSY | CSR_READ | reg);
        self.spin_until(MAC_CSR_CMD, CSR_BUSY, 0)?;
        Ok(self.read(MAC_CSR_DATA))
    }

    fn mac_write(self, reg: u32, value: u32) -> Result<(), InitError> {
        self.spin_until(MAC_CSR_CMD, CSR_BUSY, 0)?;
        self.write(MAC_CSR_DATA, value);
        self.write(MAC_CSR_CMD, CSR_BUSY | reg);
        self.spin_until(MAC_CSR_CMD, CSR_BUSY, 0)
    }

    fn phy_read(self, reg: u32) -> Result<u32, InitError> {
        self.mac_write(MAC_MII_ACC, (PHY_ADDR << 11) | (reg << 6) | MII_BUSY)?;
        for _ in 0..SPIN_LIMIT {
            if self.mac_read(MAC_MII_ACC)? & MII_BUSY == 0 {
                return Ok(self.mac_read(MAC_MII_DATA)? & 0xffff);
            }
        }
        Err(InitError::Timeout)
    }
}

/// The LAN9118 with its frame buffers: give it to `embassy_net::new`.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx: [u8; BUF],
    tx: [u8; BUF],
}

impl Lan9118 {
    /// Resets the controller at [`MPS2_LAN9118_BASE`], reads its MAC address and enables RX
    /// and TX. Fails if called twice or if no LAN9118 answers there.
    #[allow(unsafe_code)]
    pub fn take() -> Result<Self, InitError> {
        if critical_section::with(|_| TAKEN.swap(true, Ordering::Relaxed)) {
            return Err(InitError::Taken);
        }
        // SAFETY: MPS2_LAN9118_BASE is the LAN9118's 256-byte register window on the MPS2
        // boards (aligned, device registers only, no DMA: frames pass through FIFO registers);
        // `TAKEN` makes this the only window on it.
        let regs = Regs(unsafe { Mmio::new(MPS2_LAN9118_BASE) });
        let test = regs.read(BYTE_TEST);
        if test != BYTE_TEST_PATTERN {
            return Err(InitError::NotFound(test));
        }
        regs.write(HW_CFG, HW_CFG_SRST);
        regs.spin_until(HW_CFG, HW_CFG_SRST, 0)?;
        regs.spin_until(PMT_CTRL, PMT_CTRL_READY, PMT_CTRL_READY)?;
        // The MAC address is loaded from the EEPROM at reset (QEMU fills it from `-nic macaddr`).
        let low = regs.mac_read(MAC_ADDRL)?.to_le_bytes();
        let high = regs.mac_read(MAC_ADDRH)?.to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        regs.write(INT_EN, 0);
        regs.write(RX_CFG, 0); // no offset, no end padding: the frame starts the first word
        regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        // Own address and broadcast only (reset leaves promiscuous mode on).
        regs.mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX)?;
        Ok(Self {
            regs,
            mac,
            rx: [0; BUF],
            tx: [0; BUF],
        })
    }

    /// The chip's ID_REV register (0x0118_0001 on QEMU's model).
    pub fn id_rev(&self) -> u32 {
        self.regs.read(ID_REV)
    }

    /// The free-running 25 MHz counter (counts since the chip's reset).
    pub fn free_run(&self) -> u32 {
        self.regs.read(FREE_RUN)
    }

    /// The MAC address read at reset.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Moves the next good received frame into `self.rx` and returns its length (without FCS).
    /// Frames with an error or too long for the buffer are read out and dropped.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            if (self.regs.read(RX_FIFO_INF) >> 16) & 0xff == 0 {
                return None;
            }
            let status = self.regs.read(RX_STATUS_FIFO);
            let with_fcs = ((status >> 16) & 0x3fff) as usize;
            let words = with_fcs.div_ceil(4);
            let len = with_fcs.saturating_sub(4);
            let keep = status & RX_STS_ERROR == 0 && (14..=MTU).contains(&len);
            for i in 0..words {
                let word = self.regs.read(RX_DATA_FIFO).to_le_bytes();
                if keep {
                    if let Some(dst) = self.rx.get_mut(i * 4..i * 4 + 4) {
                        dst.copy_from_slice(&word);
                    }
                }
            }
            if keep {
                return Some(len);
            }
        }
    }
}

/// A received frame, already copied out of the RX FIFO.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame: the stack fills the buffer, then it is pushed into the TX FIFO.
pub struct TxToken<'a> {
    regs: Regs,
    buf: &'a mut [u8; BUF],
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let result = f(&mut self.buf[..len]);
        // The status words are not needed (TXSAO); drain them so they do not pile up.
        while (self.regs.read(TX_FIFO_INF) >> 16) & 0xff != 0 {
            self.regs.read(TX_STATUS_FIFO);
        }
        let len32 = len as u32; // len <= MTU, fits the 11-bit fields
        self.regs
            .write(TX_DATA_FIFO, TX_CMD_A_FIRST_SEG | TX_CMD_A_LAST_SEG | len32);
        self.regs.write(TX_DATA_FIFO, len32);
        for chunk in self.buf[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        result
    }
}

impl Lan9118 {
    fn tx_space(&self) -> bool {
        // TDFREE (bytes free in the TX data FIFO) must hold a full frame and its two commands.
        (self.regs.read(TX_FIFO_INF) & 0xffff) as usize >= BUF + 8
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.tx_space() {
            WAKER.register(cx.waker());
            return None;
        }
        match self.pop_frame() {
            Some(len) => {
                let regs = self.regs;
                let frame = self.rx.get_mut(..len)?; // len <= MTU < BUF: always Some
                Some((
                    RxToken { frame },
                    TxToken {
                        regs,
                        buf: &mut self.tx,
                    },
                ))
            }
            None => {
                WAKER.register(cx.waker());
                None
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        if self.tx_space() {
            Some(TxToken {
                regs: self.regs,
                buf: &mut self.tx,
            })
        } else {
            WAKER.register(cx.waker());
            None
        }
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        match self.regs.phy_read(PHY_BMSR) {
            Ok(bmsr) if bmsr & BMSR_LINK_UP != 0 => LinkState::Up,
            _ => {
                WAKER.register(cx.waker());
                LinkState::Down
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
