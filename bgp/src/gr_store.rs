//! The graceful-restart store: our Adj-RIB-Out (the routes we originate) on disk.
//!
//! Written before an UPDATE leaves, so that after a crash the speaker comes back with
//! exactly what peers were told, re-advertises it before End-of-RIB, and the peers'
//! stale routes are refreshed instead of withdrawn (ExaBGP loses API-injected routes
//! here). redb commits are durable (fsynced) when `apply` returns.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::codec::Prefix;
use crate::error::SpeakerError;
use crate::policy::RouteAttrs;

const ROUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("adj_rib_out");

/// File name inside the state directory.
pub const FILE_NAME: &str = "adj-rib-out.redb";

/// The persisted Adj-RIB-Out.
pub struct GrStore {
    db: Database,
    path: PathBuf,
    existed: bool,
}

impl std::fmt::Debug for GrStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrStore").field("path", &self.path).finish()
    }
}

impl GrStore {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path) -> Result<GrStore, SpeakerError> {
        let path = dir.join(FILE_NAME);
        let err = |op: &'static str, reason: String| SpeakerError::Store {
            path: path.clone(),
            op,
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err("create directory", e.to_string()))?;
        let existed = path.exists();
        let db = Database::create(&path).map_err(|e| err("open", e.to_string()))?;
        let tx = db.begin_write().map_err(|e| err("open", e.to_string()))?;
        tx.open_table(ROUTES)
            .map_err(|e| err("open", e.to_string()))?;
        tx.commit().map_err(|e| err("open", e.to_string()))?;
        Ok(GrStore { db, path, existed })
    }

    /// Whether the file was there before this process: we are restarting.
    pub fn existed(&self) -> bool {
        self.existed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl Fn(String) -> SpeakerError + '_ {
        move |reason| SpeakerError::Store {
            path: self.path.clone(),
            op,
            reason,
        }
    }

    /// Every stored route.
    pub fn load(&self) -> Result<Vec<(Prefix, RouteAttrs)>, SpeakerError> {
        let err = self.err("load");
        let tx = self.db.begin_read().map_err(|e| err(e.to_string()))?;
        let t = tx.open_table(ROUTES).map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| err(e.to_string()))? {
            let (k, v) = entry.map_err(|e| err(e.to_string()))?;
            let p: Prefix = k
                .value()
                .parse()
                .map_err(|e| err(format!("bad key: {e}")))?;
            let a: RouteAttrs = serde_json::from_slice(v.value())
                .map_err(|e| err(format!("bad value for {p}: {e}")))?;
            out.push((p, a));
        }
        Ok(out)
    }

    /// Stores announcements (`Some`) and removals (`None`) in one durable transaction.
    pub fn apply(&self, changes: &[(Prefix, Option<RouteAttrs>)]) -> Result<(), SpeakerError> {
        let err = self.err("write");
        let tx = self.db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            let mut t = tx.open_table(ROUTES).map_err(|e| err(e.to_string()))?;
            for (p, a) in changes {
                let key = p.to_string();
                match a {
                    Some(a) => {
                        let v = serde_json::to_vec(a).map_err(|e| err(e.to_string()))?;
                        t.insert(key.as_str(), v.as_slice())
                            .map_err(|e| err(e.to_string()))?;
                    }
                    None => {
                        t.remove(key.as_str()).map_err(|e| err(e.to_string()))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a: Prefix = "203.0.113.7/32".parse().unwrap();
        let b: Prefix = "2001:db8::7/128".parse().unwrap();
        let attrs = RouteAttrs {
            med: Some(10),
            communities: vec![crate::codec::Community::NO_EXPORT],
            ..RouteAttrs::default()
        };
        {
            let s = GrStore::open(dir.path()).unwrap();
            assert!(!s.existed());
            s.apply(&[(a, Some(attrs.clone())), (b, Some(RouteAttrs::default()))])
                .unwrap();
            s.apply(&[(b, None)]).unwrap();
        }
        let s = GrStore::open(dir.path()).unwrap();
        assert!(s.existed());
        assert_eq!(s.load().unwrap(), vec![(a, attrs)]);
    }
}
