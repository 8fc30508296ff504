//! Index of a `.safetensors` file: an 8-byte little-endian header length, a JSON
//! header `{key: {dtype, shape, data_offsets}}`, then the data.

use std::path::Path;

use crate::checkpoint::Location;
use crate::dtype::{StoredDType, TensorInfo};
use crate::error::{Error, Result};

/// Whether `bytes` start like a safetensors file.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    if bytes.len() < 9 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    n > 0 && n < (100 << 20) && bytes[8] == b'{'
}

/// Lists every tensor of the file with its location, validating offsets and sizes.
pub(super) fn index(path: &Path, bytes: &[u8]) -> Result<Vec<(String, TensorInfo, Location)>> {
    let bad = |reason: String| Error::malformed(path, reason);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header_end = 8usize
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {n} bytes runs past the end of the file (truncated?)"
            ))
        })?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end])
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_len = bytes.len() - header_end;
    let mut out = Vec::with_capacity(header.len());
    for (key, v) in header {
        if key == "__metadata__" {
            continue;
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
        let info = TensorInfo { shape, dtype };
        let want = info.numel() * dtype.size();
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
        out.push((
            key,
            info,
            Location::Contiguous {
                offset: header_end + offs[0],
            },
        ));
    }
    Ok(out)
}
