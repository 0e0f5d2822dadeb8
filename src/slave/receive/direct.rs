//! The aligned buffer that large temp copies are written through with
//! `O_DIRECT`.

/// Alignment of the memory, offset and length of an `O_DIRECT` write (the
/// usual largest logical block size).
pub(super) const DIRECT_ALIGN: usize = 4096;

/// A buffer whose start is aligned for `O_DIRECT`.
pub(super) struct AlignedBuf {
    pub(super) raw: Vec<u8>,
    pub(super) start: usize,
}

impl AlignedBuf {
    pub(super) fn new(capacity: usize) -> Self {
        let raw = vec![0u8; capacity + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - raw.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf { raw, start }
    }

    pub(super) fn capacity(&self) -> usize {
        self.raw.len() - DIRECT_ALIGN
    }

    pub(super) fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + len]
    }
}
