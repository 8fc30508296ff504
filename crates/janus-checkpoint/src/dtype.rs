//! Element types on disk and the conversions between float types.

use std::fmt;

use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// Element type of a tensor as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    /// IEEE f64.
    F64,
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// i64.
    I64,
    /// i32.
    I32,
    /// i16.
    I16,
    /// i8.
    I8,
    /// u8.
    U8,
    /// bool (one byte).
    Bool,
}

impl StoredDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The safetensors name (`F32`, `BF16`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "BOOL",
        }
    }

    /// Parses a safetensors dtype name.
    pub fn from_safetensors_name(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

/// Shape and dtype of one stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Element type on disk.
    pub dtype: StoredDType,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Float element types a stored tensor can be read as: `f32`, [`f16`] and [`bf16`].
pub trait FloatElem: Copy + sealed::Sealed {
    /// The matching stored dtype.
    const STORED: StoredDType;
    /// From an f32 value (rounding to nearest).
    fn from_f32(x: f32) -> Self;
    /// From an f16 value.
    fn from_f16(x: f16) -> Self {
        Self::from_f32(x.to_f32())
    }
    /// From a bf16 value.
    fn from_bf16(x: bf16) -> Self {
        Self::from_f32(x.to_f32())
    }
    /// From an f64 value (rounding to nearest).
    fn from_f64(x: f64) -> Self;
}

impl FloatElem for f32 {
    const STORED: StoredDType = StoredDType::F32;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl FloatElem for f16 {
    const STORED: StoredDType = StoredDType::F16;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_f16(x: f16) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
}

impl FloatElem for bf16 {
    const STORED: StoredDType = StoredDType::BF16;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_bf16(x: bf16) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

/// Converts little-endian `bytes` of the float dtype `stored` to `T`.
pub(crate) fn convert<T: FloatElem>(bytes: &[u8], stored: StoredDType) -> Vec<T> {
    match stored {
        StoredDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        StoredDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| T::from_f16(f16::from_le_bytes([c[0], c[1]])))
            .collect(),
        StoredDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| T::from_bf16(bf16::from_le_bytes([c[0], c[1]])))
            .collect(),
        StoredDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        _ => unreachable!("non-float dtypes are rejected before conversion"),
    }
}
