//! GGUF metadata values.
//!
//! Arrays are stored typed (a `Vec<u32>`, not a `Vec<Value>`), so the memory a file's metadata
//! takes stays within a small multiple of its size on disk.

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array: all elements share one type; arrays may nest.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

/// The on-disk type tags of metadata values.
pub(crate) mod tag {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl Value {
    pub(crate) fn tag(&self) -> u32 {
        match self {
            Value::U8(_) => tag::U8,
            Value::I8(_) => tag::I8,
            Value::U16(_) => tag::U16,
            Value::I16(_) => tag::I16,
            Value::U32(_) => tag::U32,
            Value::I32(_) => tag::I32,
            Value::U64(_) => tag::U64,
            Value::I64(_) => tag::I64,
            Value::F32(_) => tag::F32,
            Value::F64(_) => tag::F64,
            Value::Bool(_) => tag::BOOL,
            Value::String(_) => tag::STRING,
            Value::Array(_) => tag::ARRAY,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short human-readable rendering; long arrays and strings are elided.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) => summarize_str(s),
            Value::Array(a) => a.summary(),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }
}

fn summarize_str(s: &str) -> String {
    if s.chars().count() > 80 {
        let head: String = s.chars().take(77).collect();
        format!("{head:?}... ({} bytes)", s.len())
    } else {
        format!("{s:?}")
    }
}

fn summarize_items<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let shown: Vec<String> = items.iter().take(4).map(show).collect();
    if items.len() > 4 {
        format!("[{}, ...] ({} items)", shown.join(", "), items.len())
    } else {
        format!("[{}]", shown.join(", "))
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn elem_tag(&self) -> u32 {
        match self {
            Array::U8(_) => tag::U8,
            Array::I8(_) => tag::I8,
            Array::U16(_) => tag::U16,
            Array::I16(_) => tag::I16,
            Array::U32(_) => tag::U32,
            Array::I32(_) => tag::I32,
            Array::U64(_) => tag::U64,
            Array::I64(_) => tag::I64,
            Array::F32(_) => tag::F32,
            Array::F64(_) => tag::F64,
            Array::Bool(_) => tag::BOOL,
            Array::String(_) => tag::STRING,
            Array::Array(_) => tag::ARRAY,
        }
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            Array::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Integer elements of any integer type, widened; `None` for other types or values that
    /// do not fit an i64.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn widen<T: Copy + TryInto<i64>>(v: &[T]) -> Option<Vec<i64>> {
            v.iter().map(|&x| x.try_into().ok()).collect()
        }
        match self {
            Array::U8(v) => widen(v),
            Array::I8(v) => widen(v),
            Array::U16(v) => widen(v),
            Array::I16(v) => widen(v),
            Array::U32(v) => widen(v),
            Array::I32(v) => widen(v),
            Array::U64(v) => widen(v),
            Array::I64(v) => widen(v),
            _ => None,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            Array::U8(v) => summarize_items(v, u8::to_string),
            Array::I8(v) => summarize_items(v, i8::to_string),
            Array::U16(v) => summarize_items(v, u16::to_string),
            Array::I16(v) => summarize_items(v, i16::to_string),
            Array::U32(v) => summarize_items(v, u32::to_string),
            Array::I32(v) => summarize_items(v, i32::to_string),
            Array::U64(v) => summarize_items(v, u64::to_string),
            Array::I64(v) => summarize_items(v, i64::to_string),
            Array::F32(v) => summarize_items(v, f32::to_string),
            Array::F64(v) => summarize_items(v, f64::to_string),
            Array::Bool(v) => summarize_items(v, bool::to_string),
            Array::String(v) => summarize_items(v, |s| summarize_str(s)),
            Array::Array(v) => summarize_items(v, Array::summary),
        }
    }
}
