//! The disk writer: a sequence-numbered 4 KiB record every few milliseconds, each
//! written with `O_DIRECT|O_DSYNC` so that a write the guest saw complete is on the
//! (virtual) disk, not in the guest's page cache. `acked` is the last record whose
//! write returned: after a migration, every acknowledged record must be in the image.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::records::{fill_record, slot_offset, BLOCK_SIZE};
use super::GuestStatus;

/// One record's buffer, aligned as O_DIRECT requires.
#[repr(C, align(4096))]
struct Aligned([u8; BLOCK_SIZE as usize]);

/// Shared between the writer thread and the control server.
#[derive(Default)]
struct State {
    /// Last acknowledged record + 1; 0 = none yet.
    acked_plus_one: AtomicU64,
    writing: AtomicBool,
    errors: AtomicU64,
    blocks: AtomicU64,
    stop: AtomicBool,
}

/// The running writer.
pub struct DiskWriter {
    state: Arc<State>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The block device (or, in tests, a regular file of the device's size).
    pub path: PathBuf,
    /// How long to wait for the device to appear (virtio_blk probes after the init).
    pub wait: Duration,
    /// Spacing of records.
    pub interval: Duration,
}

impl DiskWriter {
    /// Starts the writer thread; it waits for the device, then writes until stopped.
    pub fn start(cfg: DiskConfig) -> DiskWriter {
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            if let Err(e) = write_loop(&cfg, &st) {
                st.errors.fetch_add(1, Ordering::SeqCst);
                println!("migroute-guest: disk writer on {}: {e}", cfg.path.display());
            }
            st.writing.store(false, Ordering::SeqCst);
        });
        DiskWriter {
            state,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// The writer's counters as the control port reports them.
    pub fn status(&self) -> GuestStatus {
        let s = &self.state;
        GuestStatus {
            acked: s.acked_plus_one.load(Ordering::SeqCst).checked_sub(1),
            writing: s.writing.load(Ordering::SeqCst),
            errors: s.errors.load(Ordering::SeqCst),
            block_size: BLOCK_SIZE,
            blocks: s.blocks.load(Ordering::SeqCst),
            ok: None,
        }
    }

    /// Stops the writer and waits for the write in progress, so the status that
    /// follows names the last record that will ever be written.
    pub fn stop(&self) -> GuestStatus {
        self.state.stop.store(true, Ordering::SeqCst);
        let handle = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.status()
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `wait` for `path`, returning early if stopped.
fn wait_for(path: &Path, wait: Duration, stop: &AtomicBool) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    while !path.exists() {
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("did not appear within {wait:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let flags = libc::O_DSYNC | if direct { libc::O_DIRECT } else { 0 };
    OpenOptions::new()
        .write(true)
        .read(true)
        .custom_flags(flags)
        .open(path)
}

fn refused_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

fn say_no_direct(path: &Path, e: &io::Error) {
    println!(
        "migroute-guest: O_DIRECT refused on {} ({e}); writing with O_DSYNC only",
        path.display()
    );
}

fn write_loop(cfg: &DiskConfig, st: &State) -> io::Result<()> {
    wait_for(&cfg.path, cfg.wait, &st.stop)?;
    let mut direct = true;
    let mut file = match open(&cfg.path, true) {
        Ok(f) => f,
        Err(e) if refused_direct(&e) => {
            say_no_direct(&cfg.path, &e);
            direct = false;
            open(&cfg.path, false)?
        }
        Err(e) => return Err(e),
    };
    let size = file.seek(SeekFrom::End(0))?;
    let blocks = size / BLOCK_SIZE;
    if blocks == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{size} bytes: smaller than one {BLOCK_SIZE}-byte record"),
        ));
    }
    st.blocks.store(blocks, Ordering::SeqCst);
    st.writing.store(true, Ordering::SeqCst);
    println!(
        "migroute-guest: writing {blocks} records of {BLOCK_SIZE} bytes to {} every {:?}{}",
        cfg.path.display(),
        cfg.interval,
        if direct {
            " (O_DIRECT|O_DSYNC)"
        } else {
            " (O_DSYNC)"
        }
    );
    let mut buf = Box::new(Aligned([0u8; BLOCK_SIZE as usize]));
    let mut n = 0u64;
    let mut next = Instant::now();
    while !st.stop.load(Ordering::SeqCst) {
        fill_record(&mut buf.0, n);
        match file.write_all_at(&buf.0, slot_offset(n, BLOCK_SIZE, blocks)) {
            Ok(()) => {
                st.acked_plus_one.store(n + 1, Ordering::SeqCst);
                n += 1;
            }
            Err(e) if direct && refused_direct(&e) => {
                // Some file systems accept the flag at open and refuse the write.
                say_no_direct(&cfg.path, &e);
                direct = false;
                file = open(&cfg.path, false)?;
                continue;
            }
            Err(e) => {
                // Retried with the same number: acknowledged records stay contiguous.
                let count = st.errors.fetch_add(1, Ordering::SeqCst) + 1;
                if count <= 5 || count.is_multiple_of(1000) {
                    println!("migroute-guest: write of record {n} failed ({count} errors): {e}");
                }
            }
        }
        next += cfg.interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(d) => std::thread::sleep(d),
            // Late (a paused VM): carry on from now rather than burst to catch up.
            None => next = now,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::records::check_records;
    use super::*;

    #[test]
    fn writes_records_to_a_file_and_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 64 * BLOCK_SIZE as usize]).unwrap();
        let w = DiskWriter::start(DiskConfig {
            path: path.clone(),
            wait: Duration::from_secs(1),
            interval: Duration::from_millis(2),
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.status().acked.unwrap_or(0) < 100 {
            assert!(Instant::now() < deadline, "{:?}", w.status());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(w.status().writing);
        let s = w.stop();
        assert!(!s.writing);
        assert_eq!((s.blocks, s.block_size, s.errors), (64, BLOCK_SIZE, 0));
        let acked = s.acked.unwrap();
        // Nothing is written after the stop.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(w.status().acked, Some(acked));
        let c = check_records(&path, acked, BLOCK_SIZE, 64).unwrap();
        assert_eq!((c.checked, c.missing_count), (64, 0), "{c:?}");
    }

    #[test]
    fn a_device_that_never_appears_is_an_error_not_a_hang() {
        let w = DiskWriter::start(DiskConfig {
            path: "/nonexistent/migroute-disk".into(),
            wait: Duration::from_millis(200),
            interval: Duration::from_millis(20),
        });
        std::thread::sleep(Duration::from_millis(500));
        let s = w.status();
        assert_eq!((s.acked, s.writing, s.errors), (None, false, 1));
    }
}
