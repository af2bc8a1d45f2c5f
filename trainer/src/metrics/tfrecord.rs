//! TFRecord framing, the container of TensorBoard event files:
//!
//! ```text
//! u64 LE   length of data
//! u32 LE   masked crc32c of the 8 length bytes
//! [u8]     data (one serialized Event)
//! u32 LE   masked crc32c of data
//! ```
//! mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (wrapping), as in TensorFlow's
//! `tsl/lib/hash/crc32c.h`.

use std::io::Write;

/// TensorFlow's masked CRC-32C.
pub(crate) fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes one record.
pub(crate) fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Splits a file's bytes into records, checking both CRCs of each. Errors name the record's
/// byte offset. Used by tests and by anyone checking a run's event file.
pub(crate) fn read_records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    while at < bytes.len() {
        if bytes.len() - at < 12 {
            return Err(format!("record at byte {at}: truncated length header"));
        }
        let len_bytes = &bytes[at..at + 8];
        if u32_at(at + 8) != masked_crc32c(len_bytes) {
            return Err(format!("record at byte {at}: length CRC mismatch"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len) as usize;
        let data_start = at + 12;
        if bytes.len() - data_start < len.saturating_add(4) {
            return Err(format!("record at byte {at}: truncated data ({len} bytes promised)"));
        }
        let data = &bytes[data_start..data_start + len];
        if u32_at(data_start + len) != masked_crc32c(data) {
            return Err(format!("record at byte {at}: data CRC mismatch"));
        }
        out.push(data.to_vec());
        at = data_start + len + 4;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_known_values() {
        // The CRC-32C check value (RFC 3720 / iSCSI) and the mask of 0.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn records_round_trip_and_corruption_is_caught() {
        let mut buf = Vec::new();
        write_record(&mut buf, b"hello").unwrap();
        write_record(&mut buf, b"").unwrap();
        write_record(&mut buf, &[7u8; 300]).unwrap();
        assert_eq!(buf.len(), 3 * 16 + 5 + 300);
        let recs = read_records(&buf).unwrap();
        assert_eq!(recs, vec![b"hello".to_vec(), vec![], vec![7u8; 300]]);
        let mut bad = buf.clone();
        bad[13] ^= 1; // a data byte of the first record
        assert!(read_records(&bad).unwrap_err().contains("data CRC"));
        let mut bad = buf.clone();
        bad[0] ^= 1; // its length
        assert!(read_records(&bad).unwrap_err().contains("length CRC"));
        assert!(read_records(&buf[..buf.len() - 1]).unwrap_err().contains("truncated"));
    }
}
