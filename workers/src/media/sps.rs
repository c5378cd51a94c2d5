//! Picture sizes from H.264 and HEVC decoder configuration records: FLV has no other place
//! for them, and an MP4 sample entry and track header need them.

use crate::media::mpegts::{rbsp, sps_size, Bits};

/// The picture size from the first SPS of an AVCDecoderConfigurationRecord.
pub(crate) fn avc_size(rec: &[u8]) -> Option<(u64, u64)> {
    // version 1, profile, compatibility, level, length size, SPS count, SPS length, SPS.
    if *rec.first()? != 1 || rec.get(5)? & 0x1f == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*rec.get(6)?, *rec.get(7)?]));
    h264_sps_size(rec.get(8..8 + len)?)
}

/// The displayed picture size of an H.264 SPS (7.3.2.1.1): the coded size less the cropping.
fn h264_sps_size(sps: &[u8]) -> Option<(u64, u64)> {
    let r = rbsp(sps);
    let mut b = Bits::new(r.get(1..)?);
    let profile = b.bits(8)?;
    b.skip(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = b.ue()?;
        if chroma == 3 {
            b.skip(1)?;
        }
        b.ue()?; // bit depths
        b.ue()?;
        b.skip(1)?;
        if b.bit()? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if b.bit()? == 1 {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.skip(1)?;
            se(&mut b)?;
            se(&mut b)?;
            for _ in 0..b.ue()? {
                se(&mut b)?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.skip(1)?;
    let width = (u64::from(b.ue()?) + 1) * 16;
    let map_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = u64::from(b.bit()?);
    // Without frame_mbs_only, a map unit is a pair of field macroblocks.
    let height = map_units * 16 * (2 - frame_mbs_only);
    if frame_mbs_only == 0 {
        b.skip(1)?;
    }
    b.skip(1)?; // direct_8x8_inference
    if b.bit()? == 0 {
        return Some((width, height));
    }
    let [l, r, t, bo] = [b.ue()?, b.ue()?, b.ue()?, b.ue()?].map(u64::from);
    let (sub_w, sub_h) = match chroma {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let w = width.checked_sub(sub_w * (l + r))?;
    let h = height.checked_sub(sub_h * (2 - frame_mbs_only) * (t + bo))?;
    Some((w, h))
}

fn se(b: &mut Bits) -> Option<i64> {
    let k = i64::from(b.ue()?);
    Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
}

fn skip_scaling_list(b: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + se(b)?).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The picture size from the SPS of an HEVCDecoderConfigurationRecord.
pub(crate) fn hevc_size(rec: &[u8]) -> Option<(u64, u64)> {
    // 22 bytes of fixed fields, the array count, then the arrays of NAL units.
    let arrays = *rec.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let kind = rec.get(at)? & 0x3f;
        let count = u16::from_be_bytes([*rec.get(at + 1)?, *rec.get(at + 2)?]);
        at += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*rec.get(at)?, *rec.get(at + 1)?]));
            let nal = rec.get(at + 2..at + 2 + len)?;
            if kind == 33 {
                let (w, h) = sps_size(nal)?;
                return Some((u64::from(w), u64::from(h)));
            }
            at += 2 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fmp4::tests::{AVCC_1080, AVCC_64X48};

    #[test]
    fn sps_sizes() {
        assert_eq!(avc_size(AVCC_64X48), Some((64, 48)));
        assert_eq!(avc_size(AVCC_1080), Some((1920, 1080)));
        assert_eq!(avc_size(&AVCC_1080[..20]), None);
        assert_eq!(hevc_size(&[0; 23]), None);
    }
}
