//! The probe's datagram: a fixed 48-byte header (big-endian), padded to the chosen
//! size. Every packet carries the schedule (start and interval) so that the receiver
//! can date packets it never received, and a run id so that stray packets of an
//! earlier run are ignored.

/// "MRPB": marks a probe datagram.
pub const MAGIC: u32 = 0x4d52_5042;
/// Size of the header; datagrams are at least this long.
pub const HEADER_LEN: usize = 48;

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A numbered data packet.
    Data,
    /// End of the run: `seq` is the number of data packets sent, `send_ns` the send
    /// time of the last one.
    End,
}

/// A decoded probe header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub run_id: u64,
    pub seq: u64,
    /// When this packet was sent (Unix ns).
    pub send_ns: u64,
    /// When packet 0 was scheduled (Unix ns).
    pub start_ns: u64,
    /// Scheduled spacing between packets (ns).
    pub interval_ns: u64,
}

impl Header {
    /// Writes the header into the start of `buf` (which must hold [`HEADER_LEN`]).
    pub fn encode(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        buf[4] = match self.kind {
            Kind::Data => 0,
            Kind::End => 1,
        };
        buf[5..8].fill(0);
        buf[8..16].copy_from_slice(&self.run_id.to_be_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_be_bytes());
        buf[24..32].copy_from_slice(&self.send_ns.to_be_bytes());
        buf[32..40].copy_from_slice(&self.start_ns.to_be_bytes());
        buf[40..48].copy_from_slice(&self.interval_ns.to_be_bytes());
    }

    /// Reads a header; `None` for anything that is not a probe datagram.
    pub fn decode(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN || buf[0..4] != MAGIC.to_be_bytes() {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_be_bytes(buf[r].try_into().expect("8 bytes"));
        let kind = match buf[4] {
            0 => Kind::Data,
            1 => Kind::End,
            _ => return None,
        };
        Some(Header {
            kind,
            run_id: u(8..16),
            seq: u(16..24),
            send_ns: u(24..32),
            start_ns: u(32..40),
            interval_ns: u(40..48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_foreign_data() {
        let h = Header {
            kind: Kind::End,
            run_id: 7,
            seq: 5000,
            send_ns: 1_700_000_000_000_000_000,
            start_ns: 1_699_999_995_000_000_000,
            interval_ns: 1_000_000,
        };
        let mut buf = [0u8; 64];
        h.encode(&mut buf);
        assert_eq!(Header::decode(&buf), Some(h));
        assert_eq!(Header::decode(&buf[..47]), None);
        buf[0] = b'X';
        assert_eq!(Header::decode(&buf), None);
    }
}
