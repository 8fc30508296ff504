//! Index of a `.safetensors` file: an 8-byte little-endian header length, a JSON
//! header `{key: {dtype, shape, data_offsets}}`, then the data.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{Location, checked_numel};
use crate::dtype::{StoredDType, TensorInfo};
use crate::error::{Error, Result};

/// Whether `bytes` start like a safetensors file.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    if bytes.len() < 9 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    n > 0 && bytes[8] == b'{'
}

/// The largest header read, in bytes (the official library's limit).
const MAX_HEADER: u64 = 100_000_000;

/// What [`index`] finds: each tensor with its location, and the header's
/// `__metadata__` (its string values).
pub(super) type Index = (
    Vec<(String, TensorInfo, Location)>,
    BTreeMap<String, String>,
);

/// Lists every tensor of the file with its location, validating offsets and
/// sizes, and the file's metadata.
pub(super) fn index(path: &Path, bytes: &[u8]) -> Result<Index> {
    let bad = |reason: String| Error::malformed(path, reason);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header of {n} bytes is over the {MAX_HEADER}-byte limit"
        )));
    }
    let n = n as usize;
    let header_end = 8usize
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {n} bytes runs past the end of the file (truncated?)"
            ))
        })?;
    let Entries(header) = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_len = bytes.len() - header_end;
    let mut out = Vec::with_capacity(header.len());
    let mut spans = Vec::with_capacity(header.len());
    let mut metadata = BTreeMap::new();
    for (key, v) in header {
        if key == "__metadata__" {
            let serde_json::Value::Object(map) = v else {
                return Err(bad("`__metadata__` is not an object of strings".into()));
            };
            metadata.extend(map.into_iter().filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            }));
            continue;
        }
        if !v.is_object() {
            let found = match v {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(bad(format!(
                "tensor `{key}` is {found}, not an object of dtype, shape and data_offsets"
            )));
        }
        let dtype_name = v.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let dtype = StoredDType::from_safetensors_name(dtype_name)
            .ok_or_else(|| bad(format!("tensor `{key}` has unknown dtype `{dtype_name}`")))?;
        let shape = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("tensor `{key}` has no valid `shape`")))?;
        let offs = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .filter(|o| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| bad(format!("tensor `{key}` has no valid `data_offsets`")))?;
        let want = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| bad(format!("tensor `{key}`: shape {shape:?} overflows")))?;
        let info = TensorInfo { shape, dtype };
        if offs[1] - offs[0] != want {
            return Err(bad(format!(
                "tensor `{key}`: {} bytes stored, but shape {:?} of {dtype} needs {want}",
                offs[1] - offs[0],
                info.shape
            )));
        }
        if offs[1] > data_len {
            return Err(bad(format!(
                "tensor `{key}` ends at byte {} but the file has only {data_len} data bytes (truncated?)",
                offs[1]
            )));
        }
        spans.push((offs[0], offs[1], key.clone()));
        out.push((
            key,
            info,
            Location::Contiguous {
                offset: header_end + offs[0],
            },
        ));
    }
    // As the reference library requires: the tensors tile the data exactly, with
    // no overlap, no gap and nothing after the last one.
    spans.sort();
    let mut end = 0;
    for (start, stop, key) in &spans {
        if *start != end {
            return Err(bad(format!(
                "tensor `{key}` starts at data byte {start}, but the previous tensor ends at {end} (overlapping or gapped offsets)"
            )));
        }
        end = *stop;
    }
    if end != data_len {
        return Err(bad(format!(
            "the tensors cover {end} data bytes but the file holds {data_len} after the header (wrong header length?)"
        )));
    }
    Ok((out, metadata))
}

/// The header's entries in file order; a key given twice is an error.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("key `{k}` appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit)
    }
}
