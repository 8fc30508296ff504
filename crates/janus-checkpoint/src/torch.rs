//! Index of a PyTorch zip checkpoint (`torch.save` since 1.6): `<prefix>/data.pkl`
//! holds the pickled state dict, `<prefix>/data/<key>` the raw storages.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use crate::checkpoint::{Location, checked_numel};
use crate::dtype::TensorInfo;
use crate::error::{Error, Result};
use crate::pickle::{self, Value};

/// The largest `data.pkl` accepted (the real 7B checkpoint's is under 1 MB).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Whether `bytes` start like a zip archive.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Lists every tensor of the state dict with its location inside the archive.
pub(super) fn index(path: &Path, bytes: &[u8]) -> Result<Vec<(String, TensorInfo, Location)>> {
    let bad = |reason: String| Error::malformed(path, reason);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        bad(format!(
            "not a readable zip archive (truncated or corrupt?): {e}"
        ))
    })?;
    // The zip reader keys entries by name, so a name listed twice would be
    // silently dropped: compare with the count the archive itself records.
    if let Some(listed) = listed_entries(bytes)
        && listed != zip.len() as u64
    {
        return Err(bad(format!(
            "the archive lists {listed} entries but holds {} distinct names (duplicated entries)",
            zip.len()
        )));
    }
    let mut pkl_name = None;
    let mut records: HashMap<String, (usize, usize)> = HashMap::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| bad(format!("corrupt zip entry {i}: {e}")))?;
        let name = f.name().to_string();
        if f.encrypted() {
            return Err(bad(format!("zip entry `{name}` is encrypted")));
        }
        if f.size() > bytes.len() as u64 {
            return Err(bad(format!(
                "zip entry `{name}` claims {} bytes, more than the whole file ({})",
                f.size(),
                bytes.len()
            )));
        }
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            if pkl_name.is_some() {
                return Err(bad("the archive holds more than one `data.pkl`".into()));
            }
            pkl_name = Some(name.clone());
        }
        if f.compression() == zip::CompressionMethod::Stored {
            let start = usize::try_from(f.data_start()).unwrap_or(usize::MAX);
            let len = f.size() as usize;
            if start.checked_add(len).is_none_or(|end| end > bytes.len()) {
                return Err(bad(format!(
                    "zip entry `{name}` runs past the end of the file"
                )));
            }
            records.insert(name.clone(), (start, len));
        }
    }
    let pkl_name = pkl_name
        .ok_or_else(|| bad("no `data.pkl` in the archive: not a PyTorch checkpoint".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.read_to_string(&mut order)
            .map_err(|e| bad(format!("cannot read byteorder: {e}")))?;
        if order.trim() != "little" {
            return Err(bad(format!(
                "big-endian checkpoints are not supported (byteorder `{order}`)"
            )));
        }
    }
    let mut pkl = Vec::new();
    // A state dict's pickle is a few MB; a compressed one may not inflate past that.
    let limit = MAX_PICKLE_BYTES.min(bytes.len() as u64 * 64);
    zip.by_name(&pkl_name)
        .map_err(|e| bad(format!("cannot open {pkl_name}: {e}")))?
        .take(limit + 1)
        .read_to_end(&mut pkl)
        .map_err(|e| bad(format!("cannot read {pkl_name}: {e}")))?;
    if pkl.len() as u64 > limit {
        return Err(bad(format!("{pkl_name} is larger than {limit} bytes")));
    }
    let root = pickle::parse(&pkl).map_err(|e| bad(format!("{pkl_name}: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(bad(format!("{pkl_name} does not hold a state dict")));
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(key) = k else {
            return Err(bad(format!(
                "a state dict key is {}, not a string",
                k.kind()
            )));
        };
        let Value::Tensor(t) = v else {
            return Err(bad(format!("state dict entry `{key}` is not a tensor")));
        };
        let record = format!("{prefix}data/{}", t.storage.key);
        let &(start, len) = records.get(&record).ok_or_else(|| {
            bad(format!(
                "tensor `{key}`: storage record `{record}` is missing or compressed"
            ))
        })?;
        let size = t.storage.dtype.size();
        let needed = t.storage.numel.checked_mul(size);
        if needed.is_none_or(|n| n > len) {
            return Err(bad(format!(
                "tensor `{key}`: storage `{record}` holds {len} bytes, less than its {} elements of {}",
                t.storage.numel, t.storage.dtype
            )));
        }
        let numel = checked_numel(&t.shape)
            .ok_or_else(|| bad(format!("tensor `{key}`: shape {:?} overflows", t.shape)))?;
        if numel > 0 {
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (n, s)| {
                    acc.checked_add((n - 1).checked_mul(*s)?)
                });
            if last.is_none_or(|last| last >= t.storage.numel) {
                return Err(bad(format!(
                    "tensor `{key}`: view {:?} at offset {} exceeds its storage of {} elements",
                    t.shape, t.offset, t.storage.numel
                )));
            }
        }
        let contiguous = {
            let mut expect = 1;
            let mut ok = true;
            for (n, s) in t.shape.iter().zip(&t.stride).rev() {
                if *n != 1 && *s != expect {
                    ok = false;
                }
                expect *= n;
            }
            ok
        };
        let location = if numel == 0 {
            // An empty view reads nothing, wherever it says it starts (as
            // torch.load, which checks no bounds for it: an offset of 10^12
            // made a file position past the end).
            Location::Contiguous { offset: start }
        } else if contiguous {
            Location::Contiguous {
                offset: start + t.offset * size,
            }
        } else {
            Location::Strided {
                base: start,
                elem_offset: t.offset,
                stride: t.stride.clone(),
            }
        };
        out.push((
            key,
            TensorInfo {
                shape: t.shape,
                dtype: t.storage.dtype,
            },
            location,
        ));
    }
    Ok(out)
}

/// The entry count recorded in the archive's end-of-central-directory record
/// (its zip64 form for large archives); `None` if it cannot be found.
fn listed_entries(bytes: &[u8]) -> Option<u64> {
    let tail = bytes.len().saturating_sub(22 + 65535);
    let eocd = (tail..=bytes.len().checked_sub(22)?)
        .rev()
        .find(|&i| bytes[i..i + 4] == *b"PK\x05\x06")?;
    let count = u16::from_le_bytes([bytes[eocd + 10], bytes[eocd + 11]]);
    if count != u16::MAX {
        return Some(count as u64);
    }
    let locator = eocd.checked_sub(20)?;
    if bytes[locator..locator + 4] != *b"PK\x06\x07" {
        return None;
    }
    let at = u64::from_le_bytes(bytes[locator + 8..locator + 16].try_into().ok()?) as usize;
    let record = bytes.get(at..at.checked_add(40)?)?;
    if record[..4] != *b"PK\x06\x06" {
        return None;
    }
    Some(u64::from_le_bytes(record[32..40].try_into().ok()?))
}
