//! The metadata itself: one JSON document, replaced by `PUT /mmds`, merged into by
//! `PATCH /mmds` (JSON merge patch, RFC 7396), read whole by `GET /mmds` and by path from
//! the guest. Its serialized size never exceeds the limit it was made with.

use serde_json::{Map, Value};

/// Firecracker's default `--mmds-size-limit`: the largest serialized data store, in bytes.
pub const DEFAULT_SIZE_LIMIT: usize = 51_200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("The MMDS patch request doesn't fit.")]
    LimitExceeded,
    #[error("The MMDS resource does not exist.")]
    NotFound,
    #[error("The MMDS data store is not initialized.")]
    NotInitialized,
    #[error("Cannot retrieve value. The value has an unsupported type.")]
    UnsupportedValueType,
}

/// How a value read by the guest is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The JSON text of the value.
    Json,
    /// EC2 IMDS's plain text: an object lists its keys one a line (objects with a `/`
    /// after the key), a string is written as is; other values cannot be shown.
    Imds,
}

#[derive(Debug)]
pub struct DataStore {
    data: Value,
    initialized: bool,
    limit: usize,
}

impl DataStore {
    /// An empty, uninitialized store holding at most `limit` serialized bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            data: Value::Null,
            initialized: false,
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The whole document, as `GET /mmds` shows it (`{}` before the first PUT).
    pub fn value(&self) -> Value {
        match &self.data {
            Value::Null => Value::Object(Map::new()),
            data => data.clone(),
        }
    }

    /// Replaces the document (`PUT /mmds`).
    pub fn put(&mut self, data: Value) -> Result<(), StoreError> {
        self.check_size(&data)?;
        self.data = data;
        self.initialized = true;
        Ok(())
    }

    /// Merges `patch` into the document (`PATCH /mmds`); refused before the first PUT and
    /// when the result would not fit (the document is then unchanged).
    pub fn patch(&mut self, patch: &Value) -> Result<(), StoreError> {
        if !self.initialized {
            return Err(StoreError::NotInitialized);
        }
        let mut merged = self.data.clone();
        merge_patch(&mut merged, patch);
        self.check_size(&merged)?;
        self.data = merged;
        Ok(())
    }

    fn check_size(&self, data: &Value) -> Result<(), StoreError> {
        // A serde_json::Value always serializes (its keys are strings).
        let len = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
        if len > self.limit {
            Err(StoreError::LimitExceeded)
        } else {
            Ok(())
        }
    }

    /// The value at `path` (`/a/b`, `//` collapsed, a trailing `/` allowed) in `format`.
    pub fn get(&self, path: &str, format: OutputFormat) -> Result<String, StoreError> {
        let pointer = normalize_path(path);
        let value = self.data.pointer(&pointer).ok_or(StoreError::NotFound)?;
        match format {
            OutputFormat::Json => Ok(value.to_string()),
            OutputFormat::Imds => format_imds(value),
        }
    }
}

/// A request path as a JSON pointer: repeated slashes collapsed, no trailing slash.
fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(part);
    }
    out
}

fn format_imds(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::Object(map) => Ok(map
            .iter()
            .map(|(key, v)| {
                if v.is_object() {
                    format!("{key}/")
                } else {
                    key.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")),
        Value::String(s) => Ok(s.clone()),
        _ => Err(StoreError::UnsupportedValueType),
    }
}

/// RFC 7396 JSON merge patch: an object patch merges key by key (`null` removes the key),
/// anything else replaces the target. Recursion is bounded by serde_json's nesting limit
/// (128) on the parsed patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(doc) = target {
        for (key, value) in patch {
            if value.is_null() {
                doc.remove(key);
            } else {
                merge_patch(doc.entry(key.as_str()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store() -> DataStore {
        let mut s = DataStore::new(DEFAULT_SIZE_LIMIT);
        s.put(json!({
            "latest": {"meta-data": {"ami-id": "ami-12345678", "reservation-id": "r-1",
                "tags": ["a", "b"], "count": 3}},
            "name": "vm"
        }))
        .unwrap();
        s
    }

    #[test]
    fn empty_store_reads_as_an_empty_object_and_refuses_patches() {
        let mut s = DataStore::new(100);
        assert_eq!(s.value(), json!({}));
        assert_eq!(s.patch(&json!({"a": 1})), Err(StoreError::NotInitialized));
        assert_eq!(s.get("/a", OutputFormat::Json), Err(StoreError::NotFound));
    }

    #[test]
    fn get_by_path_in_both_formats() {
        let s = store();
        let imds = OutputFormat::Imds;
        assert_eq!(
            s.get("/latest/meta-data/ami-id", imds).unwrap(),
            "ami-12345678"
        );
        assert_eq!(
            s.get("/latest//meta-data/ami-id/", OutputFormat::Json)
                .unwrap(),
            "\"ami-12345678\""
        );
        assert_eq!(s.get("/latest/", imds).unwrap(), "meta-data/");
        assert_eq!(
            s.get("/latest/meta-data", imds).unwrap(),
            "ami-id\ncount\nreservation-id\ntags"
        );
        assert_eq!(s.get("/", imds).unwrap(), "latest/\nname");
        assert_eq!(
            s.get("/latest/meta-data/count", imds),
            Err(StoreError::UnsupportedValueType)
        );
        assert_eq!(
            s.get("/latest/meta-data/tags", OutputFormat::Json).unwrap(),
            "[\"a\",\"b\"]"
        );
        assert_eq!(s.get("/nope", imds), Err(StoreError::NotFound));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // RFC 7396 appendix A examples.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn size_limit_holds_for_put_and_patch() {
        let mut s = DataStore::new(20);
        assert_eq!(
            s.put(json!({"key": "a value that is too long"})),
            Err(StoreError::LimitExceeded)
        );
        s.put(json!({"k": "v"})).unwrap();
        assert_eq!(
            s.patch(&json!({"other": "0123456789"})),
            Err(StoreError::LimitExceeded)
        );
        assert_eq!(s.value(), json!({"k": "v"}));
        s.patch(&json!({"k": null, "x": 1})).unwrap();
        assert_eq!(s.value(), json!({"x": 1}));
    }
}
