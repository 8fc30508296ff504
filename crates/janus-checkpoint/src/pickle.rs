//! A restricted pickle reader for PyTorch `data.pkl` state dicts.
//!
//! It understands the opcodes `torch.save` emits (protocols 2 to 5) and builds plain
//! values. It **executes nothing**: `GLOBAL` is only accepted for a short allow-list
//! (`collections.OrderedDict`, the tensor rebuild helpers and the typed storage
//! classes), and `REDUCE` on those builds data, never calls code. Anything else is
//! rejected with an error naming the offending global or opcode.
//!
//! It is also bounded: values nest at most [`MAX_DEPTH`] deep, and at most
//! [`MAX_NODES`] values holding at most [`MAX_BYTES`] bytes of strings are
//! ever built (memo copies included), so a small hostile file can neither
//! overflow the stack nor exhaust memory.

use std::collections::HashMap;

use crate::dtype::StoredDType;

/// How deep values may nest (a state dict needs about 5).
pub const MAX_DEPTH: u32 = 64;
/// How many values a pickle may build in all (a 7B state dict builds about 20k).
pub const MAX_NODES: usize = 1 << 22;
/// How many bytes of strings a pickle may build in all (a 7B state dict's
/// key names take about 2 MB; a memo copy of a 4 MB string 3000 times over
/// asked for 12 GB).
pub const MAX_BYTES: usize = 1 << 28;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Vec<(Value, Value)>),
    /// An allowed global, not yet applied.
    Global(AllowedGlobal),
    /// A storage reference from a persistent id.
    Storage(StorageRef),
    /// A rebuilt tensor (a view into a storage).
    Tensor(TensorRef),
}

/// The globals a state dict may reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AllowedGlobal {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch.<Type>Storage`.
    StorageType(StoredDType),
}

/// A storage: `archive/data/<key>` holding `numel` elements of `dtype`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Element type.
    pub dtype: StoredDType,
    /// Name of the data record.
    pub key: String,
    /// Elements in the storage.
    pub numel: usize,
}

/// A tensor view: `storage[offset + sum(i_k * stride_k)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage it views.
    pub storage: StorageRef,
    /// Offset in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

fn resolve_global(module: &str, name: &str) -> Result<AllowedGlobal, String> {
    let dtype = |d| Ok(AllowedGlobal::StorageType(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(AllowedGlobal::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(AllowedGlobal::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(AllowedGlobal::RebuildParameter),
        ("torch", "FloatStorage") => dtype(StoredDType::F32),
        ("torch", "DoubleStorage") => dtype(StoredDType::F64),
        ("torch", "HalfStorage") => dtype(StoredDType::F16),
        ("torch", "BFloat16Storage") => dtype(StoredDType::BF16),
        ("torch", "LongStorage") => dtype(StoredDType::I64),
        ("torch", "IntStorage") => dtype(StoredDType::I32),
        ("torch", "ShortStorage") => dtype(StoredDType::I16),
        ("torch", "CharStorage") => dtype(StoredDType::I8),
        ("torch", "ByteStorage") => dtype(StoredDType::U8),
        ("torch", "BoolStorage") => dtype(StoredDType::Bool),
        _ => Err(format!(
            "the pickle references the global `{module}.{name}`, which is not allowed in a weight file (nothing was executed)"
        )),
    }
}

impl Value {
    /// What kind of value this is, for error messages (never the whole value,
    /// which a hostile file can make huge).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "a bool",
            Self::Int(_) => "an int",
            Self::Float(_) => "a float",
            Self::Str(_) => "a string",
            Self::Bytes(_) => "bytes",
            Self::Tuple(_) => "a tuple",
            Self::List(_) => "a list",
            Self::Dict(_) => "a dict",
            Self::Global(_) => "a global",
            Self::Storage(_) => "a storage",
            Self::Tensor(_) => "a tensor",
        }
    }
}

/// A value on the machine's stack or in its memo, with how deep it nests,
/// how many values it holds and their bytes of strings.
#[derive(Debug, Clone)]
struct Item {
    value: Value,
    depth: u32,
    nodes: usize,
    bytes: usize,
}

impl Item {
    fn leaf(value: Value) -> Self {
        let bytes = match &value {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        Self {
            value,
            depth: 0,
            nodes: 1,
            bytes,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    /// Values built so far (memo copies count in full).
    built: usize,
    /// Bytes of strings built so far (memo copies count in full).
    built_bytes: usize,
}

/// Parses a pickle and returns the top-level value.
pub fn parse(data: &[u8]) -> Result<Value, String> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        built: 0,
        built_bytes: 0,
    };
    m.run()
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("pickle truncated inside a GLOBAL")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    /// Counts `nodes` values of `bytes` bytes of strings about to be built.
    fn count(&mut self, nodes: usize, bytes: usize) -> Result<(), String> {
        self.built = self.built.saturating_add(nodes);
        self.built_bytes = self.built_bytes.saturating_add(bytes);
        if self.built > MAX_NODES {
            return Err(format!(
                "the pickle builds more than {MAX_NODES} values (a state dict needs far fewer)"
            ));
        }
        if self.built_bytes > MAX_BYTES {
            return Err(format!(
                "the pickle builds more than {MAX_BYTES} bytes of strings (a state dict needs \
                 a few MB)"
            ));
        }
        Ok(())
    }
    /// Pushes `item`, counting what it builds (`new` values of `new_bytes`).
    fn push_item(&mut self, item: Item, new: usize, new_bytes: usize) -> Result<(), String> {
        self.count(new, new_bytes)?;
        if item.depth > MAX_DEPTH {
            return Err(format!(
                "the pickle nests values more than {MAX_DEPTH} deep (a state dict needs about 5)"
            ));
        }
        self.stack.push(item);
        Ok(())
    }
    fn push(&mut self, value: Value) -> Result<(), String> {
        let item = Item::leaf(value);
        let bytes = item.bytes;
        self.push_item(item, 1, bytes)
    }
    /// Pushes a new container of `items`.
    fn push_container(
        &mut self,
        items: Vec<Item>,
        make: fn(Vec<Value>) -> Value,
    ) -> Result<(), String> {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let nodes = 1 + items.iter().map(|i| i.nodes).sum::<usize>();
        let bytes = items.iter().map(|i| i.bytes).sum::<usize>();
        let value = make(items.into_iter().map(|i| i.value).collect());
        self.push_item(
            Item {
                value,
                depth,
                nodes,
                bytes,
            },
            1,
            0,
        )
    }
    fn string(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| "string in pickle is not UTF-8".into())
    }
    fn pop_item(&mut self) -> Result<Item, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }
    fn pop(&mut self) -> Result<Value, String> {
        Ok(self.pop_item()?.value)
    }
    fn pop_mark(&mut self) -> Result<Vec<Item>, String> {
        let mark = self.marks.pop().ok_or("pickle MARK missing")?;
        if mark > self.stack.len() {
            return Err("pickle MARK beyond stack".into());
        }
        Ok(self.stack.split_off(mark))
    }
    fn top(&mut self) -> Result<&mut Item, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".into())
    }
    fn memo_put(&mut self, idx: u32) -> Result<(), String> {
        let v = self.stack.last().ok_or("pickle stack underflow")?;
        // The memo shares the cost of what it keeps: a copy counts when it is made.
        let (nodes, bytes) = (v.nodes, v.bytes);
        self.count(nodes, bytes)?;
        let copy = self.stack.last().ok_or("pickle stack underflow")?.clone();
        self.memo.insert(idx, copy);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> Result<(), String> {
        let item = self
            .memo
            .get(&idx)
            .ok_or_else(|| format!("pickle memo {idx} undefined"))?;
        let (nodes, bytes) = (item.nodes, item.bytes);
        // Counted before copying, so a memo bomb fails without building anything.
        self.count(nodes, bytes)?;
        let v = self.memo[&idx].clone();
        self.push_item(v, 0, 0)
    }
    /// Adds `items` to the container on top of the stack with `add`.
    fn extend_top(
        &mut self,
        items: Vec<Item>,
        add: fn(&mut Value, Vec<Value>) -> Result<(), String>,
    ) -> Result<(), String> {
        let depth = 1 + items.iter().map(|i| i.depth).max().unwrap_or(0);
        let nodes: usize = items.iter().map(|i| i.nodes).sum();
        let bytes: usize = items.iter().map(|i| i.bytes).sum();
        let top = self.top()?;
        add(&mut top.value, items.into_iter().map(|i| i.value).collect())?;
        top.depth = top.depth.max(depth);
        top.nodes = top.nodes.saturating_add(nodes);
        top.bytes = top.bytes.saturating_add(bytes);
        if top.depth > MAX_DEPTH {
            return Err(format!(
                "the pickle nests values more than {MAX_DEPTH} deep (a state dict needs about 5)"
            ));
        }
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Item>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd item count".into());
        }
        self.extend_top(items, |top, items| {
            let Value::Dict(d) = top else {
                return Err("SETITEMS on a non-dict".into());
            };
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.push((k, v));
            }
            Ok(())
        })
    }
    fn append(&mut self, items: Vec<Item>) -> Result<(), String> {
        self.extend_top(items, |top, items| match top {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err("APPEND on a non-list".into()),
        })
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME length: frames are just a hint
                }
                b'.' => return self.pop(),
                b'(' => {
                    // Open marks nest as values do (each one a byte of the
                    // file, 8 bytes of memory: 256 MB of them took 2.6 GB).
                    if self.marks.len() >= MAX_DEPTH as usize {
                        return Err(format!(
                            "the pickle opens more than {MAX_DEPTH} marks at once (a state dict \
                             needs about 5)"
                        ));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(items, Value::Tuple)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_container(items, Value::List)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()))?;
                    self.set_items(items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_container(items, Value::Tuple)?;
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.push(Value::Int(v as i64))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?;
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("integer in pickle is too large".into());
                    }
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(b);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        buf[n..].fill(0xff);
                    }
                    self.push(Value::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?;
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(resolve_global(&module, &name)?))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err("STACK_GLOBAL with non-string names".into());
                    };
                    self.push(Value::Global(resolve_global(&module, &name)?))?;
                }
                b's' => {
                    let v = self.pop_item()?;
                    let k = self.pop_item()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop_item()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::Storage(storage_from_pid(pid)?))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    // BUILD: state for an OrderedDict or a parameter; nothing to apply.
                    let _state = self.pop()?;
                    match &self.top()?.value {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return Err(format!("BUILD on {}", other.kind())),
                    }
                }
                _ => {
                    return Err(format!(
                        "pickle opcode 0x{op:02x} at byte {at} is not allowed in a weight file (nothing was executed)"
                    ));
                }
            }
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative integer, got {}",
            other.kind()
        )),
    }
}

fn as_usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|x| as_usize(x, what)).collect()
        }
        other => Err(format!("{what}: expected a tuple, got {}", other.kind())),
    }
}

fn storage_from_pid(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("unexpected persistent id: {}", pid.kind()));
    };
    match items.as_slice() {
        [
            Value::Str(kind),
            Value::Global(AllowedGlobal::StorageType(dtype)),
            Value::Str(key),
            _location,
            numel,
        ] if kind == "storage" => Ok(StorageRef {
            dtype: *dtype,
            key: key.clone(),
            numel: as_usize(numel, "storage size")?,
        }),
        _ => Err(format!("unexpected persistent id of {} items", items.len())),
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(g) = func else {
        return Err(format!(
            "REDUCE on {}, not an allowed callable",
            func.kind()
        ));
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match g {
        AllowedGlobal::OrderedDict => Ok(Value::Dict(Vec::new())),
        AllowedGlobal::RebuildTensorV2 => {
            if args.len() < 4 {
                return Err("_rebuild_tensor_v2 with too few arguments".into());
            }
            let Value::Storage(storage) = args[0].clone() else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let shape = as_usize_tuple(&args[2], "tensor size")?;
            let stride = as_usize_tuple(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage,
                offset: as_usize(&args[1], "storage offset")?,
                shape,
                stride,
            }))
        }
        AllowedGlobal::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        AllowedGlobal::StorageType(_) => Err("calling a storage type is not allowed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_arbitrary_globals() {
        // cos\nsystem\n(S'echo hi'\ntR.
        let evil = b"cos\nsystem\n(S'echo hi'\ntR.";
        let err = parse(evil).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn rejects_unknown_opcodes() {
        let err = parse(b"\x80\x02S'x'\n.").unwrap_err();
        assert!(err.contains("0x53"), "{err}");
    }

    #[test]
    fn parses_a_small_dict() {
        // {"a": 1, "b": (2, True)} at protocol 2.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02\x88\x86u.";
        let v = parse(p).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(1)),
                (
                    Value::Str("b".into()),
                    Value::Tuple(vec![Value::Int(2), Value::Bool(true)])
                ),
            ])
        );
    }

    #[test]
    fn marks_are_bounded_like_nesting() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', MAX_DEPTH as usize));
        let err = parse(&p).unwrap_err();
        assert!(!err.contains("more than"), "{err}");
        p.push(b'(');
        let err = parse(&p).unwrap_err();
        assert!(err.contains("more than 64 marks"), "{err}");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(parse(b"\x80\x02}q\x00(X\x05\x00\x00\x00ab").is_err());
    }
}
