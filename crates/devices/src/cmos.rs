//! CMOS RTC and NVRAM at ports 0x70 (index) / 0x71 (data): wall-clock time from the host
//! (UTC) and the memory-size bytes firmware-style guests read.

use crate::bus::BusDevice;

mod persist;
pub use persist::{CmosArgs, CmosState, CMOS_STATE_VERSION, NVRAM_LEN};

pub const CMOS_PORT: u16 = 0x70;
pub const CMOS_LEN: u16 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const STATUS_B_24H: u8 = 1 << 1;
const STATUS_B_BINARY: u8 = 1 << 2;
const STATUS_D_VALID: u8 = 1 << 7;

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub weekday: u8,
    pub day: u8,
    pub month: u8,
    pub year: u16,
}

impl WallClock {
    /// The host's current UTC time.
    pub fn now() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_unix(t)
    }

    /// Civil date from seconds since 1970 (proleptic Gregorian, UTC).
    pub fn from_unix(t: u64) -> Self {
        let days = (t / 86400) as i64;
        let secs = t % 86400;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Self {
            seconds: (secs % 60) as u8,
            minutes: (secs / 60 % 60) as u8,
            hours: (secs / 3600) as u8,
            weekday: ((days + 4).rem_euclid(7) + 1) as u8, // 1 = Sunday
            day,
            month,
            year,
        }
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    clock: fn() -> WallClock,
}

impl Cmos {
    /// `below_4g` / `above_4g`: guest RAM bytes, reported in the NVRAM size registers.
    pub fn new(below_4g: u64, above_4g: u64) -> Self {
        Self::with_clock(below_4g, above_4g, WallClock::now)
    }

    pub fn with_clock(below_4g: u64, above_4g: u64, clock: fn() -> WallClock) -> Self {
        let mut nvram = [0u8; 128];
        nvram[REG_STATUS_A as usize] = 0x26;
        nvram[REG_STATUS_B as usize] = STATUS_B_24H;
        nvram[REG_STATUS_D as usize] = STATUS_D_VALID;
        let base_kib: u16 = 640;
        nvram[0x15..0x17].copy_from_slice(&base_kib.to_le_bytes());
        let ext_kib = (below_4g.saturating_sub(1 << 20) >> 10).min(0xffff) as u16;
        nvram[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        nvram[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (below_4g.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        nvram[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        let high = (above_4g >> 16).min(0xff_ffff) as u32;
        nvram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        Self {
            index: 0,
            nvram,
            clock,
        }
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        let status_b = self.nvram[REG_STATUS_B as usize];
        let enc = |v: u8| {
            if status_b & STATUS_B_BINARY != 0 {
                v
            } else {
                to_bcd(v)
            }
        };
        let now = || (self.clock)();
        match reg {
            REG_SECONDS => enc(now().seconds),
            REG_MINUTES => enc(now().minutes),
            REG_HOURS => {
                let h = now().hours;
                if status_b & STATUS_B_24H != 0 {
                    enc(h)
                } else {
                    let pm = if h >= 12 { 0x80 } else { 0 };
                    enc(match h % 12 {
                        0 => 12,
                        x => x,
                    }) | pm
                }
            }
            REG_WEEKDAY => enc(now().weekday),
            REG_DAY => enc(now().day),
            REG_MONTH => enc(now().month),
            REG_YEAR => enc((now().year % 100) as u8),
            REG_CENTURY => enc((now().year / 100) as u8),
            REG_STATUS_C => std::mem::take(&mut self.nvram[REG_STATUS_C as usize]),
            r => self.nvram[r as usize & 0x7f],
        }
    }

    fn write_register(&mut self, reg: u8, v: u8) {
        match reg {
            // The clock follows the host; status C and D are read-only.
            REG_SECONDS..=REG_YEAR | REG_CENTURY | REG_STATUS_C | REG_STATUS_D => {}
            // Update-in-progress (bit 7) is read-only.
            REG_STATUS_A => self.nvram[reg as usize] = v & 0x7f,
            r => self.nvram[r as usize & 0x7f] = v,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = if offset == 1 {
            self.read_register(self.index)
        } else {
            0xff
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset == 0 {
            self.index = v & 0x7f; // bit 7 is the NMI mask
        } else {
            self.write_register(self.index, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> WallClock {
        WallClock::from_unix(1_795_823_999) // 2026-11-27 23:59:59 UTC, a Friday
    }

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, &[reg]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn civil_time_conversion() {
        assert_eq!(
            fixed(),
            WallClock {
                seconds: 59,
                minutes: 59,
                hours: 23,
                weekday: 6,
                day: 27,
                month: 11,
                year: 2026
            }
        );
        assert_eq!(WallClock::from_unix(951_782_400).month, 2); // 2000-02-29
        assert_eq!(WallClock::from_unix(951_782_400).day, 29);
    }

    #[test]
    fn time_reads_in_bcd_then_binary() {
        let mut c = Cmos::with_clock(512 << 20, 0, fixed);
        assert_eq!(read(&mut c, REG_YEAR), 0x26);
        assert_eq!(read(&mut c, REG_CENTURY), 0x20);
        assert_eq!(read(&mut c, REG_HOURS), 0x23);
        c.write(0, &[REG_STATUS_B]);
        c.write(1, &[STATUS_B_24H | STATUS_B_BINARY]);
        assert_eq!(read(&mut c, REG_MONTH), 11);
        c.write(0, &[REG_STATUS_B]);
        c.write(1, &[0]); // 12-hour BCD
        assert_eq!(read(&mut c, REG_HOURS), 0x80 | 0x11);
    }

    #[test]
    fn memory_size_registers() {
        let mut c = Cmos::with_clock(512 << 20, 1 << 30, fixed);
        let lo = read(&mut c, 0x34) as u16 | (read(&mut c, 0x35) as u16) << 8;
        assert_eq!(lo, ((512 - 16) << 20 >> 16) as u16);
        let hi = read(&mut c, 0x5b) as u32
            | (read(&mut c, 0x5c) as u32) << 8
            | (read(&mut c, 0x5d) as u32) << 16;
        assert_eq!(hi, (1 << 30) >> 16);
        // NVRAM bytes keep what the guest writes.
        c.write(0, &[0x40]);
        c.write(1, &[0x5a]);
        assert_eq!(read(&mut c, 0x40), 0x5a);
    }
}
