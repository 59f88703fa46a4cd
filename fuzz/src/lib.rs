//! What the fuzz targets share: reading a fuzz input as a few flag bits, a
//! handful of split points and the bytes themselves, so that a target can
//! feed the same bytes whole and in pieces and compare what it gets.

/// A fuzz input taken apart: `flags`, then the bytes to feed, and where to
/// split them.
pub struct Input<'a> {
    pub flags: u8,
    pub bytes: &'a [u8],
    cuts: Vec<usize>,
}

impl<'a> Input<'a> {
    /// Byte 0: flags. Byte 1: how many split points (up to 7), then two
    /// bytes (little-endian) for each. The rest: the bytes.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        let flags = data.first().copied().unwrap_or(0);
        let n = usize::from(data.get(1).copied().unwrap_or(0) % 8);
        let start = (2 + 2 * n).min(data.len());
        let bytes = &data[start..];
        let mut cuts: Vec<usize> = data[2.min(data.len())..start]
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (bytes.len() + 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        Input { flags, bytes, cuts }
    }

    /// The bytes cut at the split points (no empty piece).
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut at = 0;
        for &c in self.cuts.iter().chain(std::iter::once(&self.bytes.len())) {
            if c > at {
                out.push(&self.bytes[at..c]);
                at = c;
            }
        }
        out
    }

    /// The bytes as text, if they are UTF-8.
    pub fn text(&self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes).ok()
    }
}

/// Builds an input for `Input::new` (seeds and regression inputs).
pub fn encode(flags: u8, cuts: &[u16], bytes: &[u8]) -> Vec<u8> {
    let cuts = &cuts[..cuts.len().min(7)];
    let mut out = vec![flags, cuts.len() as u8];
    for c in cuts {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip() {
        let data = encode(5, &[3, 1, 3], b"abcdef");
        let input = Input::new(&data);
        assert_eq!(input.flags, 5);
        assert_eq!(input.bytes, b"abcdef");
        assert_eq!(input.pieces(), [&b"a"[..], b"bc", b"def"]);
        assert_eq!(Input::new(&[]).pieces(), Vec::<&[u8]>::new());
    }
}
