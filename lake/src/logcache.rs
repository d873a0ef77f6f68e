//! One object store per lake, shared by every table it opens, that keeps
//! the Delta commit files it has read.
//!
//! delta-rs builds a new object store (on S3/R2 a new HTTP client, its
//! connection pool and TLS set-up) for every table it loads, and its log
//! replay reads every commit since the last checkpoint twice: once for the
//! protocol and metadata, once for the files. A command that loads the jobs
//! ledger a few times read each of its commits a dozen times over, one
//! request each (BENCHMARKS.md, "Delta log reads").
//!
//! A commit file (`_delta_log/<20 digits>.json`) is written once, create-only,
//! and never changed, so its bytes can be kept: the store answers a plain
//! read of one it has read before from memory. The one way a commit's
//! content can change under the same name is the table being deleted and
//! made again; every log replay lists the log before it reads commits, and
//! a listing that shows a kept commit with another size, ETag or time drops
//! it. Everything else (data files, checkpoints, `_last_checkpoint`, ranged
//! or conditional reads, writes, listings) goes to the store unchanged.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result as StoreResult,
};

/// At most this many bytes of commit files are kept (oldest dropped first).
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// A commit file larger than this is never kept.
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// An object store that keeps the Delta commit files read through it.
pub struct LogCache {
    inner: Arc<dyn ObjectStore>,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    entries: HashMap<Path, (ObjectMeta, Bytes)>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<Path>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl Kept {
    fn insert(&mut self, meta: ObjectMeta, bytes: Bytes) {
        if bytes.len() > MAX_ENTRY_BYTES {
            return;
        }
        let path = meta.location.clone();
        self.remove(&path);
        self.bytes += bytes.len();
        self.entries.insert(path.clone(), (meta, bytes));
        self.order.push_back(path);
        while self.bytes > MAX_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.entries.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Some((_, b)) = self.entries.remove(path) {
            self.bytes -= b.len();
            self.order.retain(|p| p != path);
        }
    }

    /// A listing saw `meta`: drop a kept copy that is not of that object.
    fn listed(&mut self, meta: &ObjectMeta) {
        let stale = self
            .entries
            .get(&meta.location)
            .is_some_and(|(kept, _)| !same_object(kept, meta));
        if stale {
            self.remove(&meta.location);
        }
    }
}

fn same_object(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.size == b.size
        && a.last_modified == b.last_modified
        && (a.e_tag.is_none() || b.e_tag.is_none() || a.e_tag == b.e_tag)
}

/// `…/_delta_log/<20 digits>.json`: a commit, written once and never changed.
pub fn is_commit_file(path: &Path) -> bool {
    let Some((dir, name)) = path.as_ref().rsplit_once('/') else {
        return false;
    };
    (dir == "_delta_log" || dir.ends_with("/_delta_log"))
        && name.len() == 25
        && name.ends_with(".json")
        && name[..20].bytes().all(|b| b.is_ascii_digit())
}

/// A read of the whole object, with no condition: one a kept copy answers.
fn plain_read(options: &GetOptions) -> bool {
    let GetOptions {
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        version,
        head,
        extensions: _,
    } = options;
    if_match.is_none()
        && if_none_match.is_none()
        && if_modified_since.is_none()
        && if_unmodified_since.is_none()
        && range.is_none()
        && version.is_none()
        && !head
}

fn answer(meta: ObjectMeta, bytes: Bytes, attributes: object_store::Attributes) -> GetResult {
    let len = bytes.len() as u64;
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        meta,
        range: 0..len,
        attributes,
    }
}

impl LogCache {
    /// Keep the commit files read through `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> LogCache {
        LogCache {
            inner,
            kept: Arc::default(),
        }
    }

    /// Reads answered from memory and reads that went to the store, of
    /// commit files.
    pub fn counts(&self) -> (u64, u64) {
        let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (k.hits, k.misses)
    }

    fn watch(
        &self,
        s: BoxStream<'static, StoreResult<ObjectMeta>>,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let kept = Arc::clone(&self.kept);
        s.inspect(move |item| {
            if let Ok(meta) = item {
                if is_commit_file(&meta.location) {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).listed(meta);
                }
            }
        })
        .boxed()
    }
}

impl fmt::Display for LogCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogCache({})", self.inner)
    }
}

impl fmt::Debug for LogCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for LogCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreResult<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> StoreResult<GetResult> {
        if !(is_commit_file(location) && plain_read(&options)) {
            return self.inner.get_opts(location, options).await;
        }
        {
            let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((meta, bytes)) = k.entries.get(location).cloned() {
                k.hits += 1;
                return Ok(answer(meta, bytes, Default::default()));
            }
            k.misses += 1;
        }
        let got = self.inner.get_opts(location, options).await?;
        let (meta, attributes) = (got.meta.clone(), got.attributes.clone());
        let bytes = got.bytes().await?;
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(meta.clone(), bytes.clone());
        Ok(answer(meta, bytes, attributes))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> StoreResult<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<Path>>,
    ) -> BoxStream<'static, StoreResult<Path>> {
        let kept = Arc::clone(&self.kept);
        self.inner
            .delete_stream(locations)
            .inspect(move |item| {
                if let Ok(p) = item {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.watch(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.watch(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> StoreResult<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        {
            let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            for meta in listed
                .objects
                .iter()
                .filter(|m| is_commit_file(&m.location))
            {
                k.listed(meta);
            }
        }
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> StoreResult<()> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> StoreResult<()> {
        {
            let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            k.remove(from);
            k.remove(to);
        }
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    fn commit(n: u64) -> Path {
        Path::from(format!("lake/t/_delta_log/{n:020}.json"))
    }

    #[test]
    fn only_commit_files_are_kept() {
        assert!(is_commit_file(&commit(0)));
        assert!(is_commit_file(&Path::from(
            "_delta_log/00000000000000000012.json"
        )));
        for other in [
            "lake/t/_delta_log/_last_checkpoint",
            "lake/t/_delta_log/00000000000000000010.checkpoint.parquet",
            "lake/t/_delta_log/0000000000000000001.json",
            "lake/t/_delta_log/0000000000000000001a.json",
            "lake/t/_delta_log/00000000000000000001.crc",
            "lake/t/_delta_log/_staged_commits/00000000000000000001.3a0d65cd.json",
            "lake/t/data/00000000000000000001.json",
            "lake/t/part-00000.parquet",
        ] {
            assert!(!is_commit_file(&Path::from(other)), "{other}");
        }
    }

    #[tokio::test]
    async fn a_commit_is_read_once_and_a_remade_one_again() {
        let inner = Arc::new(InMemory::new());
        let store = LogCache::new(inner.clone());
        inner.put(&commit(0), "first".into()).await.expect("put");
        inner
            .put(
                &Path::from("lake/t/_delta_log/_last_checkpoint"),
                "a".into(),
            )
            .await
            .expect("put");
        for _ in 0..3 {
            let got = store.get(&commit(0)).await.expect("get");
            assert_eq!(got.meta.size, 5);
            assert_eq!(got.bytes().await.expect("bytes"), "first");
        }
        assert_eq!(store.counts(), (2, 1));
        // Other files and ranged reads always go to the store.
        for _ in 0..2 {
            store
                .get(&Path::from("lake/t/_delta_log/_last_checkpoint"))
                .await
                .expect("get");
        }
        let ranged = store.get_range(&commit(0), 1..3).await.expect("range");
        assert_eq!(ranged, "ir");
        assert_eq!(store.counts(), (2, 1));

        // The table is deleted and made again: the listing before the next
        // replay shows another object under the name, and it is read anew.
        inner.delete(&commit(0)).await.expect("delete");
        inner.put(&commit(0), "second!".into()).await.expect("put");
        let listed: Vec<_> = store
            .list(Some(&Path::from("lake/t/_delta_log")))
            .collect()
            .await;
        assert_eq!(listed.len(), 2);
        let got = store.get(&commit(0)).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), "second!");
        assert_eq!(store.counts(), (2, 2));
        let got = store.get(&commit(0)).await.expect("get");
        assert_eq!(got.bytes().await.expect("bytes"), "second!");
        assert_eq!(store.counts(), (3, 2));

        // Deleting through the store forgets it.
        store.delete(&commit(0)).await.expect("delete");
        assert!(store.get(&commit(0)).await.is_err());
    }

    #[test]
    fn the_oldest_commits_go_first_past_the_bound() {
        let mut k = Kept::default();
        let big = Bytes::from(vec![0u8; MAX_ENTRY_BYTES]);
        let n = MAX_BYTES / MAX_ENTRY_BYTES + 2;
        for i in 0..n as u64 {
            let meta = ObjectMeta {
                location: commit(i),
                last_modified: chrono::Utc::now(),
                size: big.len() as u64,
                e_tag: None,
                version: None,
            };
            k.insert(meta, big.clone());
        }
        assert!(k.bytes <= MAX_BYTES);
        assert!(!k.entries.contains_key(&commit(0)));
        assert!(k.entries.contains_key(&commit(n as u64 - 1)));
        assert_eq!(k.order.len(), k.entries.len());
    }
}
