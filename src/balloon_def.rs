//! The balloon as users write it: `vessel run --balloon amount_mib=N[,deflate_on_oom=on]
//! [,stats_polling_interval_s=S][,free_page_reporting=on]` and `[balloon]` in a VM
//! definition (docs/balloon.md).

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use vmm::{BalloonConfig, DynamicMemory};

/// `[balloon]` in a VM definition.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonDef {
    /// MiB the balloon takes from the guest at boot (0: none yet).
    #[serde(default = "zero")]
    pub amount_mib: Spanned<i64>,
    #[serde(default)]
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; 0 (default) turns statistics off.
    #[serde(default = "zero")]
    pub stats_polling_interval_s: Spanned<i64>,
    #[serde(default)]
    pub free_page_reporting: bool,
    /// `[balloon.dynamic]`: the target follows the guest's use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<Spanned<DynamicDef>>,
}

/// `[balloon.dynamic]` in a VM definition (docs/balloon.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicDef {
    /// The guest never has less than this, in MiB.
    pub min_mib: Spanned<i64>,
    /// Free memory kept above the guest's use, in percent of it.
    #[serde(default = "default_buffer")]
    pub buffer_percent: Spanned<i64>,
    /// Seconds the guest must have had too much before memory is taken back.
    #[serde(default = "default_shrink_delay")]
    pub shrink_delay_s: Spanned<i64>,
}

/// Hyper-V's default memory buffer.
const DEFAULT_BUFFER_PERCENT: u16 = 20;
const DEFAULT_SHRINK_DELAY_S: u32 = 30;

fn default_buffer() -> Spanned<i64> {
    Spanned::new(0..0, i64::from(DEFAULT_BUFFER_PERCENT))
}

fn default_shrink_delay() -> Spanned<i64> {
    Spanned::new(0..0, i64::from(DEFAULT_SHRINK_DELAY_S))
}

impl DynamicDef {
    fn check(&self, memory_mib: u64, errors: &mut Vec<(Range<usize>, String)>) {
        let min = *self.min_mib.get_ref();
        if u64::try_from(min).map_or(true, |m| m > memory_mib) {
            errors.push((
                self.min_mib.span(),
                format!("balloon dynamic min_mib {min}: between 0 and the VM's memory, {memory_mib} MiB"),
            ));
        }
        let buffer = *self.buffer_percent.get_ref();
        if u16::try_from(buffer).map_or(true, |b| b > vmm::MAX_BUFFER_PERCENT) {
            errors.push((
                self.buffer_percent.span(),
                format!(
                    "balloon dynamic buffer_percent {buffer}: between 0 and {}",
                    vmm::MAX_BUFFER_PERCENT
                ),
            ));
        }
        let delay = *self.shrink_delay_s.get_ref();
        if u32::try_from(delay).is_err() {
            errors.push((
                self.shrink_delay_s.span(),
                format!("balloon dynamic shrink_delay_s {delay}: 0 or more seconds"),
            ));
        }
    }

    fn to_dynamic(&self) -> DynamicMemory {
        DynamicMemory {
            min_mib: u32::try_from(*self.min_mib.get_ref()).unwrap_or(0),
            buffer_percent: u16::try_from(*self.buffer_percent.get_ref())
                .unwrap_or(DEFAULT_BUFFER_PERCENT),
            shrink_delay_s: u32::try_from(*self.shrink_delay_s.get_ref())
                .unwrap_or(DEFAULT_SHRINK_DELAY_S),
        }
    }
}

fn zero() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}

impl BalloonDef {
    /// Errors (span, message) against a guest of `memory_mib`.
    pub fn check(&self, memory_mib: u64) -> Vec<(Range<usize>, String)> {
        let mut errors = Vec::new();
        let amount = *self.amount_mib.get_ref();
        if u64::try_from(amount).map_or(true, |a| a > memory_mib) {
            errors.push((
                self.amount_mib.span(),
                format!(
                    "balloon amount_mib {amount}: between 0 and the VM's memory, {memory_mib} MiB"
                ),
            ));
        }
        let interval = *self.stats_polling_interval_s.get_ref();
        if u16::try_from(interval).is_err() {
            errors.push((
                self.stats_polling_interval_s.span(),
                format!("balloon stats_polling_interval_s {interval}: between 0 and 65535"),
            ));
        }
        if let Some(dynamic) = &self.dynamic {
            if interval == 0 {
                errors.push((
                    dynamic.span(),
                    "balloon dynamic memory follows the guest's statistics: set \
                     stats_polling_interval_s (e.g. 2)"
                        .into(),
                ));
            }
            dynamic.get_ref().check(memory_mib, &mut errors);
        }
        errors
    }

    /// The device configuration (after [`BalloonDef::check`]).
    pub fn to_config(&self) -> BalloonConfig {
        BalloonConfig {
            amount_mib: u32::try_from(*self.amount_mib.get_ref()).unwrap_or(0),
            deflate_on_oom: self.deflate_on_oom,
            stats_polling_interval_s: u16::try_from(*self.stats_polling_interval_s.get_ref())
                .unwrap_or(0),
            free_page_reporting: self.free_page_reporting,
            dynamic: self.dynamic.as_ref().map(|d| d.get_ref().to_dynamic()),
        }
    }
}

fn switch(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("invalid balloon {key} value '{v}' (on or off)")),
    }
}

/// What `--balloon` takes.
const BALLOON_SYNTAX: &str = "amount_mib=N[,deflate_on_oom=on][,stats_polling_interval_s=S]\
[,free_page_reporting=on][,dynamic=on,min_mib=M[,buffer_percent=P][,shrink_delay_s=D]]";

/// Dynamic memory's options as given on the command line.
#[derive(Default)]
struct DynamicFlags {
    on: bool,
    min_mib: Option<u32>,
    buffer_percent: Option<u16>,
    shrink_delay_s: Option<u32>,
}

impl DynamicFlags {
    fn take(&mut self, key: &str, v: &str) -> Result<bool, String> {
        let bad = |what: &str| format!("invalid balloon {key} '{v}' ({what})");
        match key {
            "dynamic" => self.on = switch(key, v)?,
            "min_mib" => self.min_mib = Some(v.parse().map_err(|_| bad("MiB"))?),
            "buffer_percent" => {
                self.buffer_percent = Some(
                    v.parse()
                        .ok()
                        .filter(|p| *p <= vmm::MAX_BUFFER_PERCENT)
                        .ok_or_else(|| bad("0-1000"))?,
                )
            }
            "shrink_delay_s" => self.shrink_delay_s = Some(v.parse().map_err(|_| bad("seconds"))?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(self, stats_interval: u16) -> Result<Option<DynamicMemory>, String> {
        if !self.on {
            if self.min_mib.is_some()
                || self.buffer_percent.is_some()
                || self.shrink_delay_s.is_some()
            {
                return Err(
                    "invalid balloon: min_mib, buffer_percent and shrink_delay_s \
                            are dynamic memory's: add dynamic=on"
                        .into(),
                );
            }
            return Ok(None);
        }
        let min_mib = self
            .min_mib
            .ok_or("invalid balloon: dynamic=on needs min_mib=M (the least the guest keeps)")?;
        if stats_interval == 0 {
            return Err(
                "invalid balloon: dynamic memory follows the guest's statistics: \
                        add stats_polling_interval_s=S"
                    .into(),
            );
        }
        Ok(Some(DynamicMemory {
            min_mib,
            buffer_percent: self.buffer_percent.unwrap_or(DEFAULT_BUFFER_PERCENT),
            shrink_delay_s: self.shrink_delay_s.unwrap_or(DEFAULT_SHRINK_DELAY_S),
        }))
    }
}

/// `--balloon` (see [`BALLOON_SYNTAX`]); the amounts are checked against --memory when
/// the VM is built.
pub fn parse_balloon(s: &str) -> Result<BalloonConfig, String> {
    let mut cfg = BalloonConfig {
        amount_mib: 0,
        deflate_on_oom: false,
        stats_polling_interval_s: 0,
        free_page_reporting: false,
        dynamic: None,
    };
    let mut amount = None;
    let mut dynamic = DynamicFlags::default();
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("amount_mib", v)) if amount.is_none() => {
                amount = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("invalid balloon amount_mib '{v}' (MiB)"))?,
                );
            }
            Some(("deflate_on_oom", v)) => cfg.deflate_on_oom = switch("deflate_on_oom", v)?,
            Some(("stats_polling_interval_s", v)) => {
                cfg.stats_polling_interval_s = v.parse().map_err(|_| {
                    format!("invalid balloon stats_polling_interval_s '{v}' (0-65535)")
                })?
            }
            Some(("free_page_reporting", v)) => {
                cfg.free_page_reporting = switch("free_page_reporting", v)?
            }
            Some((key, v)) if dynamic.take(key, v)? => {}
            _ => {
                return Err(format!(
                    "invalid balloon option '{part}': expected {BALLOON_SYNTAX}"
                ))
            }
        }
    }
    cfg.amount_mib =
        amount.ok_or_else(|| format!("invalid balloon '{s}': amount_mib=N is needed"))?;
    cfg.dynamic = dynamic.finish(cfg.stats_polling_interval_s)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_spec_parses_and_refuses_bad_input() {
        let c =
            parse_balloon("amount_mib=64,deflate_on_oom=on,stats_polling_interval_s=2").unwrap();
        assert_eq!(c.amount_mib, 64);
        assert!(c.deflate_on_oom && !c.free_page_reporting);
        assert_eq!(c.stats_polling_interval_s, 2);
        assert!(
            parse_balloon("amount_mib=0,free_page_reporting=on")
                .unwrap()
                .free_page_reporting
        );
        for bad in [
            "",
            "deflate_on_oom=on",
            "amount_mib=-1",
            "amount_mib=1,amount_mib=2",
            "amount_mib=1,stats_polling_interval_s=70000",
            "amount_mib=1,deflate_on_oom=maybe",
            "amount_mib=1,colour=red",
        ] {
            assert!(parse_balloon(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dynamic_memory_from_the_command_line() {
        let c = parse_balloon(
            "amount_mib=0,stats_polling_interval_s=2,dynamic=on,min_mib=256,buffer_percent=30",
        )
        .unwrap();
        assert_eq!(
            c.dynamic,
            Some(DynamicMemory {
                min_mib: 256,
                buffer_percent: 30,
                shrink_delay_s: DEFAULT_SHRINK_DELAY_S
            })
        );
        for (bad, why) in [
            (
                "amount_mib=0,stats_polling_interval_s=2,dynamic=on",
                "needs min_mib",
            ),
            (
                "amount_mib=0,dynamic=on,min_mib=1",
                "stats_polling_interval_s",
            ),
            (
                "amount_mib=0,stats_polling_interval_s=2,min_mib=1",
                "add dynamic=on",
            ),
            (
                "amount_mib=0,stats_polling_interval_s=2,dynamic=on,min_mib=1,buffer_percent=1001",
                "0-1000",
            ),
            (
                "amount_mib=0,stats_polling_interval_s=2,dynamic=maybe",
                "on or off",
            ),
        ] {
            let e = parse_balloon(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn dynamic_memory_in_a_definition_is_checked() {
        let def: BalloonDef = toml::from_str(
            "stats_polling_interval_s = 2\n[dynamic]\nmin_mib = 384\nshrink_delay_s = 10",
        )
        .unwrap();
        assert!(def.check(512).is_empty());
        let d = def.to_config().dynamic.unwrap();
        assert_eq!(
            (d.min_mib, d.buffer_percent, d.shrink_delay_s),
            (384, 20, 10)
        );
        let errors = def.check(256);
        assert!(errors[0].1.contains("min_mib 384"), "{errors:?}");
        let def: BalloonDef =
            toml::from_str("[dynamic]\nmin_mib = 1\nbuffer_percent = -5").unwrap();
        let errors: Vec<String> = def.check(512).into_iter().map(|e| e.1).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("stats_polling_interval_s"));
        assert!(errors[1].contains("buffer_percent -5"));
        assert!(toml::from_str::<BalloonDef>("[dynamic]\nbuffer_percent = 5").is_err());
        assert!(toml::from_str::<BalloonDef>("[dynamic]\nmin_mib = 5\nmax = 1").is_err());
    }

    #[test]
    fn definition_is_checked_against_memory() {
        let def: BalloonDef =
            toml::from_str("amount_mib = 600\nstats_polling_interval_s = -1").unwrap();
        let errors = def.check(512);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].1.contains("512 MiB"));
        let def: BalloonDef =
            toml::from_str("amount_mib = 128\nfree_page_reporting = true").unwrap();
        assert!(def.check(512).is_empty());
        assert_eq!(def.to_config().amount_mib, 128);
        assert!(toml::from_str::<BalloonDef>("amount = 1").is_err());
    }
}
