//! The balloon as users write it: `vessel run --balloon amount_mib=N[,deflate_on_oom=on]
//! [,stats_polling_interval_s=S][,free_page_reporting=on]` and `[balloon]` in a VM
//! definition (docs/balloon.md).

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use vmm::BalloonConfig;

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

/// `--balloon amount_mib=N[,deflate_on_oom=on][,stats_polling_interval_s=S]
/// [,free_page_reporting=on]`; the amount is checked against --memory when the VM is built.
pub fn parse_balloon(s: &str) -> Result<BalloonConfig, String> {
    let mut cfg = BalloonConfig {
        amount_mib: 0,
        deflate_on_oom: false,
        stats_polling_interval_s: 0,
        free_page_reporting: false,
    };
    let mut amount = None;
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
            _ => {
                return Err(format!(
                    "invalid balloon option '{part}': expected amount_mib=N[,deflate_on_oom=on][,stats_polling_interval_s=S][,free_page_reporting=on]"
                ))
            }
        }
    }
    cfg.amount_mib =
        amount.ok_or_else(|| format!("invalid balloon '{s}': amount_mib=N is needed"))?;
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
