//! A YAML emitter for the documents vessel writes itself, safe for cloud-init's PyYAML.
//!
//! PyYAML reads YAML 1.1, where plain scalars such as `yes`, `on`, `2001-01-01` or
//! `52:54:00:12:34:56` (base 60!) are not strings; YAML 1.2 emitters leave them unquoted.
//! So every string value here is double-quoted with only ASCII inside (other characters
//! as `\u`/`\U` escapes, which both YAML versions read the same), and mapping keys are
//! plain only when they are plain identifiers that no YAML version reads as anything else.
//! The tree comes from serde ([`serde_yaml_ng::to_value`]), never from pasted strings.

use serde_yaml_ng::Value;
use std::fmt::Write as _;

/// Why a value could not be written as YAML.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// serde could not turn the value into a YAML tree.
    #[error("cannot serialize to YAML: {0}")]
    Serialize(#[from] serde_yaml_ng::Error),
    /// A mapping key that is not a string, or a tagged value (vessel writes neither).
    #[error("unsupported YAML value: {0}")]
    Unsupported(&'static str),
}

/// Serializes `value` with serde and writes it as a block-style YAML document.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    let tree = serde_yaml_ng::to_value(value)?;
    let mut out = String::new();
    match &tree {
        Value::Mapping(m) if !m.is_empty() => emit_block(&tree, 0, &mut out)?,
        Value::Sequence(s) if !s.is_empty() => emit_block(&tree, 0, &mut out)?,
        other => {
            out.push_str(&scalar(other)?);
            out.push('\n');
        }
    }
    Ok(out)
}

/// True for a non-empty mapping or sequence, which is written as an indented block.
fn is_block(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        _ => false,
    }
}

/// Writes a non-empty mapping or sequence, each line indented by `indent` spaces.
fn emit_block(v: &Value, indent: usize, out: &mut String) -> Result<(), YamlError> {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let Value::String(k) = k else {
                    return Err(YamlError::Unsupported("non-string mapping key"));
                };
                let _ = write!(out, "{pad}{}:", key(k));
                if is_block(child) {
                    out.push('\n');
                    let child_indent = if matches!(child, Value::Sequence(_)) {
                        indent
                    } else {
                        indent + 2
                    };
                    emit_block(child, child_indent, out)?;
                } else {
                    let _ = writeln!(out, " {}", scalar(child)?);
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                if is_block(item) {
                    // Write the item as a block two columns in, then turn the first line's
                    // indentation into "- ".
                    let mut inner = String::new();
                    emit_block(item, indent + 2, &mut inner)?;
                    let _ = write!(out, "{pad}- {}", inner.get(indent + 2..).unwrap_or(&inner));
                } else {
                    let _ = writeln!(out, "{pad}- {}", scalar(item)?);
                }
            }
        }
        _ => return Err(YamlError::Unsupported("scalar where a block was expected")),
    }
    Ok(())
}

/// A scalar or empty collection in flow form.
fn scalar(v: &Value) -> Result<String, YamlError> {
    Ok(match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(_) => return Err(YamlError::Unsupported("floating-point number")),
        Value::String(s) => quote(s),
        Value::Sequence(_) => "[]".to_string(),
        Value::Mapping(_) => "{}".to_string(),
        Value::Tagged(_) => return Err(YamlError::Unsupported("tagged value")),
    })
}

/// Words that YAML 1.1 reads as booleans or null when plain.
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// A mapping key: plain when it is an identifier (`[A-Za-z_][A-Za-z0-9_-]*`, not a
/// reserved word), otherwise double-quoted.
fn key(k: &str) -> String {
    let mut bytes = k.bytes();
    let ident = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ident && !RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A double-quoted scalar holding only printable ASCII.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Doc {
        name: String,
        #[serde(rename = "yes")]
        flag: bool,
        count: u32,
        list: Vec<String>,
        empty: Vec<String>,
        nested: BTreeMap<String, Vec<BTreeMap<String, String>>>,
        none: Option<String>,
    }

    fn sample() -> Doc {
        let mut item = BTreeMap::new();
        item.insert("a".to_string(), "on".to_string());
        item.insert("b c".to_string(), "2001-01-01".to_string());
        let mut nested = BTreeMap::new();
        nested.insert("items".to_string(), vec![item.clone(), item]);
        Doc {
            name: "52:54:00:12:34:56".into(),
            flag: true,
            count: 7,
            list: vec!["yes".into(), "é \"q\" \\ \n\u{1F600}\u{85}".into()],
            empty: vec![],
            nested,
            none: None,
        }
    }

    #[test]
    fn layout() {
        let text = to_string(&sample()).unwrap_or_default();
        let expected = "name: \"52:54:00:12:34:56\"\n\"yes\": true\ncount: 7\nlist:\n- \"yes\"\n\
            - \"\\u00e9 \\\"q\\\" \\\\ \\n\\U0001f600\\u0085\"\nempty: []\nnested:\n  items:\n  \
            - a: \"on\"\n    \"b c\": \"2001-01-01\"\n  - a: \"on\"\n    \"b c\": \"2001-01-01\"\n\
            none: null\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn reads_back_as_the_same_tree() {
        let text = to_string(&sample()).unwrap_or_default();
        let back: Value = serde_yaml_ng::from_str(&text).unwrap_or(Value::Null);
        let orig = serde_yaml_ng::to_value(sample()).unwrap_or(Value::Bool(false));
        assert_eq!(back, orig);
        assert!(text.is_ascii());
    }

    #[test]
    fn nested_sequences_and_scalars() {
        let v = vec![vec![1, 2], vec![]];
        assert_eq!(to_string(&v).unwrap_or_default(), "- - 1\n  - 2\n- []\n");
        assert_eq!(to_string(&"x").unwrap_or_default(), "\"x\"\n");
        assert!(to_string(&1.5f64).is_err());
    }
}
