//! What a test that needs the machine (root, tools, daemons, kernel features) checks
//! before it starts, and the convention it follows when something is missing: it
//! prints `SKIPPED: <test> needs a, b, c` and returns, unless `CI` is set in the
//! environment, where it panics with the same text (CI must never skip silently).
//!
//! ```no_run
//! use migroute_labs::preflight::{self, Preflight};
//!
//! if !Preflight::new("scenario_kvm")
//!     .root()
//!     .tools(&["ip", "virsh"])
//!     .package("busybox-static", "/bin/busybox")
//!     .check(preflight::vxlan)
//!     .ready()
//! {
//!     return;
//! }
//! ```
//!
//! Root, tools, files and packages are all looked at, and every missing one is named,
//! in the order they were asked for. The custom checks (probes that need what came
//! before, e.g. root and `ip` to make a VXLAN link) run only when nothing else is
//! missing; each that fails adds what it returned to the list.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The machine as the checks see it: the real one ([`Host::current`]) or, in unit
/// tests, a made-up one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Running with effective uid 0.
    pub root: bool,
    /// The `PATH` tools are searched in.
    pub path: Option<OsString>,
    /// `CI` is set: a missing prerequisite is a failure, not a skip.
    pub ci: bool,
}

impl Host {
    /// This process: its effective uid, `PATH` and `CI`.
    pub fn current() -> Host {
        Host {
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
            path: std::env::var_os("PATH"),
            ci: std::env::var_os("CI").is_some(),
        }
    }

    /// Where `tool` is: an absolute path if it exists, otherwise the first directory
    /// of `PATH` holding it.
    pub fn find(&self, tool: &str) -> Option<PathBuf> {
        let p = Path::new(tool);
        if p.is_absolute() {
            return p.exists().then(|| p.to_path_buf());
        }
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .map(|d| d.join(tool))
            .find(|f| f.exists())
    }
}

/// Where `tool` is on this process's `PATH` (an absolute path: if it exists).
pub fn on_path(tool: &str) -> Option<PathBuf> {
    Host::current().find(tool)
}

/// What [`Preflight`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is missing: the test runs.
    Ready,
    /// Something is missing and `CI` is not set: this line is printed and the test
    /// returns.
    Skip(String),
    /// Something is missing and `CI` is set: the test panics with this text.
    Fail(String),
}

/// The verdict for `test` given what is `missing`: the message is `<test> needs a, b`;
/// printed after `SKIPPED: `, or the panic's text under CI.
pub fn verdict(test: &str, missing: &[String], ci: bool) -> Verdict {
    if missing.is_empty() {
        return Verdict::Ready;
    }
    let why = format!("{test} needs {}", missing.join(", "));
    if ci {
        Verdict::Fail(format!("{why} (CI must have every prerequisite)"))
    } else {
        Verdict::Skip(format!("SKIPPED: {why}"))
    }
}

enum Need {
    Root,
    /// On `PATH` (or, when absolute, a file that exists).
    Tool(String),
    /// A file, named `name` when it is missing (a path or the package providing it).
    File {
        path: PathBuf,
        name: String,
    },
}

type Check<'a> = Box<dyn FnOnce() -> Option<String> + 'a>;

/// The prerequisites of one test; [`Preflight::ready`] decides.
#[must_use = "nothing is checked until `ready` is called"]
pub struct Preflight<'a> {
    test: String,
    host: Host,
    needs: Vec<Need>,
    checks: Vec<Check<'a>>,
}

impl<'a> Preflight<'a> {
    /// The prerequisites of `test` (the name its messages start with) on this machine.
    pub fn new(test: impl Into<String>) -> Self {
        Self::on(test, Host::current())
    }

    /// The same on `host` instead of this machine.
    pub fn on(test: impl Into<String>, host: Host) -> Self {
        Preflight {
            test: test.into(),
            host,
            needs: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Root (effective uid 0), named `root` when missing.
    pub fn root(mut self) -> Self {
        self.needs.push(Need::Root);
        self
    }

    /// Each tool on `PATH`, named as given when missing; an absolute path is a file that
    /// must exist.
    pub fn tools(mut self, tools: &[&str]) -> Self {
        self.needs
            .extend(tools.iter().map(|t| Need::Tool(t.to_string())));
        self
    }

    /// Each file, named by its path when missing.
    pub fn files(mut self, paths: &[&str]) -> Self {
        self.needs.extend(paths.iter().map(|p| Need::File {
            path: PathBuf::from(p),
            name: p.to_string(),
        }));
        self
    }

    /// The file `path` that package `name` installs, named by the package when missing
    /// (`.package("busybox-static", "/bin/busybox")`).
    pub fn package(mut self, name: &str, path: &str) -> Self {
        self.needs.push(Need::File {
            path: PathBuf::from(path),
            name: name.to_string(),
        });
        self
    }

    /// A probe run once nothing else is missing: `Some(what)` names what is missing.
    pub fn check(mut self, probe: impl FnOnce() -> Option<String> + 'a) -> Self {
        self.checks.push(Box::new(probe));
        self
    }

    /// Everything missing, in the order asked for; the checks run only when nothing
    /// else is missing.
    pub fn missing(self) -> Vec<String> {
        self.evaluate().1
    }

    fn evaluate(self) -> (String, Vec<String>, Host) {
        let host = self.host;
        let mut missing: Vec<String> = self
            .needs
            .into_iter()
            .filter_map(|need| match need {
                Need::Root => (!host.root).then(|| "root".to_string()),
                Need::Tool(tool) => host.find(&tool).is_none().then_some(tool),
                Need::File { path, name } => (!path.exists()).then_some(name),
            })
            .collect();
        if missing.is_empty() {
            missing.extend(self.checks.into_iter().filter_map(|probe| probe()));
        }
        (self.test, missing, host)
    }

    /// What to do: run, skip, or fail under CI.
    pub fn verdict(self) -> Verdict {
        let (test, missing, host) = self.evaluate();
        verdict(&test, &missing, host.ci)
    }

    /// `true` when the test can run; otherwise prints `SKIPPED: <test> needs …` and
    /// returns `false`, or panics with that text when `CI` is set.
    pub fn ready(self) -> bool {
        match self.verdict() {
            Verdict::Ready => true,
            Verdict::Skip(line) => {
                eprintln!("{line}");
                false
            }
            Verdict::Fail(why) => panic!("{why}"),
        }
    }
}

/// A check: whether the kernel makes VXLAN links (needs root and `ip`). Probed once
/// per process: tests of one binary run in parallel, and the kernel refuses a second
/// VXLAN with the same VNI and port in one namespace.
pub fn vxlan() -> Option<String> {
    static VXLAN_OK: OnceLock<bool> = OnceLock::new();
    let ok = *VXLAN_OK.get_or_init(|| {
        let probe = format!("mrpf{}", std::process::id());
        let made = Command::new("ip")
            .args([
                "link", "add", &probe, "type", "vxlan", "id", "1", "dstport", "0",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        let _ = Command::new("ip").args(["link", "del", &probe]).output();
        made
    });
    (!ok).then(|| "the kernel's VXLAN".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A host whose `PATH` is one directory holding `tools` (empty files).
    fn fake_host(root: bool, ci: bool, tools: &[&str]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        for t in tools {
            std::fs::write(dir.path().join(t), "").unwrap();
        }
        let host = Host {
            root,
            path: Some(dir.path().as_os_str().to_owned()),
            ci,
        };
        (dir, host)
    }

    #[test]
    fn everything_present_is_ready_and_runs_the_checks() {
        let (dir, host) = fake_host(true, true, &["ip", "virsh"]);
        let file = dir.path().join("busybox");
        std::fs::write(&file, "").unwrap();
        let ran = Cell::new(false);
        let p = Preflight::on("t", host)
            .root()
            .tools(&["ip", "virsh"])
            .package("busybox-static", file.to_str().unwrap())
            .files(&[file.to_str().unwrap()])
            .check(|| {
                ran.set(true);
                None
            });
        assert_eq!(p.verdict(), Verdict::Ready);
        assert!(ran.get());
    }

    #[test]
    fn every_missing_need_is_named_in_order_and_checks_do_not_run() {
        let (_dir, host) = fake_host(false, false, &["ip"]);
        let ran = Cell::new(false);
        let missing = Preflight::on("scenario_kvm", host.clone())
            .tools(&["ip", "virsh"])
            .root()
            .files(&["/nonexistent/migroute-preflight/zebra"])
            .package("busybox-static", "/nonexistent/migroute-preflight/busybox")
            .tools(&["qemu-img"])
            .check(|| {
                ran.set(true);
                Some("never".into())
            })
            .missing();
        assert_eq!(
            missing,
            [
                "virsh",
                "root",
                "/nonexistent/migroute-preflight/zebra",
                "busybox-static",
                "qemu-img"
            ]
        );
        assert!(!ran.get());
    }

    #[test]
    fn a_missing_tool_skips_with_the_test_and_what_is_missing() {
        let (_dir, host) = fake_host(true, false, &["ip"]);
        let p = Preflight::on("lab test", host)
            .root()
            .tools(&["bird", "ip", "gobgpd"]);
        assert_eq!(
            p.verdict(),
            Verdict::Skip("SKIPPED: lab test needs bird, gobgpd".into())
        );
        let (_empty, bare) = fake_host(true, false, &[]);
        assert!(!Preflight::on("lab test", bare).tools(&["bird"]).ready());
    }

    #[test]
    #[should_panic(expected = "lab test needs root, bird (CI must have every prerequisite)")]
    fn under_ci_a_missing_need_panics() {
        let (_dir, host) = fake_host(false, true, &["ip"]);
        let _ = Preflight::on("lab test", host)
            .root()
            .tools(&["ip", "bird"])
            .ready();
    }

    #[test]
    fn failing_checks_are_named_after_each_other() {
        let (_dir, host) = fake_host(true, true, &["ip"]);
        let p = Preflight::on("agent_schemathesis", host)
            .root()
            .tools(&["ip"])
            .check(|| Some("schemathesis".into()))
            .check(|| None)
            .check(|| Some("the kernel's VXLAN".into()));
        assert_eq!(
            p.verdict(),
            Verdict::Fail(
                "agent_schemathesis needs schemathesis, the kernel's VXLAN \
                 (CI must have every prerequisite)"
                    .into()
            )
        );
    }

    #[test]
    fn absolute_tools_are_files_and_path_may_be_unset() {
        let (dir, _) = fake_host(true, false, &["vtysh"]);
        let vtysh = dir.path().join("vtysh");
        let host = Host {
            root: true,
            path: None,
            ci: false,
        };
        assert_eq!(host.find(vtysh.to_str().unwrap()), Some(vtysh.clone()));
        assert_eq!(host.find("vtysh"), None);
        let missing = Preflight::on("t", host)
            .tools(&[
                vtysh.to_str().unwrap(),
                "/nonexistent/migroute-preflight/bgpd",
            ])
            .missing();
        assert_eq!(missing, ["/nonexistent/migroute-preflight/bgpd"]);
    }

    #[test]
    fn verdict_formats() {
        assert_eq!(verdict("t", &[], true), Verdict::Ready);
        let missing = ["root".to_string(), "ip".to_string()];
        assert_eq!(
            verdict("lab CLI test", &missing, false),
            Verdict::Skip("SKIPPED: lab CLI test needs root, ip".into())
        );
        assert_eq!(
            verdict("lab CLI test", &missing, true),
            Verdict::Fail("lab CLI test needs root, ip (CI must have every prerequisite)".into())
        );
    }
}
