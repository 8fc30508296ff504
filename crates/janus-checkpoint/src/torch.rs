//! Index of a PyTorch zip checkpoint (`torch.save` since 1.6): `<prefix>/data.pkl`
//! holds the pickled state dict, `<prefix>/data/<key>` the raw storages.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use crate::checkpoint::Location;
use crate::dtype::TensorInfo;
use crate::error::{Error, Result};
use crate::pickle::{self, Value};

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
    let mut pkl_name = None;
    let mut records: HashMap<String, (usize, usize)> = HashMap::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| bad(format!("corrupt zip entry {i}: {e}")))?;
        let name = f.name().to_string();
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            pkl_name = Some(name.clone());
        }
        if f.compression() == zip::CompressionMethod::Stored {
            records.insert(name, (f.data_start() as usize, f.size() as usize));
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
    zip.by_name(&pkl_name)
        .map_err(|e| bad(format!("cannot open {pkl_name}: {e}")))?
        .read_to_end(&mut pkl)
        .map_err(|e| bad(format!("cannot read {pkl_name}: {e}")))?;
    let root = pickle::parse(&pkl).map_err(|e| bad(format!("{pkl_name}: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(bad(format!("{pkl_name} does not hold a state dict")));
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(key) = k else {
            return Err(bad(format!("state dict key {k:?} is not a string")));
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
        if len < t.storage.numel * size || start + len > bytes.len() {
            return Err(bad(format!(
                "tensor `{key}`: storage `{record}` is truncated"
            )));
        }
        let numel: usize = t.shape.iter().product();
        if numel > 0 {
            let last = t.offset
                + t.shape
                    .iter()
                    .zip(&t.stride)
                    .map(|(n, s)| (n - 1) * s)
                    .sum::<usize>();
            if last >= t.storage.numel {
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
        let location = if contiguous {
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
