//! Which libvirt hook invocations matter: the arguments libvirt passes
//! (`OBJECT OPERATION SUB-OPERATION EXTRA`), sorted into what the hook acts on.

/// A hook invocation, as far as migroute cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// `migrate begin`: an incoming migration is about to start on this host.
    IncomingMigration,
    /// `release end`: the domain's QEMU is gone from this host.
    Released,
    /// Anything else (`prepare`, `start`, `started`, `stopped`, `reconnect`, …).
    Ignored,
}

impl HookEvent {
    /// Sorts libvirt's `OPERATION SUB-OPERATION` pair.
    pub fn classify(operation: &str, sub_operation: &str) -> Self {
        match (operation, sub_operation) {
            ("migrate", "begin") => HookEvent::IncomingMigration,
            ("release", "end") => HookEvent::Released,
            _ => HookEvent::Ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_migrate_begin_and_release_end_matter() {
        assert_eq!(
            HookEvent::classify("migrate", "begin"),
            HookEvent::IncomingMigration
        );
        assert_eq!(HookEvent::classify("release", "end"), HookEvent::Released);
        for (op, sub) in [
            ("prepare", "begin"),
            ("start", "begin"),
            ("started", "begin"),
            ("stopped", "end"),
            ("reconnect", "begin"),
            ("migrate", "end"),
            ("release", "begin"),
        ] {
            assert_eq!(
                HookEvent::classify(op, sub),
                HookEvent::Ignored,
                "{op} {sub}"
            );
        }
    }
}
