//! The control port: one-word UDP requests, JSON replies. UDP because the host side
//! must reach the guest through whatever the network is doing mid-migration without a
//! connection to lose; the client retries.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::disk::DiskWriter;

/// What the guest's disk writer reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestStatus {
    /// The last record whose write returned (`null` before the first).
    pub acked: Option<u64>,
    /// Whether the writer is running.
    pub writing: bool,
    /// Failed writes (each retried with the same number).
    pub errors: u64,
    /// Bytes per record.
    pub block_size: u64,
    /// Records the device holds; record `n` is at `(n % blocks) * block_size`.
    pub blocks: u64,
    /// `Some(true)` on the reply to `poweroff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// A request on the control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The writer's status.
    Status,
    /// Stop the writer (after its current write), then the status.
    StopWrites,
    /// sync(), reply, power off.
    Poweroff,
}

impl Request {
    /// Parses a datagram: the command word, surrounding white space ignored.
    pub fn parse(datagram: &[u8]) -> Result<Request, String> {
        let word = std::str::from_utf8(datagram)
            .map_err(|_| "request is not UTF-8".to_string())?
            .trim();
        match word {
            "status" => Ok(Request::Status),
            "stop-writes" => Ok(Request::StopWrites),
            "poweroff" => Ok(Request::Poweroff),
            other => Err(format!(
                "unknown request `{other}` (status, stop-writes, poweroff)"
            )),
        }
    }
}

/// What `poweroff` does after replying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// `reboot(RB_POWER_OFF)`: the guest's QEMU exits.
    Halt,
    /// Tell the agent's owner ([`super::Agent::wait`] returns): for runs on a host.
    Exit,
}

/// The control server's loop: answers until `stop` is set.
pub(crate) fn serve(
    sock: UdpSocket,
    disk: Arc<DiskWriter>,
    power: PowerOff,
    exit: Sender<()>,
    stop: Arc<AtomicBool>,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let reply = match Request::parse(&buf[..n]) {
            Ok(Request::Status) => json(&disk.status()),
            Ok(Request::StopWrites) => json(&disk.stop()),
            Ok(Request::Poweroff) => {
                // SAFETY: sync has no preconditions.
                unsafe { libc::sync() };
                let status = GuestStatus {
                    ok: Some(true),
                    ..disk.status()
                };
                let _ = sock.send_to(json(&status).as_bytes(), from);
                match power {
                    PowerOff::Halt => {
                        println!("migroute-guest: powering off");
                        // SAFETY: reboot has no memory preconditions; it needs
                        // CAP_SYS_BOOT and otherwise fails with EPERM.
                        unsafe { libc::reboot(libc::RB_POWER_OFF) };
                        println!(
                            "migroute-guest: power off failed: {}",
                            io::Error::last_os_error()
                        );
                    }
                    PowerOff::Exit => {
                        let _ = exit.send(());
                    }
                }
                continue;
            }
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        };
        let _ = sock.send_to(reply.as_bytes(), from);
    }
}

fn json(s: &GuestStatus) -> String {
    serde_json::to_string(s).expect("GuestStatus serializes")
}

/// Sends `cmd` (`status`, `stop-writes`, `poweroff`) to the agent's control port at
/// `addr` and returns its reply. UDP can be lost (mid-migration especially), so the
/// request is sent up to four times within `timeout`. Every command is idempotent
/// except that a lost reply to `poweroff` is not answered again: the guest is gone.
pub fn control(addr: SocketAddr, cmd: &str, timeout: Duration) -> io::Result<GuestStatus> {
    const ATTEMPTS: u32 = 4;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(addr)?;
    let per_try = (timeout / ATTEMPTS).max(Duration::from_millis(20));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        if let Err(e) = sock.send(cmd.as_bytes()) {
            last_err = Some(e);
        }
        let until = (Instant::now() + per_try).min(deadline);
        while let Some(wait) = until
            .checked_duration_since(Instant::now())
            .filter(|w| !w.is_zero())
        {
            sock.set_read_timeout(Some(wait))?;
            match sock.recv(&mut buf) {
                Ok(n) => return parse_reply(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP unreachable on the connected socket: the agent is not (yet) up.
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
        }
    }
    let why = last_err
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no reply to `{cmd}` from {addr} within {timeout:?}{why}"),
    ))
}

/// A reply: the status, or the agent's `{"error": …}`.
fn parse_reply(datagram: &[u8]) -> io::Result<GuestStatus> {
    let v: serde_json::Value = serde_json::from_slice(datagram)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if let Some(e) = v.get("error") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("guest agent: {e}"),
        ));
    }
    serde_json::from_value(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_white_space_and_unknown_ones_are_refused() {
        assert_eq!(Request::parse(b"status"), Ok(Request::Status));
        assert_eq!(Request::parse(b" stop-writes\n"), Ok(Request::StopWrites));
        assert_eq!(Request::parse(b"poweroff"), Ok(Request::Poweroff));
        assert!(Request::parse(b"reboot").unwrap_err().contains("reboot"));
        assert!(Request::parse(&[0xff]).is_err());
    }

    #[test]
    fn status_json_has_the_documented_shape() {
        let s = GuestStatus {
            acked: None,
            writing: false,
            errors: 0,
            block_size: 4096,
            blocks: 16384,
            ok: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"acked":null,"writing":false,"errors":0,"block_size":4096,"blocks":16384}"#
        );
        let off = parse_reply(br#"{"ok":true,"acked":7,"writing":false}"#).unwrap();
        assert_eq!((off.ok, off.acked), (Some(true), Some(7)));
        let e = parse_reply(br#"{"error":"unknown request"}"#).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn control_without_an_agent_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let e = control(
            silent.local_addr().unwrap(),
            "status",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
