//! `user-data`: vessel's `#cloud-config` (the default user with the VM owner's ssh keys,
//! no password logins), combined with optional user-data of the user's own.
//!
//! Without extra user-data the result is vessel's `#cloud-config` document alone. With it,
//! the result is a MIME `multipart/mixed` message, which cloud-init reads part by part:
//! first the user's data exactly as given, then vessel's `#cloud-config` with the header
//! `Merge-Type: list(append)+dict(no_replace,recurse_list)+str()`. cloud-init merges
//! cloud-config parts in order with the merger of the incoming part, so the user's
//! settings win over vessel's for plain values, mappings are merged key by key, and lists
//! are appended (the user's `ssh_authorized_keys`, `users`, `packages`, `runcmd` are all
//! kept, vessel's entries added). Leaving the user's text untouched keeps its meaning as
//! PyYAML reads it (YAML 1.1: `0644`, `yes`, quoted strings) — a parse-and-re-emit in
//! Rust would not. The user's `#cloud-config` is still parsed here first, so invalid YAML
//! is refused before boot with its line and column.

use crate::yaml;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use std::fmt::Write as _;

/// The largest extra user-data accepted, in bytes.
pub const MAX_EXTRA_USER_DATA: usize = 16 << 20;

/// How cloud-init merges vessel's part into the user's cloud-config (documented merger).
pub const MERGE_TYPE: &str = "list(append)+dict(no_replace,recurse_list)+str()";

/// Why user-data could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The extra user-data is larger than [`MAX_EXTRA_USER_DATA`].
    #[error("extra user-data is {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// Its size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The extra user-data starts with no header cloud-init knows.
    #[error(
        "extra user-data starts with {0:?}: it must start with #cloud-config, #!, #include, \
         #include-once, #cloud-boothook, #part-handler, #cloud-config-archive, \
         ## template: jinja, or be a MIME message (with a MIME-Version header)"
    )]
    UnknownFormat(String),
    /// The extra `#cloud-config` is not valid YAML.
    #[error("extra user-data is not valid YAML: {message}")]
    Yaml {
        /// Line of the error (1-based), when known.
        line: Option<usize>,
        /// Column of the error (1-based), when known.
        column: Option<usize>,
        /// The parser's message (it names the line and column too).
        message: String,
    },
    /// The extra `#cloud-config` is YAML but not a mapping of settings.
    #[error("extra user-data: a #cloud-config document must be a mapping of settings, not a {0}")]
    NotAMapping(&'static str),
    /// A MIME message that does not start with a header line.
    #[error("extra user-data: a MIME message must start with its headers (e.g. Content-Type:)")]
    MimeHeaders,
    /// No MIME boundary could be found that the user's data does not contain.
    #[error("extra user-data contains every MIME boundary vessel tried")]
    Boundary,
    /// Vessel's own document could not be written.
    #[error(transparent)]
    Render(#[from] yaml::YamlError),
}

/// Vessel's own cloud-config.
#[derive(Serialize)]
struct VesselConfig<'a> {
    users: [&'static str; 1],
    /// Top-level keys go to the default user (cloud-init's `cc_ssh`); the schema wants
    /// at least one, so an empty list is left out.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ssh_authorized_keys: &'a [String],
    ssh_pwauth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_info: Option<SystemInfo<'a>>,
    /// cloud-init's `mounts:` (virtio-fs shares, [`crate::mounts`]).
    #[serde(skip_serializing_if = "<[[String; 6]]>::is_empty")]
    mounts: &'a [[String; 6]],
}

/// `system_info: { default_user: { name: ... } }`: renames the distribution's default user
/// while keeping its groups, sudo rule and shell from the image's `cloud.cfg`.
#[derive(Serialize)]
struct SystemInfo<'a> {
    default_user: DefaultUser<'a>,
}

/// The default user's settings vessel changes.
#[derive(Serialize)]
struct DefaultUser<'a> {
    name: &'a str,
}

/// What kind of user-data the user gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// `#cloud-config` YAML.
    CloudConfig,
    /// A MIME message (cloud-init's test: `mime-version:` in the first 4096 bytes).
    Mime,
    /// Another single-part format, with the MIME type cloud-init gives it.
    Other(&'static str),
}

/// cloud-init's start-of-data markers (`handlers.INCLUSION_TYPES_MAP`), longest first.
const STARTS: &[(&str, &str)] = &[
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("## template: jinja", "text/jinja2"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#part-handler", "text/part-handler"),
    ("#cloud-config", "text/cloud-config"),
    ("#include", "text/x-include-url"),
    ("#!", "text/x-shellscript"),
];

/// Classifies user-data the way cloud-init does (case-insensitive, leading blanks skipped).
pub fn classify(text: &str) -> Result<Kind, UserDataError> {
    let head = text.as_bytes().get(..4096).unwrap_or(text.as_bytes());
    if head
        .to_ascii_lowercase()
        .windows(13)
        .any(|w| w == b"mime-version:")
    {
        return Ok(Kind::Mime);
    }
    let start: String = text
        .trim_start()
        .chars()
        .take(32)
        .collect::<String>()
        .to_lowercase();
    for (prefix, ctype) in STARTS {
        if start.starts_with(prefix) {
            return Ok(match *ctype {
                "text/cloud-config" => Kind::CloudConfig,
                other => Kind::Other(other),
            });
        }
    }
    let first = text.lines().next().unwrap_or("").chars().take(40).collect();
    Err(UserDataError::UnknownFormat(first))
}

/// Checks that `text` is a YAML mapping (or empty), as a `#cloud-config` must be.
pub fn check_cloud_config(text: &str) -> Result<(), UserDataError> {
    use serde_yaml_ng::Value;
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Mapping(_) | Value::Null) => Ok(()),
        Ok(Value::Sequence(_)) => Err(UserDataError::NotAMapping("list")),
        Ok(Value::Tagged(_)) => Err(UserDataError::NotAMapping("tagged value")),
        Ok(_) => Err(UserDataError::NotAMapping("scalar")),
        Err(e) => Err(UserDataError::Yaml {
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e.to_string(),
        }),
    }
}

/// Renders `user-data`: vessel's cloud-config for these (validated) keys, default user
/// name and `mounts:` entries, combined with `extra` as described in the module
/// documentation.
pub fn render(
    keys: &[String],
    default_user: Option<&str>,
    extra: Option<&str>,
    mounts: &[[String; 6]],
) -> Result<String, UserDataError> {
    let config = VesselConfig {
        users: ["default"],
        ssh_authorized_keys: keys,
        ssh_pwauth: false,
        system_info: default_user.map(|name| SystemInfo {
            default_user: DefaultUser { name },
        }),
        mounts,
    };
    let ours = format!("#cloud-config\n{}", yaml::to_string(&config)?);
    let Some(extra) = extra.filter(|e| !e.trim().is_empty()) else {
        return Ok(ours);
    };
    if extra.len() > MAX_EXTRA_USER_DATA {
        return Err(UserDataError::TooLarge {
            len: extra.len(),
            max: MAX_EXTRA_USER_DATA,
        });
    }
    let theirs = match classify(extra)? {
        Kind::CloudConfig => {
            check_cloud_config(extra)?;
            encoded_part("text/cloud-config", extra)
        }
        Kind::Other(ctype) => encoded_part(ctype, extra),
        Kind::Mime => {
            if !starts_with_header(extra) {
                return Err(UserDataError::MimeHeaders);
            }
            extra.to_string()
        }
    };
    let ours = format!(
        "Content-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: 7bit\n\
         Content-Disposition: attachment; filename=\"vessel-cloud-config\"\n\
         Merge-Type: {MERGE_TYPE}\n\n{ours}"
    );
    multipart(&[&theirs, &ours])
}

/// True when the first line is an RFC 5322 header field (`Name: value`).
fn starts_with_header(text: &str) -> bool {
    let first = text.lines().next().unwrap_or("");
    match first.split_once(':') {
        Some((name, _)) => !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
        None => false,
    }
}

/// A MIME part holding `body` base64-encoded (so any UTF-8 survives Python's parser).
fn encoded_part(ctype: &str, body: &str) -> String {
    let b64 = STANDARD.encode(body.as_bytes());
    let mut out = format!(
        "Content-Type: {ctype}; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"user-data\"\n\n"
    );
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// FNV-1a, to derive a MIME boundary from the content it must not occur in.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A `multipart/mixed` message of these parts (each: headers, blank line, body).
fn multipart(parts: &[&str]) -> Result<String, UserDataError> {
    let seed = fnv1a(parts);
    let boundary = (0..64u32)
        .map(|n| format!("vessel-seed-{seed:016x}-{n}"))
        .find(|b| parts.iter().all(|p| !p.contains(b.as_str())))
        .ok_or(UserDataError::Boundary)?;
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for part in parts {
        // The line break before a boundary belongs to the boundary: the part keeps its own.
        let _ = writeln!(out, "--{boundary}\n{part}");
    }
    let _ = writeln!(out, "--{boundary}--");
    Ok(out)
}

#[cfg(test)]
mod tests;
