//! Per-tunnel traffic counters, for convergence detection ("has the tunnel gone
//! quiet?"). One `RTM_GETLINK` per poll, answered from the kernel's 64-bit stats
//! without a dump, so polling every 50 ms costs tens of microseconds.

use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handle::NetlinkHandle;
use crate::link;

/// rx/tx packets and bytes of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl Counters {
    /// Counters from a link message (`IFLA_STATS64`, falling back to `IFLA_STATS`).
    pub fn from_link(l: &LinkMessage) -> Self {
        let mut c = Counters::default();
        for a in &l.attributes {
            match a {
                LinkAttribute::Stats64(s) => {
                    return Counters {
                        rx_packets: s.rx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_packets: s.tx_packets,
                        tx_bytes: s.tx_bytes,
                    }
                }
                LinkAttribute::Stats(s) => {
                    c = Counters {
                        rx_packets: s.rx_packets.into(),
                        rx_bytes: s.rx_bytes.into(),
                        tx_packets: s.tx_packets.into(),
                        tx_bytes: s.tx_bytes.into(),
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// Counter growth since `earlier` (saturating: a recreated link restarts at 0).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
        }
    }
}

/// Reads the counters of tunnel `name`.
pub async fn read(handle: &NetlinkHandle, name: &str) -> Result<Counters> {
    let l = link::find(handle, name)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            netns: handle.netns().clone(),
            ifname: name.to_string(),
        })?;
    Ok(Counters::from_link(&l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_saturates() {
        let a = Counters {
            rx_packets: 10,
            rx_bytes: 1000,
            tx_packets: 5,
            tx_bytes: 500,
        };
        let b = Counters {
            rx_packets: 12,
            rx_bytes: 1100,
            tx_packets: 5,
            tx_bytes: 500,
        };
        assert_eq!(b.since(&a).rx_packets, 2);
        assert_eq!(b.since(&a).tx_packets, 0);
        assert_eq!(a.since(&b).rx_packets, 0);
    }
}
