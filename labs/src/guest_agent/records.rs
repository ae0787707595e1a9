//! The disk writer's records and the check of a disk image against them: what the
//! scenario uses to prove that every write the guest saw acknowledged survived the
//! migration (a lost disk write is silent data loss, worse than lost packets).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Size of one record, and the alignment O_DIRECT needs.
pub const BLOCK_SIZE: u64 = 4096;

const PREFIX: &[u8] = b"migroute-seq ";
/// `migroute-seq ` + 16 digits + `\n`.
const RECORD_LEN: usize = PREFIX.len() + 16 + 1;

/// Fills `block` with record `n`: `migroute-seq {n:016}\n`, then zeros.
pub fn fill_record(block: &mut [u8], n: u64) {
    block.fill(0);
    let text = format!("migroute-seq {n:016}\n");
    block[..text.len()].copy_from_slice(text.as_bytes());
}

/// The sequence number of the record in `block`, if it holds one.
pub fn parse_record(block: &[u8]) -> Option<u64> {
    let rec = block.get(..RECORD_LEN)?;
    let digits = rec.strip_prefix(PREFIX)?.strip_suffix(b"\n")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Byte offset of record `n` on a device of `blocks` records of `block_size` bytes.
pub fn slot_offset(n: u64, block_size: u64, blocks: u64) -> u64 {
    (n % blocks.max(1)) * block_size
}

/// What [`check_records`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCheck {
    /// Records looked at: the last `blocks` acknowledged ones (fewer early on).
    pub checked: u64,
    /// The first 20 acknowledged records not found at their slot.
    pub missing: Vec<u64>,
    /// How many were missing in all.
    pub missing_count: u64,
    /// The lowest missing sequence number.
    pub first_missing: Option<u64>,
    /// Slots that already hold a later record of the same slot (a write after the
    /// `acked` the check was given, e.g. a status taken while the writer still ran):
    /// not missing, the record was overwritten as designed.
    pub superseded: u64,
}

impl RecordCheck {
    /// Every acknowledged record checked is there.
    pub fn is_complete(&self) -> bool {
        self.missing_count == 0
    }
}

/// Checks records `max(0, acked+1-blocks) ..= acked` given a reader of the sequence
/// number found in a slot (`None`: no record there). Sans-IO core of
/// [`check_records`].
pub fn check_slots(
    acked: u64,
    blocks: u64,
    mut read_slot: impl FnMut(u64) -> io::Result<Option<u64>>,
) -> io::Result<RecordCheck> {
    let mut check = RecordCheck::default();
    if blocks == 0 {
        return Ok(check);
    }
    let first = (acked + 1).saturating_sub(blocks);
    for seq in first..=acked {
        check.checked += 1;
        match read_slot(seq % blocks)? {
            Some(found) if found == seq => {}
            Some(found) if found > seq && found % blocks == seq % blocks => check.superseded += 1,
            _ => {
                check.missing_count += 1;
                check.first_missing.get_or_insert(seq);
                if check.missing.len() < 20 {
                    check.missing.push(seq);
                }
            }
        }
    }
    Ok(check)
}

/// Reads a RAW disk image (convert a qcow2 with `qemu-img convert -O raw` first) and
/// checks that every record up to `acked` that cannot have been overwritten since —
/// the last `blocks` — is at its slot.
pub fn check_records(
    image: &Path,
    acked: u64,
    block_size: u64,
    blocks: u64,
) -> io::Result<RecordCheck> {
    let file = std::fs::File::open(image)?;
    let mut buf = vec![0u8; block_size.max(RECORD_LEN as u64) as usize];
    check_slots(acked, blocks, |slot| {
        match file.read_exact_at(&mut buf, slot * block_size) {
            Ok(()) => Ok(parse_record(&buf)),
            // An image shorter than the device holds no record there.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_garbage() {
        let mut b = vec![0xffu8; 4096];
        fill_record(&mut b, 42);
        assert_eq!(&b[..RECORD_LEN], b"migroute-seq 0000000000000042\n");
        assert!(b[RECORD_LEN..].iter().all(|&x| x == 0));
        assert_eq!(parse_record(&b), Some(42));
        assert_eq!(parse_record(&[0u8; 4096]), None);
        assert_eq!(parse_record(b"migroute-seq 00000000000000x2\n"), None);
        assert_eq!(parse_record(b"migroute-seq 0"), None);
        assert_eq!(slot_offset(10, 4096, 4), 2 * 4096);
    }

    #[test]
    fn check_finds_missing_and_accepts_superseded_slots() {
        // 8 slots; records 0..=11 written, so slots hold 8..=11 and 4..=7.
        let mut slots: Vec<Option<u64>> = vec![None; 8];
        for n in 0..=11u64 {
            slots[(n % 8) as usize] = Some(n);
        }
        let read = |s: &Vec<Option<u64>>| {
            let s = s.clone();
            move |slot: u64| Ok(s[slot as usize])
        };
        let c = check_slots(11, 8, read(&slots)).unwrap();
        assert_eq!((c.checked, c.missing_count, c.superseded), (8, 0, 0));
        assert!(c.is_complete());
        // Status said 10 while 11 was being written: slot of 3 holds 11.
        let c = check_slots(10, 8, read(&slots)).unwrap();
        assert_eq!((c.checked, c.missing_count, c.superseded), (8, 0, 1));
        // Record 9 lost.
        slots[1] = Some(1);
        let c = check_slots(11, 8, read(&slots)).unwrap();
        assert_eq!(c.missing, vec![9]);
        assert_eq!(c.first_missing, Some(9));
        // Early on fewer than `blocks` records exist.
        let c = check_slots(2, 8, |s| Ok(Some(s))).unwrap();
        assert_eq!((c.checked, c.missing_count), (3, 0));
    }

    #[test]
    fn check_records_reads_a_raw_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let blocks = 16u64;
        let mut image = vec![0u8; (blocks * BLOCK_SIZE) as usize];
        for n in 0..40u64 {
            let off = slot_offset(n, BLOCK_SIZE, blocks) as usize;
            fill_record(&mut image[off..off + BLOCK_SIZE as usize], n);
        }
        std::fs::write(&path, &image).unwrap();
        let c = check_records(&path, 39, BLOCK_SIZE, blocks).unwrap();
        assert_eq!((c.checked, c.missing_count), (16, 0));
        // Claiming more was acknowledged than was written shows the gap.
        let c = check_records(&path, 41, BLOCK_SIZE, blocks).unwrap();
        assert_eq!(c.missing, vec![40, 41]);
        // A truncated image misses the tail slots.
        std::fs::write(&path, &image[..8 * BLOCK_SIZE as usize]).unwrap();
        let c = check_records(&path, 39, BLOCK_SIZE, blocks).unwrap();
        assert_eq!(c.missing_count, 8);
    }
}
