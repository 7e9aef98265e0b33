//! Little-endian encoding of record payloads, with every length bounded by the bytes that remain.

#[cfg(not(any(target_pointer_width = "64", target_pointer_width = "32")))]
compile_error!("trajdb needs a target where u32 fits in usize");

/// A u32 read from disk as an index or length in memory (lossless on supported targets).
#[inline]
pub(crate) fn ix(x: u32) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// A memory size as a file offset or length (lossless on supported targets).
#[inline]
pub(crate) fn off(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// The little-endian u32 at byte `at` of a fixed-size header `b` (`at + 4 <= b.len()`, as
/// the callers' header layouts guarantee).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian u64 at byte `at` of a fixed-size header `b` (`at + 8 <= b.len()`).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends little-endian values to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    /// A count: callers have bounded it below `u32::MAX` already.
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.f64(x);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
            None => self.u8(0),
        }
    }
}

/// Why a payload failed to decode: the byte offset inside the payload and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub(crate) at: usize,
    pub(crate) what: String,
}

pub(crate) type DecResult<T> = Result<T, DecodeError>;

/// Reads little-endian values from a byte slice without ever reading past its end.
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Dec { bytes, pos: 0 }
    }
    pub(crate) fn err<T>(&self, what: impl Into<String>) -> DecResult<T> {
        Err(DecodeError {
            at: self.pos,
            what: what.into(),
        })
    }
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        if n > self.remaining() {
            return self.err(format!(
                "needs {n} bytes but only {} remain",
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> DecResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> DecResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> DecResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> DecResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f64(&mut self) -> DecResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_item` bytes long, bounded by what remains.
    pub(crate) fn count(&mut self, min_item: usize) -> DecResult<usize> {
        let n = self.u32()?;
        let n = usize::try_from(n).map_err(|_| DecodeError {
            at: self.pos,
            what: "count does not fit in memory".into(),
        })?;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return self.err(format!(
                "count {n} exceeds the {} bytes that remain",
                self.remaining()
            ));
        }
        Ok(n)
    }
    pub(crate) fn str(&mut self) -> DecResult<&'a str> {
        let n = self.count(1)?;
        let at = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError {
            at: at + e.valid_up_to(),
            what: "string is not valid UTF-8".into(),
        })
    }
    pub(crate) fn flag(&mut self) -> DecResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => self.err(format!("option tag {t} is neither 0 nor 1")),
        }
    }
    pub(crate) fn opt_f64(&mut self) -> DecResult<Option<f64>> {
        Ok(if self.flag()? {
            Some(self.f64()?)
        } else {
            None
        })
    }
    pub(crate) fn opt_str(&mut self) -> DecResult<Option<&'a str>> {
        Ok(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    pub(crate) fn opt_u64(&mut self) -> DecResult<Option<u64>> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    pub(crate) fn finish(&self) -> DecResult<()> {
        if self.remaining() != 0 {
            return self.err(format!(
                "{} trailing bytes after the record",
                self.remaining()
            ));
        }
        Ok(())
    }
}
