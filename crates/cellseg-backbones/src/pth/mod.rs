//! PyTorch checkpoints (`torch.save` `.pth` / `.pt` files) read without Python.
//!
//! Both formats `torch.save` writes are read:
//! - the zip archive (PyTorch ≥ 1.6, the default): `<root>/data.pkl` is a pickle whose tensors
//!   name their storages `<root>/data/<key>`, stored uncompressed;
//! - the legacy stream (`_use_new_zipfile_serialization=False`, and files saved by PyTorch < 1.6,
//!   such as many mmdet 2.x model-zoo checkpoints): five pickles (magic number, protocol, system
//!   info, the object, its storage keys), then every storage as an 8-byte element count and its
//!   bytes.
//!
//! The object is decoded by a small pickle machine ([`pickle`]) that imports nothing: only
//! dicts, `collections.OrderedDict` and tensors are understood, anything else stays a named
//! placeholder, so the `meta` of an mmdet checkpoint (config text, class names, numpy values)
//! never stops a read. The tensors are taken from the object itself when it is a `state_dict`,
//! or from its `state_dict` / `model` / `model_state_dict` entry (mmdet / mmcv
//! `save_checkpoint`, training scripts), as `tools/export_weights.py` does; that script is the
//! reference the reader is tested against.
//!
//! # Example
//! ```no_run
//! let sd = cellseg_backbones::pth::read_state_dict("resnet50-0676ba61.pth")?;
//! println!("{} tensors ({}) from {}", sd.tensors.len(), sd.format, sd.location);
//! # Ok::<(), cellseg_backbones::Error>(())
//! ```

pub mod pickle;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::{Error, Result};
use pickle::{Dtype, Node, Pickle, TensorRef};

/// The legacy format's first pickle: this number (`torch.serialization.MAGIC_NUMBER`).
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version.
const LEGACY_PROTOCOL: i64 = 1001;
/// Entries of a checkpoint dict that hold the state_dict, in the order they are looked for.
pub const STATE_DICT_ENTRIES: [&str; 3] = ["state_dict", "model", "model_state_dict"];

/// Which of `torch.save`'s two formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The zip archive (PyTorch ≥ 1.6).
    Zip,
    /// The legacy pickle stream.
    Legacy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zip => "zip format",
            Self::Legacy => "legacy format",
        })
    }
}

/// The tensors of a checkpoint's state_dict, in the file's order, on the CPU, contiguous, in
/// their stored dtypes.
#[derive(Debug)]
pub struct StateDict {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Where the tensors were: `"the saved dict"` or `"its \"state_dict\" entry"` (and so on).
    pub location: String,
    /// Name and tensor.
    pub tensors: Vec<(String, Tensor)>,
}

/// Whether `head` (the first 9 bytes of a file, or all of a shorter one) looks like a
/// `torch.save` file: a zip archive, or a pickle (`PROTO` 2–5) that is not a safetensors file
/// (whose 8-byte header length may well start with the byte 0x80, but whose ninth byte is `{`).
pub fn is_pth(head: &[u8]) -> bool {
    let pickle = head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    head.starts_with(b"PK\x03\x04") || (pickle && head.get(8) != Some(&b'{'))
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Pth { path: path.to_path_buf(), message: message.into() }
}

/// Reads the state_dict of the `torch.save` file at `path`.
///
/// # Errors
/// [`Error::Pth`] naming the file for anything that is not a readable checkpoint (truncated,
/// another format, an unknown storage type, a tensor reading past its storage, big-endian
/// data); [`Error::NotAStateDict`] when the saved object holds no dict of tensors (a whole
/// pickled `nn.Module`, a list, an entry that is not a tensor).
pub fn read_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    let (format, pickle, storages) = if data.starts_with(b"PK\x03\x04") {
        let (p, s) = read_zip(path, &data)?;
        (Format::Zip, p, s)
    } else if data.len() > 262 && &data[257..262] == b"ustar" {
        return Err(bad(
            path,
            "is a tar archive: a checkpoint of PyTorch < 0.4, which is not read; load and save it again with a newer PyTorch",
        ));
    } else if data.first() == Some(&0x80) {
        let (p, s) = read_legacy(path, &data)?;
        (Format::Legacy, p, s)
    } else {
        return Err(bad(
            path,
            format!(
                "is neither a zip archive nor a pickle: not a torch.save file ({} bytes)",
                data.len()
            ),
        ));
    };
    let (location, entries) = state_dict_entries(path, &pickle)?;
    let mut cache: HashMap<String, Tensor> = HashMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let tensor = build_tensor(path, &name, t, &storages, &mut cache)?;
        tensors.push((name, tensor));
    }
    Ok(StateDict { path: path.to_path_buf(), format, location, tensors })
}

/// Raw bytes of every storage, by key.
type Storages<'a> = HashMap<String, &'a [u8]>;

fn read_zip<'a>(path: &Path, data: &'a [u8]) -> Result<(Pickle, Storages<'a>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| {
        bad(path, format!("is a zip archive that cannot be read (truncated or damaged?): {e}"))
    })?;
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| {
            bad(path, "is a zip archive without <root>/data.pkl: not a torch.save file")
        })?
        .clone();
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let mut entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| bad(path, format!("entry {name}: {e}")))?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(|e| bad(path, format!("entry {name}: {e}")))?;
        Ok(buf)
    };
    let pkl_bytes = entry(&pkl)?;
    let order = format!("{root}byteorder");
    if names.contains(&order) {
        let b = entry(&order)?;
        if b != b"little" {
            return Err(bad(
                path,
                format!(
                    "stores its tensors in byte order {:?}; only little-endian is read",
                    String::from_utf8_lossy(&b)
                ),
            ));
        }
    }
    let pickle = pickle::read(&pkl_bytes).map_err(|e| bad(path, format!("{pkl}: {e}")))?;
    // Stored entries are slices of the file itself: no copy.
    let mut storages = HashMap::new();
    let prefix = format!("{root}data/");
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| bad(path, format!("zip entry {i}: {e}")))?;
        let Some(key) = f.name().strip_prefix(prefix.as_str()) else { continue };
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(bad(
                path,
                format!(
                    "entry {} is compressed ({:?}); torch.save stores tensors uncompressed",
                    f.name(),
                    f.compression()
                ),
            ));
        }
        let start = usize::try_from(f.data_start()).unwrap_or(usize::MAX);
        let len = usize::try_from(f.size()).unwrap_or(usize::MAX);
        let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
            return Err(bad(
                path,
                format!("entry {} runs past the end of the file (truncated?)", f.name()),
            ));
        };
        storages.insert(key.to_string(), bytes);
    }
    Ok((pickle, storages))
}

fn read_legacy<'a>(path: &Path, data: &'a [u8]) -> Result<(Pickle, Storages<'a>)> {
    let mut pos = 0usize;
    let mut next = |what: &str| -> Result<Pickle> {
        let p = pickle::read(&data[pos..])
            .map_err(|e| bad(path, format!("{what} (legacy format, at byte {pos}): {e}")))?;
        pos += p.len;
        Ok(p)
    };
    let magic = next("magic number")?;
    let is_magic = match magic.node(magic.root) {
        Node::BigInt(b) if b.len() <= 16 => {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(buf) == LEGACY_MAGIC
        }
        _ => false,
    };
    if !is_magic {
        return Err(bad(
            path,
            "is a pickle without torch.save's magic number: not a PyTorch checkpoint (a plain pickle?)",
        ));
    }
    let proto = next("protocol version")?;
    if !matches!(proto.node(proto.root), Node::Int(LEGACY_PROTOCOL)) {
        return Err(bad(
            path,
            format!("has legacy protocol {:?}, not {LEGACY_PROTOCOL}", proto.node(proto.root)),
        ));
    }
    let info = next("system info")?;
    if let Some(le) = info.get(info.root, "little_endian")
        && info.node(le) == &Node::Bool(false)
    {
        return Err(bad(path, "was saved on a big-endian machine; only little-endian is read"));
    }
    let object = next("the saved object")?;
    let keys = next("storage keys")?;
    // Storage dtypes, from the object's persistent ids.
    let mut dtypes: HashMap<String, Dtype> = HashMap::new();
    for node in &object.nodes {
        if let Node::Storage(s) = node {
            dtypes.insert(s.key.clone(), s.dtype);
        }
    }
    let key_list: Vec<String> = match keys.node(keys.root) {
        Node::List(items) | Node::Tuple(items) => {
            items.iter().filter_map(|&i| keys.str(i).map(String::from)).collect()
        }
        _ => return Err(bad(path, "the legacy storage key list is not a list")),
    };
    let mut storages = HashMap::new();
    for key in key_list {
        let Some(dtype) = dtypes.get(&key) else {
            return Err(bad(path, format!("storage {key} is listed but no tensor uses it")));
        };
        let Some(count) = data.get(pos..pos + 8) else {
            return Err(bad(path, format!("truncated: the file ends before storage {key}")));
        };
        let numel = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        let len = usize::try_from(numel).ok().and_then(|n| n.checked_mul(dtype.size()));
        let Some(bytes) = len.and_then(|len| data.get(pos + 8..pos + 8 + len)) else {
            return Err(bad(
                path,
                format!(
                    "truncated: storage {key} ({numel} elements) runs past the end of the file"
                ),
            ));
        };
        storages.insert(key, bytes);
        pos += 8 + bytes.len();
    }
    Ok((object, storages))
}

/// The `(name, tensor)` entries of the state_dict the pickle holds, and where it was.
fn state_dict_entries(path: &Path, p: &Pickle) -> Result<(String, Vec<(String, TensorRef)>)> {
    let not = |found: String| Error::NotAStateDict { path: path.to_path_buf(), found };
    let Node::Dict(top) = p.node(p.root) else {
        let what = p.type_name(p.root);
        let hint = if matches!(p.node(p.root), Node::Object { .. }) {
            " (a whole pickled model: save `model.state_dict()` instead)"
        } else {
            ""
        };
        return Err(not(format!("the saved object is {what}{hint}")));
    };
    // As tools/export_weights.py: the first wrapper entry that is a dict, else the dict itself.
    let wrapped = STATE_DICT_ENTRIES.iter().find_map(|k| {
        p.get(p.root, k).filter(|&v| matches!(p.node(v), Node::Dict(_))).map(|v| (*k, v))
    });
    let (dict, location) = match wrapped {
        Some((entry, id)) => (id, format!("its {entry:?} entry")),
        None => (p.root, "the saved dict".to_string()),
    };
    let Node::Dict(items) = p.node(dict) else { unreachable!("checked above") };
    let mut out = Vec::with_capacity(items.len());
    for &(k, v) in items {
        let Some(name) = p.str(k) else {
            return Err(not(format!(
                "{location} has a key that is {}, not a string",
                p.type_name(k)
            )));
        };
        match p.node(v) {
            Node::Tensor(t) => out.push((name.to_string(), t.clone())),
            _ => {
                let keys: Vec<&str> = top.iter().filter_map(|(k, _)| p.str(*k)).take(8).collect();
                return Err(not(format!(
                    "entry {name:?} of {location} is {}, not a tensor (top-level keys: {keys:?}; a state_dict is a dict of tensors, or a dict holding one under {STATE_DICT_ENTRIES:?})",
                    p.type_name(v)
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(not(format!("{location} holds no tensors")));
    }
    Ok((location, out))
}

fn kind(d: Dtype) -> Kind {
    match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::Bool => Kind::Bool,
    }
}

fn build_tensor(
    path: &Path,
    name: &str,
    t: TensorRef,
    storages: &Storages<'_>,
    cache: &mut HashMap<String, Tensor>,
) -> Result<Tensor> {
    let s = &t.storage;
    let err = |m: String| bad(path, format!("tensor {name:?}: {m}"));
    if !cache.contains_key(&s.key) {
        let Some(bytes) = storages.get(&s.key) else {
            return Err(err(format!("its storage {} is not in the file", s.key)));
        };
        let es = s.dtype.size() as u64;
        let start = s.view_offset.checked_mul(es);
        let end = s.view_offset.checked_add(s.numel).and_then(|n| n.checked_mul(es));
        let slice = match (start, end) {
            (Some(a), Some(b)) if b <= bytes.len() as u64 => &bytes[a as usize..b as usize],
            _ => {
                return Err(err(format!(
                    "its storage {} holds {} bytes, fewer than {} elements of {} bytes (truncated?)",
                    s.key,
                    bytes.len(),
                    s.numel,
                    es
                )));
            }
        };
        let numel = i64::try_from(s.numel).map_err(|_| err("storage too large".into()))?;
        let st = Tensor::f_from_data_size(slice, &[numel], kind(s.dtype))?;
        cache.insert(s.key.clone(), st);
    }
    let storage = &cache[&s.key];
    // The last element the view reads must lie inside the storage.
    let mut last = t.offset;
    let mut empty = false;
    for (&n, &st) in t.size.iter().zip(&t.stride) {
        if n < 0 || st < 0 {
            return Err(err(format!(
                "negative size or stride (size {:?}, stride {:?})",
                t.size, t.stride
            )));
        }
        if n == 0 {
            empty = true;
        }
        last = last.saturating_add((n.max(1) - 1).saturating_mul(st));
    }
    let numel = storage.size()[0];
    if t.offset < 0 || (!empty && last >= numel) {
        return Err(err(format!(
            "size {:?}, stride {:?}, offset {} read past its storage of {numel} elements",
            t.size, t.stride, t.offset
        )));
    }
    Ok(storage.f_as_strided(&t.size, &t.stride, Some(t.offset))?.f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safetensors_header_length_starting_with_0x80_is_not_a_pickle() {
        // Header length 0x2a80 = 10880 bytes, then the JSON header.
        assert!(!is_pth(b"\x80\x2a\x00\x00\x00\x00\x00\x00{"));
        assert!(!is_pth(b"\x80\x02\x00\x00\x00\x00\x00\x00{"));
        // torch.save's legacy stream: PROTO 2, LONG1 of its magic number.
        assert!(is_pth(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9"));
        assert!(is_pth(b"PK\x03\x04\x00\x00\x00\x00\x00"));
        assert!(!is_pth(b""));
    }
}
