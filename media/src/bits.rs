//! A big-endian bit reader with Exp-Golomb codes, over an RBSP (emulation prevention removed).

use crate::MediaError;

pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader { data, pos: 0, what }
    }

    pub(crate) fn bit(&mut self) -> Result<u32, MediaError> {
        let byte = self.data.get(self.pos / 8).ok_or(MediaError::Truncated {
            what: self.what,
            offset: self.pos / 8,
        })?;
        let v = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(v))
    }

    pub(crate) fn bits(&mut self, n: u32) -> Result<u32, MediaError> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    /// Unsigned Exp-Golomb, bounded to 31 leading zeros (larger values are invalid in H.264).
    pub(crate) fn ue(&mut self) -> Result<u32, MediaError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(MediaError::Invalid {
                    what: self.what,
                    value: zeros,
                    offset: self.pos / 8,
                });
            }
        }
        if zeros == 0 {
            return Ok(0);
        }
        let rest = self.bits(zeros as u32)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    pub(crate) fn se(&mut self) -> Result<i32, MediaError> {
        let k = self.ue()?;
        let v = k.div_ceil(2) as i32;
        Ok(if k % 2 == 1 { v } else { -v })
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos / 8
    }
}

/// Removes H.264 emulation prevention bytes (`00 00 03` → `00 00`).
pub(crate) fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0,1,2,3 and se(4) = -2
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
        assert_eq!(r.se().unwrap(), -2);
        assert!(r.bits(16).is_err());
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }

    #[test]
    fn all_zero_input_is_an_error_not_a_hang() {
        let data = [0u8; 8];
        let mut r = BitReader::new(&data, "test");
        assert!(r.ue().is_err());
    }
}
