//! Job leases in the lake, so two schedulers never run one job at once.
//!
//! A job's lease is a sequence of small immutable JSON objects under
//! `<lake>/_leases/<job>/<seq>.json`; the one with the highest sequence is
//! the lease's current state (who holds it, until when, for which schedule
//! slot and attempt, and how that attempt ended). Every change — take,
//! renew, finish — writes the *next* sequence number with a create-only put
//! (`If-None-Match: *` on S3 and R2, create-new on a local folder): of two
//! servers racing for the same change exactly one write lands, and the
//! loser learns it lost. A lease held by a live server is renewed well
//! before it expires; a server that dies leaves it to expire, after which
//! another server takes it over. Old states are deleted as new ones land.
//!
//! Clocks: expiry compares wall clocks of different machines, so the lease
//! time must be much longer than their skew (NTP keeps it well under a
//! second; the default lease is five minutes).

use chrono::{DateTime, Utc};
use crow_lake::object_store::path::Path;
use crow_lake::object_store::{self, ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use crow_lake::Lake;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// States a lease holds kept after a new one lands.
const KEEP: u64 = 8;

/// The state of a job's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseState {
    /// Sequence number (the object's name).
    pub seq: u64,
    /// The job.
    pub job: String,
    /// Who wrote this state (host, process, random id).
    pub holder: String,
    /// `running` while held; `succeeded` or `failed` once the attempt
    /// ended (the lease is then free).
    pub state: String,
    /// The schedule slot (cron time) being run.
    pub slot: DateTime<Utc>,
    /// Attempt number for the slot, from 1.
    pub attempt: i32,
    /// A `running` lease is held until this time unless renewed.
    pub expires_at: DateTime<Utc>,
    /// When this state was written.
    pub written_at: DateTime<Utc>,
    /// Earliest retry of a failed attempt.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Error of a failed attempt.
    #[serde(default)]
    pub error: Option<String>,
}

impl LeaseState {
    /// Whether someone holds the lease at `now`.
    pub fn held(&self, now: DateTime<Utc>) -> bool {
        self.state == "running" && self.expires_at > now
    }
}

/// The leases of one lake.
#[derive(Debug, Clone)]
pub struct Leases {
    store: std::sync::Arc<dyn ObjectStore>,
    root: Path,
}

impl Leases {
    /// The leases under `<lake>/_leases/`.
    pub fn open(lake: &Lake) -> Result<Leases> {
        let url = lake.url_of("_leases/")?;
        let (store, root) = lake.store_for(&url)?;
        Ok(Leases {
            store: std::sync::Arc::from(store),
            root,
        })
    }

    fn dir(&self, job: &str) -> Path {
        self.root.clone().join(job)
    }

    /// Every state sequence number of `job`'s lease, ascending.
    async fn seqs(&self, job: &str) -> Result<Vec<(u64, Path)>> {
        let dir = self.dir(job);
        let mut list = self.store.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(item) = list.next().await {
            let meta = match item {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(crow_lake::Error::from(e).into()),
            };
            let name = meta.location.filename().unwrap_or_default();
            if let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((seq, meta.location));
            }
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    /// The current state of `job`'s lease (None: never taken).
    pub async fn current(&self, job: &str) -> Result<Option<LeaseState>> {
        // A state can be deleted between the listing and the read when a
        // newer one lands; list again then.
        for _ in 0..5 {
            let Some((_, path)) = self.seqs(job).await?.pop() else {
                return Ok(None);
            };
            match self.store.get(&path).await {
                Ok(r) => {
                    let bytes = r.bytes().await.map_err(crow_lake::Error::from)?;
                    let state: LeaseState = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::Corrupt(format!("lease object {path} is not a lease: {e}"))
                    })?;
                    return Ok(Some(state));
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(crow_lake::Error::from(e).into()),
            }
        }
        Err(Error::Conflict(format!(
            "the lease of {job} changed five times while being read"
        )))
    }

    /// Write `state` as sequence `state.seq` if no state with that number
    /// exists. Returns whether this write landed (false: another server
    /// changed the lease first).
    pub async fn write(&self, state: &LeaseState) -> Result<bool> {
        let path = self.dir(&state.job).join(format!("{:020}.json", state.seq));
        let body =
            serde_json::to_vec(state).map_err(|e| Error::Internal(format!("lease state: {e}")))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.store.put_opts(&path, body.into(), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(crow_lake::Error::from(e).into()),
        }
        if state.seq >= KEEP && state.seq.is_multiple_of(KEEP) {
            self.prune(&state.job, state.seq - KEEP).await;
        }
        Ok(true)
    }

    /// Delete states older than `below` (best effort).
    async fn prune(&self, job: &str, below: u64) {
        match self.seqs(job).await {
            Ok(seqs) => {
                for (seq, path) in seqs {
                    if seq < below {
                        if let Err(e) = self.store.delete(&path).await {
                            tracing::debug!(%path, error = %e, "lease: could not delete an old state");
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(job, error = %e, "lease: could not list old states"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[tokio::test]
    async fn create_only_sequence() {
        let dir = tempfile_dir();
        let cfg = crow_schemas::config::LakeConfig {
            uri: dir.display().to_string(),
            ..Default::default()
        };
        let lake = Lake::open(&cfg).await.unwrap();
        let leases = Leases::open(&lake).unwrap();
        assert_eq!(leases.current("billing").await.unwrap(), None);
        let now = Utc::now();
        let mut s = LeaseState {
            seq: 0,
            job: "billing".into(),
            holder: "a".into(),
            state: "running".into(),
            slot: now,
            attempt: 1,
            expires_at: now + Duration::seconds(30),
            written_at: now,
            retry_at: None,
            error: None,
        };
        assert!(leases.write(&s).await.unwrap());
        let b = LeaseState {
            holder: "b".into(),
            ..s.clone()
        };
        assert!(!leases.write(&b).await.unwrap(), "the second writer loses");
        assert_eq!(
            leases.current("billing").await.unwrap().unwrap().holder,
            "a"
        );
        for seq in 1..20 {
            s.seq = seq;
            assert!(leases.write(&s).await.unwrap());
        }
        let cur = leases.current("billing").await.unwrap().unwrap();
        assert_eq!(cur.seq, 19);
        assert!(cur.held(now));
        assert!(!cur.held(now + Duration::seconds(31)));
        let left = leases.seqs("billing").await.unwrap().len();
        assert!(left <= 2 * KEEP as usize, "old states are pruned: {left}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("crow-lease-{}", uuid_like()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn uuid_like() -> String {
        format!("{}-{}", std::process::id(), rand::random::<u64>())
    }
}
