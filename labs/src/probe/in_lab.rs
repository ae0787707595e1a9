//! Running the probe between two nodes of a lab from one process: each side runs on a
//! thread that entered its node's namespace, so scenarios and tests need no subprocess
//! and get typed reports back.

use std::net::SocketAddr;
use std::time::Duration;

use super::report::{TcpReport, UdpReport};
use super::tcp::{self, EchoReport, EchoServer, TcpConfig};
use super::udp::{self, RecvOptions, SendConfig, SendReport};
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::netns;

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
}

impl Lab {
    /// Sends the UDP stream `cfg` from node `from` to `cfg.target`, received in node
    /// `to` on `[::]:<target port>`. Returns both sides' reports.
    pub fn udp_probe(
        &self,
        from: &str,
        to: &str,
        cfg: &SendConfig,
        recv: RecvOptions,
    ) -> Result<(SendReport, UdpReport)> {
        let (from_ns, to_ns) = (self.netns(from)?, self.netns(to)?);
        let probe_err = |node: &str| {
            let node = node.to_string();
            move |e: std::io::Error| LabError::Probe {
                node: node.clone(),
                detail: e.to_string(),
            }
        };
        let port = cfg.target.port();
        let rx = netns::run_in(&to_ns, move || udp::Receiver::bind(any_addr(port)))?
            .map_err(probe_err(to))?;
        let rx_thread = netns::spawn_in(&to_ns, move || rx.run(recv))?;
        let cfg = cfg.clone();
        let sent = netns::run_in(&from_ns, move || udp::send(&cfg))?.map_err(probe_err(from))?;
        let report = rx_thread.join()?.map_err(probe_err(to))?;
        Ok((sent, report))
    }

    /// Runs the TCP probe from node `from` to an echo server in node `to`.
    pub fn tcp_probe(
        &self,
        from: &str,
        to: &str,
        cfg: &TcpConfig,
    ) -> Result<(TcpReport, EchoReport)> {
        let (from_ns, to_ns) = (self.netns(from)?, self.netns(to)?);
        let port = cfg.target.port();
        let server =
            netns::run_in(&to_ns, move || EchoServer::bind(any_addr(port)))?.map_err(|e| {
                LabError::Probe {
                    node: to.to_string(),
                    detail: e.to_string(),
                }
            })?;
        let idle = cfg.stall_limit + Duration::from_secs(1);
        let server_thread =
            netns::spawn_in(&to_ns, move || server.run(Duration::from_secs(10), idle))?;
        let cfg = cfg.clone();
        let client = netns::run_in(&from_ns, move || tcp::run_client(&cfg))?;
        let echo = server_thread.join()?.map_err(|e| LabError::Probe {
            node: to.to_string(),
            detail: e.to_string(),
        })?;
        Ok((client, echo))
    }

    /// Sends the UDP stream `cfg` from node `from` to a reflector at `cfg.target` (the
    /// guest agent's UDP port, see [`crate::guest_agent`]) and counts the reflections
    /// back in `from`: the way to probe a real guest, which cannot run the receiver.
    pub fn udp_echo_probe(
        &self,
        from: &str,
        cfg: &SendConfig,
        recv: RecvOptions,
    ) -> Result<(SendReport, UdpReport)> {
        let from_ns = self.netns(from)?;
        let cfg = cfg.clone();
        netns::run_in(&from_ns, move || udp::echo_probe(&cfg, recv))?.map_err(|e| LabError::Probe {
            node: from.to_string(),
            detail: e.to_string(),
        })
    }

    /// Runs the TCP probe from node `from` against an echo server that is already
    /// listening at `cfg.target` outside the lab's control (the guest agent's TCP port).
    pub fn tcp_probe_remote(&self, from: &str, cfg: &TcpConfig) -> Result<TcpReport> {
        let from_ns = self.netns(from)?;
        let cfg = cfg.clone();
        netns::run_in(&from_ns, move || tcp::run_client(&cfg))
    }
}
