//! The guest's initramfs with the agent (`migroute-guest`) in it: the base busybox
//! initramfs followed by a second gzip'd newc archive holding `bin/migroute-guest` and
//! the shared libraries it links (at the same absolute paths, the dynamic loader
//! included). Linux unpacks concatenated archives in order, and the base `/init` runs
//! `/bin/migroute-guest` when it is there. Appending rather than rebuilding keeps the
//! cached base guest (kernel download, module closure) untouched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use super::GuestImage;
use crate::cmd;
use crate::error::{LabError, Result};

/// Name of the agent's binary.
const AGENT: &str = "migroute-guest";
/// Bump when the archive's layout changes, so cached initrds are rebuilt.
const FORMAT: u32 = 1;

fn io_err(context: &str, path: &Path, e: std::io::Error) -> LabError {
    LabError::Command {
        context: context.to_string(),
        command: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The agent binary to put into the guest: `$MIGROUTE_GUEST_BIN`, else
/// `migroute-guest` beside the running executable or in its parent directory (test
/// binaries live in `target/<profile>/deps`, binaries in `target/<profile>`).
pub fn guest_agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MIGROUTE_GUEST_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LabError::Command {
                context: "find the guest agent".into(),
                command: format!("MIGROUTE_GUEST_BIN={}", p.display()),
                detail: "no such file".into(),
            })
        };
    }
    let exe = std::env::current_exe().map_err(|e| LabError::Command {
        context: "find the guest agent".into(),
        command: "current_exe".into(),
        detail: e.to_string(),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [Some(dir.join(AGENT)), dir.parent().map(|d| d.join(AGENT))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::Command {
            context: "find the guest agent".into(),
            command: format!("{AGENT} beside {}", exe.display()),
            detail: format!(
                "not built: run `cargo build -p migroute-labs --bin {AGENT}` \
                 (or set MIGROUTE_GUEST_BIN)"
            ),
        })
}

/// The absolute paths of the shared objects in `ldd`'s output (the loader included,
/// the vDSO not): `name => /path (addr)` and `/path (addr)` lines.
pub(crate) fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.split_once("=>").map_or(l, |(_, r)| r).trim();
            let path = rest.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// One entry of a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir(String),
    File {
        name: String,
        mode: u32,
        data: Vec<u8>,
    },
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn newc_header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// A newc ("070701") cpio archive of `entries`, with the trailer. Parent directories
/// must come before their contents (see [`with_parents`]).
pub(crate) fn newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match e {
            Entry::Dir(name) => newc_header(&mut out, ino, 0o040755, 2, 0, name),
            Entry::File { name, mode, data } => {
                newc_header(&mut out, ino, 0o100000 | mode, 1, data.len(), name);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    newc_header(&mut out, 0, 0, 1, 0, "TRAILER!!!");
    out
}

/// `files` (relative paths) preceded by every directory above them, once each.
pub(crate) fn with_parents(files: Vec<(String, u32, Vec<u8>)>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (name, mode, data) in files {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if dirs.insert(prefix.clone()) {
                entries.push(Entry::Dir(prefix.clone()));
            }
        }
        entries.push(Entry::File { name, mode, data });
    }
    entries
}

/// Size and mtime of `p`, for the reuse key.
fn stamp(p: &Path) -> Result<String> {
    let m = std::fs::metadata(p).map_err(|e| io_err("guest initrd: stat", p, e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} size={} mtime={mtime}", p.display(), m.len()))
}

/// The agent's bytes, stripped of debug info when `strip` is available (a debug build
/// is tens of MB; the guest has 128 MiB).
fn agent_bytes(agent: &Path, work: &Path) -> Result<Vec<u8>> {
    let stripped = work.join("agent.stripped");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(agent)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let from = if ok { stripped.as_path() } else { agent };
    std::fs::read(from).map_err(|e| io_err("guest initrd: read the agent", from, e))
}

/// Writes `out_dir/initramfs-agent.gz`: `base`'s initramfs followed by an archive of
/// `agent` as `/bin/migroute-guest` and its shared libraries. Reused when the agent
/// binary, its libraries and the base initramfs are unchanged.
pub fn with_agent(base: &GuestImage, agent: &Path, out_dir: &Path) -> Result<GuestImage> {
    std::fs::create_dir_all(out_dir).map_err(|e| io_err("guest initrd: mkdir", out_dir, e))?;
    let out = out_dir.join("initramfs-agent.gz");
    let key_file = out_dir.join("initramfs-agent.key");
    let ldd = Command::new("ldd")
        .arg(agent)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io_err("guest initrd: run ldd on", agent, e))?;
    // ldd fails on a static binary ("not a dynamic executable"): no libraries then.
    let libs = if ldd.status.success() {
        parse_ldd(&String::from_utf8_lossy(&ldd.stdout))
    } else {
        Vec::new()
    };
    let mut key = format!(
        "format={FORMAT}\nagent={}\nbase={}\n",
        stamp(agent)?,
        stamp(&base.initrd)?
    );
    for l in &libs {
        key.push_str(&format!("lib={}\n", stamp(l)?));
    }
    let image = GuestImage {
        kernel: base.kernel.clone(),
        initrd: out.clone(),
    };
    if out.is_file() && std::fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(image);
    }

    let work = out_dir.join(format!(".agent-initrd.{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| io_err("guest initrd: mkdir", &work, e))?;
    let result = (|| {
        let mut files = vec![(format!("bin/{AGENT}"), 0o755, agent_bytes(agent, &work)?)];
        for l in &libs {
            let data = std::fs::read(l).map_err(|e| io_err("guest initrd: read", l, e))?;
            let name = l.to_string_lossy().trim_start_matches('/').to_string();
            files.push((name, 0o755, data));
        }
        let cpio = work.join("agent.cpio");
        std::fs::write(&cpio, newc(&with_parents(files)))
            .map_err(|e| io_err("guest initrd: write", &cpio, e))?;
        let gz = cmd::output(
            "guest initrd: gzip the agent archive",
            Command::new("gzip").args(["-c", "-n"]).arg(&cpio),
        )?
        .stdout;
        let mut bytes = std::fs::read(&base.initrd)
            .map_err(|e| io_err("guest initrd: read the base", &base.initrd, e))?;
        bytes.extend_from_slice(&gz);
        let tmp = work.join("initramfs-agent.gz");
        std::fs::write(&tmp, &bytes).map_err(|e| io_err("guest initrd: write", &tmp, e))?;
        std::fs::rename(&tmp, &out).map_err(|e| io_err("guest initrd: rename to", &out, e))?;
        std::fs::write(&key_file, &key).map_err(|e| io_err("guest initrd: write", &key_file, e))
    })();
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd1b7f1000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0a)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn parents_come_first_once() {
        let e = with_parents(vec![
            ("bin/a".into(), 0o755, vec![1]),
            ("lib/x/b".into(), 0o644, vec![]),
            ("lib/x/c".into(), 0o644, vec![]),
        ]);
        let names: Vec<&str> = e
            .iter()
            .map(|e| match e {
                Entry::Dir(n) => n.as_str(),
                Entry::File { name, .. } => name.as_str(),
            })
            .collect();
        assert_eq!(
            names,
            ["bin", "bin/a", "lib", "lib/x", "lib/x/b", "lib/x/c"]
        );
    }

    /// busybox cpio (the guest's own unpacker's format) lists and extracts it.
    #[test]
    fn newc_archive_is_read_by_cpio() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("SKIPPED: newc check needs busybox");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = newc(&with_parents(vec![
            ("bin/hello".into(), 0o755, b"hi there\n".to_vec()),
            ("lib/odd".into(), 0o644, vec![7u8; 5]),
        ]));
        assert_eq!(archive.len() % 4, 0);
        std::fs::write(dir.path().join("a.cpio"), &archive).unwrap();
        let out = Command::new(busybox)
            .args([
                "sh",
                "-c",
                "cpio -i -d < a.cpio && cat bin/hello && ls -l lib/odd bin/hello",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("hi there\n"), "{text}");
        assert!(text.contains("-rwxr-xr-x"), "{text}");
        assert_eq!(
            std::fs::read(dir.path().join("lib/odd")).unwrap(),
            vec![7u8; 5]
        );
    }
}
