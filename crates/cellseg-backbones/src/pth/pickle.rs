//! The subset of Python's pickle machine that `torch.save` files use, with no Python and no tch.
//!
//! Values live in one arena ([`Pickle::nodes`]) and refer to each other by index, so that a dict
//! that is memoised empty and filled afterwards (what every pickler does) is the same dict
//! wherever it is referenced again. Classes are never imported: a `GLOBAL` is a name, and
//! calling it (`REDUCE`, `NEWOBJ`) builds an [`Node::Object`] that keeps its class name, except
//! for the few callables a PyTorch `state_dict` is made of (`collections.OrderedDict` and the
//! `torch._utils._rebuild_*` functions), which become dicts and [`Node::Tensor`]s. A persistent
//! id (`BINPERSID`, how `torch.save` refers to tensor storages) becomes a [`Node::Storage`] when
//! it has the shape `('storage', <storage class>, key, location, numel, …)`.
//!
//! Opcodes of protocols 0–5 that such files can hold are implemented; anything else (`EXT*`,
//! `INST`, `OBJ`, out-of-band buffers) is an error naming the opcode and its byte offset.

use std::collections::HashMap;

/// Index of a value in [`Pickle::nodes`].
pub type Id = usize;

/// The element type of a tensor storage, from its storage class (`torch.FloatStorage`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `torch.FloatStorage`
    F32,
    /// `torch.DoubleStorage`
    F64,
    /// `torch.HalfStorage`
    F16,
    /// `torch.BFloat16Storage`
    BF16,
    /// `torch.LongStorage`
    I64,
    /// `torch.IntStorage`
    I32,
    /// `torch.ShortStorage`
    I16,
    /// `torch.CharStorage`
    I8,
    /// `torch.ByteStorage`
    U8,
    /// `torch.BoolStorage`
    Bool,
}

impl Dtype {
    /// The dtype of the storage class `torch.<name>`.
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A tensor storage named by a persistent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The record key (`data/<key>` in a zip checkpoint; the legacy format's root key).
    pub key: String,
    /// Element type.
    pub dtype: Dtype,
    /// Elements in the storage, as the persistent id states.
    pub numel: u64,
    /// Elements skipped at the start of the root storage (legacy storage views; 0 otherwise).
    pub view_offset: u64,
}

/// A tensor rebuilt by `torch._utils._rebuild_tensor(_v2)`: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Its storage.
    pub storage: StorageRef,
    /// Offset into the storage, in elements.
    pub offset: i64,
    /// Shape.
    pub size: Vec<i64>,
    /// Strides, in elements.
    pub stride: Vec<i64>,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// An int that does not (little-endian two's complement bytes).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A `str` (and protocol-0/1 byte strings, decoded lossily).
    Str(String),
    /// `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list (also sets and frozensets).
    List(Vec<Id>),
    /// A dict or `collections.OrderedDict`, in insertion order.
    Dict(Vec<(Id, Id)>),
    /// A class or function named by `GLOBAL` / `STACK_GLOBAL`, never imported.
    Global(String),
    /// An instance of a class (or the result of a call) that is not one of the known ones.
    Object {
        /// `module.name` of the class or callable.
        class: String,
    },
    /// A persistent id that is not a tensor storage.
    Persistent(Id),
    /// A tensor storage (a persistent id of `torch.save`).
    Storage(StorageRef),
    /// A tensor.
    Tensor(TensorRef),
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Byte offset of the opcode, inside the pickle.
    pub offset: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.message)
    }
}

/// A decoded pickle: the arena and the index of the value `STOP` returned.
#[derive(Debug, Clone, Default)]
pub struct Pickle {
    /// Every value made while reading.
    pub nodes: Vec<Node>,
    /// The result.
    pub root: Id,
    /// Bytes the pickle took (the legacy format writes several pickles one after another).
    pub len: usize,
}

impl Pickle {
    /// The value at `id`.
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id]
    }

    /// The text of a string value.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entry `key` of a dict value.
    pub fn get(&self, dict: Id, key: &str) -> Option<Id> {
        match self.node(dict) {
            Node::Dict(items) => {
                items.iter().find(|(k, _)| self.str(*k) == Some(key)).map(|(_, v)| *v)
            }
            _ => None,
        }
    }

    /// A short description of a value's type, for error messages (`dict`, `int`, `tensor`,
    /// the class name of an object, …).
    pub fn type_name(&self, id: Id) -> String {
        match self.node(id) {
            Node::None => "None".into(),
            Node::Bool(_) => "bool".into(),
            Node::Int(_) | Node::BigInt(_) => "int".into(),
            Node::Float(_) => "float".into(),
            Node::Str(_) => "str".into(),
            Node::Bytes(_) => "bytes".into(),
            Node::Tuple(_) => "tuple".into(),
            Node::List(_) => "list".into(),
            Node::Dict(_) => "dict".into(),
            Node::Global(name) => format!("the class or function {name}"),
            Node::Object { class } => format!("a {class} object"),
            Node::Persistent(_) => "a persistent id".into(),
            Node::Storage(_) => "a tensor storage".into(),
            Node::Tensor(_) => "tensor".into(),
        }
    }
}

/// Reads one pickle from the start of `data` (trailing bytes are left alone).
///
/// # Errors
/// A [`PickleError`] at the first opcode that is unknown, truncated or ill-formed.
pub fn read(data: &[u8]) -> Result<Pickle, PickleError> {
    Machine {
        data,
        pos: 0,
        op_pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

impl Machine<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError { offset: self.op_pos, message: message.into() })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.err(format!(
                "truncated: needs {n} more byte(s), {} left",
                self.data.len() - self.pos
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let s = String::from_utf8_lossy(&rest[..n]).into_owned();
                self.pos += n + 1;
                Ok(s)
            }
            None => self.err("truncated: a text argument has no end of line"),
        }
    }

    fn len_prefixed(&mut self, width: usize) -> Result<Vec<u8>, PickleError> {
        let n = match width {
            1 => u64::from(self.u8()?),
            4 => u64::from(u32::from_le_bytes(self.le()?)),
            _ => u64::from_le_bytes(self.le()?),
        };
        let n = usize::try_from(n).or_else(|_| self.err(format!("length {n} too large")))?;
        Ok(self.take(n)?.to_vec())
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().expect("non-empty"))
    }

    fn top(&self) -> Result<Id, PickleError> {
        match self.stack.last() {
            Some(&id) => Ok(id),
            None => self.err("stack underflow"),
        }
    }

    /// The items above the last mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let Some(mark) = self.marks.pop() else { return self.err("no MARK on the stack") };
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => self.err(format!("memo key {key} was never stored")),
        }
    }

    fn int_of(&self, id: Id) -> Option<i64> {
        match self.nodes[id] {
            Node::Int(v) => Some(v),
            Node::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    fn ints_of(&self, id: Id) -> Option<Vec<i64>> {
        match &self.nodes[id] {
            Node::Tuple(items) | Node::List(items) => {
                items.iter().map(|&i| self.int_of(i)).collect()
            }
            _ => None,
        }
    }

    fn items_of(&self, id: Id) -> Vec<Id> {
        match &self.nodes[id] {
            Node::Tuple(items) | Node::List(items) => items.clone(),
            _ => Vec::new(),
        }
    }

    fn set_items(&mut self, dict: Id, pairs: &[Id]) -> Result<(), PickleError> {
        if pairs.len() % 2 != 0 {
            return self.err("SETITEMS with an odd number of items");
        }
        match &mut self.nodes[dict] {
            Node::Dict(items) => {
                items.extend(pairs.chunks(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            // Items of an object of an unknown dict subclass: not needed, not kept.
            Node::Object { .. } => Ok(()),
            _ => {
                let found = self.nodes[dict].clone();
                self.err(format!("SETITEM(S) on a value that is not a dict ({found:?})"))
            }
        }
    }

    fn append(&mut self, list: Id, values: &[Id]) -> Result<(), PickleError> {
        match &mut self.nodes[list] {
            Node::List(items) => {
                items.extend_from_slice(values);
                Ok(())
            }
            Node::Object { .. } => Ok(()),
            _ => self.err("APPEND(S) on a value that is not a list"),
        }
    }

    /// `callable(*args)` for `REDUCE` / `NEWOBJ`.
    fn call(&mut self, callable: Id, args: Id) -> Result<Node, PickleError> {
        let Node::Global(name) = &self.nodes[callable] else {
            return self.err(format!(
                "calls a value that is not a class or function: {:?}",
                self.nodes[callable]
            ));
        };
        let name = name.clone();
        let argv = self.items_of(args);
        Ok(match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" => {
                let mut items = Vec::new();
                if let Some(&first) = argv.first() {
                    for pair in self.items_of(first) {
                        match self.items_of(pair).as_slice() {
                            [k, v] => items.push((*k, *v)),
                            _ => return self.err(format!("{name} built from a non-pair")),
                        }
                    }
                }
                Node::Dict(items)
            }
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => {
                if argv.len() < 4 {
                    return self
                        .err(format!("{name} with {} argument(s), needs at least 4", argv.len()));
                }
                let Node::Storage(storage) = self.nodes[argv[0]].clone() else {
                    return self.err(format!("{name} of a value that is not a storage"));
                };
                let (Some(offset), Some(size), Some(stride)) =
                    (self.int_of(argv[1]), self.ints_of(argv[2]), self.ints_of(argv[3]))
                else {
                    return self.err(format!("{name} with a non-integer offset, size or stride"));
                };
                if size.len() != stride.len() {
                    return self.err(format!(
                        "{name}: size {size:?} and stride {stride:?} differ in length"
                    ));
                }
                Node::Tensor(TensorRef { storage, offset, size, stride })
            }
            // A Parameter is its data tensor (requires_grad and hooks do not matter here).
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match argv.first() {
                    Some(&data) => self.nodes[data].clone(),
                    None => return self.err(format!("{name} without arguments")),
                }
            }
            _ => Node::Object { class: name },
        })
    }

    /// A persistent id: `('storage', <storage class>, key, location, numel[, view_metadata])`.
    fn persistent(&mut self, pid: Id) -> Node {
        let items = self.items_of(pid);
        let is_storage = items
            .first()
            .is_some_and(|&t| matches!(&self.nodes[t], Node::Str(s) if s == "storage"));
        if !is_storage || items.len() < 5 {
            return Node::Persistent(pid);
        }
        let dtype = match &self.nodes[items[1]] {
            Node::Global(name) => name.strip_prefix("torch.").and_then(Dtype::from_storage_class),
            _ => None,
        };
        let key = match &self.nodes[items[2]] {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            _ => None,
        };
        let numel = self.int_of(items[4]).and_then(|n| u64::try_from(n).ok());
        let (Some(dtype), Some(key), Some(numel)) = (dtype, key, numel) else {
            return Node::Persistent(pid);
        };
        // The legacy format's view of a root storage: (view_key, offset, view_size).
        let mut storage = StorageRef { key, dtype, numel, view_offset: 0 };
        if let Some(&view) = items.get(5)
            && let [_, offset, size] = self.items_of(view)[..]
            && let (Some(offset), Some(size)) = (self.int_of(offset), self.int_of(size))
        {
            storage.view_offset = u64::try_from(offset).unwrap_or(0);
            storage.numel = u64::try_from(size).unwrap_or(0);
        }
        Node::Storage(storage)
    }

    fn run(mut self) -> Result<Pickle, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("pickle protocol {proto} is newer than 5"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                } // FRAME: a length hint
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle { nodes: self.nodes, root, len: self.pos });
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Node::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Node::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Node::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let bytes = self.len_prefixed(if op == 0x8a { 1 } else { 4 })?;
                    self.push(long_node(bytes));
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let t = text.trim_end_matches('L');
                    let node = match t {
                        "00" => Node::Bool(false),
                        "01" => Node::Bool(true),
                        _ => match t.parse::<i64>() {
                            Ok(v) => Node::Int(v),
                            Err(_) => return self.err(format!("bad integer {text:?}")),
                        },
                    };
                    self.push(node);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Node::Float(v));
                }
                b'F' => {
                    let text = self.line()?;
                    match text.parse::<f64>() {
                        Ok(v) => self.push(Node::Float(v)),
                        Err(_) => return self.err(format!("bad float {text:?}")),
                    }
                }
                b'X' | 0x8c | 0x8d => {
                    let width = match op {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    };
                    let bytes = self.len_prefixed(width)?;
                    match String::from_utf8(bytes) {
                        Ok(s) => self.push(Node::Str(s)),
                        Err(_) => return self.err("a unicode string that is not UTF-8"),
                    }
                }
                b'V' => {
                    let s = self.line()?;
                    self.push(Node::Str(s));
                }
                b'T' | b'U' => {
                    let bytes = self.len_prefixed(if op == b'U' { 1 } else { 4 })?;
                    self.push(Node::Str(String::from_utf8_lossy(&bytes).into_owned()));
                }
                b'S' => {
                    let s = self.line()?;
                    self.push(Node::Str(s.trim_matches(|c| c == '\'' || c == '"').to_string()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let width = match op {
                        b'C' => 1,
                        b'B' => 4,
                        _ => 8,
                    };
                    let bytes = self.len_prefixed(width)?;
                    self.push(Node::Bytes(bytes));
                }
                b')' => self.push(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b']' | 0x8f => self.push(Node::List(Vec::new())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.append(list, &[v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, &items)?;
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Dict(Vec::new()));
                    let dict = self.top()?;
                    self.set_items(dict, &items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, &[k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, &items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Node::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Node::Str(m), Node::Str(n)) = (&self.nodes[module], &self.nodes[name])
                    else {
                        return self.err("STACK_GLOBAL of non-strings");
                    };
                    let full = format!("{m}.{n}");
                    self.push(Node::Global(full));
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = self.call(callable, args)?;
                    self.push(node);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = self.call(callable, args)?;
                    self.push(node);
                }
                // BUILD: the state of an object (`__setstate__`). OrderedDict's `_metadata` and the
                // state of unknown objects are not needed.
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u64::from(k))?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(u64::from(k))?;
                }
                b'p' => {
                    let text = self.line()?;
                    match text.parse::<u64>() {
                        Ok(k) => self.memo_put(k)?,
                        Err(_) => return self.err(format!("bad memo key {text:?}")),
                    }
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u64::from(k))?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_get(u64::from(k))?;
                }
                b'g' => {
                    let text = self.line()?;
                    match text.parse::<u64>() {
                        Ok(k) => self.memo_get(k)?,
                        Err(_) => return self.err(format!("bad memo key {text:?}")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let node = self.persistent(pid);
                    self.push(node);
                }
                b'P' => {
                    let text = self.line()?;
                    self.push(Node::Str(text));
                    let pid = self.pop()?;
                    let node = self.persistent(pid);
                    self.push(node);
                }
                other => {
                    return self.err(format!(
                        "opcode {:?} (0x{other:02x}) is not one that torch.save writes",
                        char::from(other)
                    ));
                }
            }
        }
    }
}

/// A `LONG1` / `LONG4` value: little-endian two's complement.
fn long_node(bytes: Vec<u8>) -> Node {
    if bytes.is_empty() {
        return Node::Int(0);
    }
    if bytes.len() > 8 {
        return Node::BigInt(bytes);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = if negative { [0xff; 8] } else { [0; 8] };
    buf[..bytes.len()].copy_from_slice(&bytes);
    Node::Int(i64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memoised_dict_filled_later_is_one_dict() {
        // {'a': [1, 2], 'b': <the same list>} as pickle protocol 2 writes it.
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02u.";
        let p = read(data).unwrap();
        let a = p.get(p.root, "a").unwrap();
        let b = p.get(p.root, "b").unwrap();
        assert_eq!(a, b);
        let Node::List(items) = p.node(a) else { panic!("{:?}", p.node(a)) };
        let values: Vec<&Node> = items.iter().map(|&i| p.node(i)).collect();
        assert_eq!(values, [&Node::Int(1), &Node::Int(2)]);
        assert_eq!(p.len, data.len());
    }

    #[test]
    fn long1_is_twos_complement() {
        assert_eq!(long_node(vec![0xff]), Node::Int(-1));
        assert_eq!(long_node(vec![0x00, 0x01]), Node::Int(256));
        assert_eq!(long_node(vec![0x6a, 0xa8, 0x50, 0x19]), Node::Int(0x1950_a86a));
        assert!(matches!(long_node(vec![1; 10]), Node::BigInt(_)));
    }

    #[test]
    fn truncated_and_unknown_opcodes_name_their_offset() {
        let e = read(b"\x80\x02X\x09\x00\x00\x00abc").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("truncated"), "{e}");
        let e = read(b"\x80\x02\x82\x01").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.to_string().contains("0x82"), "{e}");
        let e = read(b"\x80\x02h\x05.").unwrap_err();
        assert!(e.message.contains("memo key 5"), "{e}");
        let e = read(b"\x80\x02.").unwrap_err();
        assert!(e.message.contains("underflow"), "{e}");
    }
}
