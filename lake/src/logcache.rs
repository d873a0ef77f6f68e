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
//! it.
//!
//! On a remote store (S3, R2) it also keeps **small Parquet files whole**:
//! a data file or checkpoint of at most [`MAX_SMALL_FILE`] bytes is read in
//! one request and every later read of it, whole or ranged, is answered
//! from memory. A Parquet reader asks for a file's footer, then for the
//! columns a filter needs, then for the columns it returns: three or more
//! requests per file per query, each a round trip of tens of milliseconds
//! to R2. The collector writes many small files between compactions, and
//! the scheduler and the dashboard read the same ones again and again. A
//! data file's name is new for every write and never reused; a checkpoint
//! can be written again for the same version, and the listing that comes
//! before every log replay drops a kept one that changed, as for commits.
//! DataFusion's first read of a file is its last 512 KiB (the footer with
//! room to spare), which for a small file is all of it, so that read is
//! the one kept; a file first read in part is read whole at its next read.
//! A local folder keeps nothing but commits (the OS's page cache does it).
//!
//! Everything else (`_last_checkpoint`, larger files, conditional reads,
//! writes, listings) goes to the store unchanged.

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
/// A Parquet file of at most this many bytes is kept whole (remote stores).
pub const MAX_SMALL_FILE: u64 = 1024 * 1024;
/// At most this many bytes of small Parquet files are kept (oldest first).
const MAX_SMALL_BYTES: usize = 64 * 1024 * 1024;
/// Sizes of Parquet files seen, remembered for at most this many files.
const MAX_SIZES: usize = 100_000;

/// An object store that keeps the Delta commit files read through it and,
/// on a remote store, small Parquet files.
pub struct LogCache {
    inner: Arc<dyn ObjectStore>,
    kept: Arc<Mutex<Kept>>,
    /// Small Parquet files, when they are kept (remote stores).
    files: Option<Arc<Mutex<Kept>>>,
}

struct Kept {
    entries: HashMap<Path, (ObjectMeta, Bytes)>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<Path>,
    bytes: usize,
    max_bytes: usize,
    max_entry: usize,
    hits: u64,
    misses: u64,
    /// The sizes of the objects read (small files only: the size decides
    /// whether the next read takes the whole object).
    sizes: HashMap<Path, u64>,
}

impl Default for Kept {
    fn default() -> Kept {
        Kept::bounded(MAX_BYTES, MAX_ENTRY_BYTES)
    }
}

impl Kept {
    fn bounded(max_bytes: usize, max_entry: usize) -> Kept {
        Kept {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_entry,
            hits: 0,
            misses: 0,
            sizes: HashMap::new(),
        }
    }

    fn insert(&mut self, meta: ObjectMeta, bytes: Bytes) {
        if bytes.len() > self.max_entry {
            return;
        }
        let path = meta.location.clone();
        self.remove(&path);
        self.bytes += bytes.len();
        self.entries.insert(path.clone(), (meta, bytes));
        self.order.push_back(path);
        while self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.entries.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }

    fn remove(&mut self, path: &Path) {
        self.sizes.remove(path);
        if let Some((_, b)) = self.entries.remove(path) {
            self.bytes -= b.len();
            self.order.retain(|p| p != path);
        }
    }

    /// A read saw that the object at `path` has `size` bytes.
    fn sized(&mut self, path: &Path, size: u64) {
        if self.sizes.len() >= MAX_SIZES {
            self.sizes.clear();
        }
        self.sizes.insert(path.clone(), size);
    }

    /// A listing saw `meta`: drop a kept copy that is not of that object
    /// (and a size remembered for another one).
    fn listed(&mut self, meta: &ObjectMeta) {
        let stale = self
            .entries
            .get(&meta.location)
            .is_some_and(|(kept, _)| !same_object(kept, meta))
            || self
                .sizes
                .get(&meta.location)
                .is_some_and(|s| *s != meta.size);
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

/// `….parquet`: a Delta data file (a new name for every write) or a
/// checkpoint (which a listing checks, like a commit).
pub fn is_parquet_file(path: &Path) -> bool {
    path.filename().is_some_and(|n| n.ends_with(".parquet"))
}

/// A read with no condition (whole or ranged, not a HEAD): one a kept copy
/// of the object answers.
fn unconditional_read(options: &GetOptions) -> bool {
    let GetOptions {
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range: _,
        version,
        head,
        extensions: _,
    } = options;
    if_match.is_none()
        && if_none_match.is_none()
        && if_modified_since.is_none()
        && if_unmodified_since.is_none()
        && version.is_none()
        && !head
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

/// `range` of a kept object, as the store would answer it (an invalid
/// range is the store's error).
fn answer_range(
    meta: ObjectMeta,
    bytes: &Bytes,
    range: Option<&object_store::GetRange>,
    attributes: object_store::Attributes,
) -> StoreResult<GetResult> {
    let Some(range) = range else {
        return Ok(answer(meta, bytes.clone(), attributes));
    };
    let r = range
        .as_range(bytes.len() as u64)
        .map_err(|e| object_store::Error::Generic {
            store: "LogCache",
            source: Box::new(e),
        })?;
    let part = bytes.slice(r.start as usize..r.end as usize);
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(part) }).boxed()),
        meta,
        range: r,
        attributes,
    })
}

/// `ranges` of a kept object (as the store would refuse one past its end).
fn slices(bytes: &Bytes, ranges: &[Range<u64>]) -> StoreResult<Vec<Bytes>> {
    ranges
        .iter()
        .map(|r| {
            if r.start > r.end || r.end > bytes.len() as u64 {
                return Err(object_store::Error::Generic {
                    store: "LogCache",
                    source: format!(
                        "range {}..{} of an object of {} bytes",
                        r.start,
                        r.end,
                        bytes.len()
                    )
                    .into(),
                });
            }
            Ok(bytes.slice(r.start as usize..r.end as usize))
        })
        .collect()
}

impl LogCache {
    /// Keep the commit files read through `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> LogCache {
        LogCache {
            inner,
            kept: Arc::default(),
            files: None,
        }
    }

    /// Keep small Parquet files whole too (for a remote store).
    pub fn keeping_small_files(mut self) -> LogCache {
        self.files = Some(Arc::new(Mutex::new(Kept::bounded(
            MAX_SMALL_BYTES,
            MAX_SMALL_FILE as usize,
        ))));
        self
    }

    /// Reads answered from memory and reads that went to the store, of
    /// commit files.
    pub fn counts(&self) -> (u64, u64) {
        let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (k.hits, k.misses)
    }

    /// Reads of small Parquet files answered from memory, and the files
    /// read whole from the store to be kept (both 0 when none are kept).
    pub fn file_counts(&self) -> (u64, u64) {
        self.files.as_ref().map_or((0, 0), |f| {
            let k = f.lock().unwrap_or_else(|e| e.into_inner());
            (k.hits, k.misses)
        })
    }

    /// Forget `path` in both caches (it is written, copied over or deleted).
    fn forget(&self, path: &Path) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
        if let Some(f) = &self.files {
            f.lock().unwrap_or_else(|e| e.into_inner()).remove(path);
        }
    }

    /// A kept small file, counted as a hit.
    fn kept_file(&self, files: &Mutex<Kept>, location: &Path) -> Option<(ObjectMeta, Bytes)> {
        let mut k = files.lock().unwrap_or_else(|e| e.into_inner());
        let found = k.entries.get(location).cloned();
        if found.is_some() {
            k.hits += 1;
        }
        found
    }

    /// Whether an earlier read showed `location` to be a small file.
    fn known_small(files: &Mutex<Kept>, location: &Path) -> bool {
        let k = files.lock().unwrap_or_else(|e| e.into_inner());
        k.sizes.get(location).is_some_and(|s| *s <= MAX_SMALL_FILE)
    }

    /// Read the whole object at `location` and keep it.
    async fn read_whole(
        &self,
        files: &Mutex<Kept>,
        location: &Path,
    ) -> StoreResult<(ObjectMeta, Bytes, object_store::Attributes)> {
        let got = self.inner.get_opts(location, GetOptions::default()).await?;
        let (meta, attributes) = (got.meta.clone(), got.attributes.clone());
        let bytes = got.bytes().await?;
        let mut k = files.lock().unwrap_or_else(|e| e.into_inner());
        k.misses += 1;
        k.sized(location, meta.size);
        k.insert(meta.clone(), bytes.clone());
        Ok((meta, bytes, attributes))
    }

    /// A small file's bytes: its kept copy, or the whole file read (and
    /// kept) when an earlier read showed it small; `None` when neither.
    async fn small_file(
        &self,
        files: &Mutex<Kept>,
        location: &Path,
    ) -> Option<StoreResult<(ObjectMeta, Bytes, object_store::Attributes)>> {
        if let Some((meta, bytes)) = self.kept_file(files, location) {
            return Some(Ok((meta, bytes, Default::default())));
        }
        if !Self::known_small(files, location) {
            return None;
        }
        Some(self.read_whole(files, location).await)
    }

    /// `ranges` of a small file, as [`LogCache::small_file`] finds it.
    async fn small_file_ranges(
        &self,
        files: &Mutex<Kept>,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Option<StoreResult<Vec<Bytes>>> {
        let found = self.small_file(files, location).await?;
        Some(found.and_then(|(_, bytes, _)| slices(&bytes, ranges)))
    }

    /// A read of a Parquet file on a store whose small files are kept.
    async fn get_parquet(
        &self,
        files: &Mutex<Kept>,
        location: &Path,
        options: GetOptions,
    ) -> StoreResult<GetResult> {
        if let Some(found) = self.small_file(files, location).await {
            let (meta, bytes, attributes) = found?;
            return answer_range(meta, &bytes, options.range.as_ref(), attributes);
        }
        let got = self.inner.get_opts(location, options).await?;
        let size = got.meta.size;
        let whole = got.range == (0..size) && size <= MAX_SMALL_FILE;
        files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sized(location, size);
        if !whole {
            return Ok(got);
        }
        let (meta, attributes) = (got.meta.clone(), got.attributes.clone());
        let bytes = got.bytes().await?;
        {
            let mut k = files.lock().unwrap_or_else(|e| e.into_inner());
            k.misses += 1;
            k.insert(meta.clone(), bytes.clone());
        }
        Ok(answer(meta, bytes, attributes))
    }

    fn watch(
        &self,
        s: BoxStream<'static, StoreResult<ObjectMeta>>,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let kept = Arc::clone(&self.kept);
        let files = self.files.clone();
        s.inspect(move |item| {
            if let Ok(meta) = item {
                if is_commit_file(&meta.location) {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).listed(meta);
                } else if let Some(f) = files.as_ref().filter(|_| is_parquet_file(&meta.location)) {
                    f.lock().unwrap_or_else(|e| e.into_inner()).listed(meta);
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
        self.forget(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> StoreResult<GetResult> {
        if let Some(files) = &self.files {
            if is_parquet_file(location) && unconditional_read(&options) {
                return self.get_parquet(files, location, options).await;
            }
        }
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
        let Some(files) = self.files.as_ref().filter(|_| is_parquet_file(location)) else {
            return self.inner.get_ranges(location, ranges).await;
        };
        if let Some(answered) = self.small_file_ranges(files, location, ranges).await {
            return answered;
        }
        let known = files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sizes
            .contains_key(location);
        let Some((first, rest)) = ranges.split_first().filter(|_| !known) else {
            return self.inner.get_ranges(location, ranges).await;
        };
        // The first read of a file in this process (DataFusion reads a
        // footer this way): read the first range alone, which tells the
        // file's size (and, when it is all of a small file, is kept); the
        // rest then comes from memory, or from the store as asked.
        let options = GetOptions {
            range: Some(first.clone().into()),
            ..Default::default()
        };
        let head = self
            .get_parquet(files, location, options)
            .await?
            .bytes()
            .await?;
        if rest.is_empty() {
            return Ok(vec![head]);
        }
        if let Some(answered) = self.small_file_ranges(files, location, ranges).await {
            return answered;
        }
        let mut out = Vec::with_capacity(ranges.len());
        out.push(head);
        out.extend(self.inner.get_ranges(location, rest).await?);
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<Path>>,
    ) -> BoxStream<'static, StoreResult<Path>> {
        let kept = Arc::clone(&self.kept);
        let files = self.files.clone();
        self.inner
            .delete_stream(locations)
            .inspect(move |item| {
                if let Ok(p) = item {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
                    if let Some(f) = &files {
                        f.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
                    }
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
        if let Some(f) = &self.files {
            let mut k = f.lock().unwrap_or_else(|e| e.into_inner());
            for meta in listed
                .objects
                .iter()
                .filter(|m| is_parquet_file(&m.location))
            {
                k.listed(meta);
            }
        }
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> StoreResult<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> StoreResult<()> {
        self.forget(from);
        self.forget(to);
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

    fn numbered(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
    }

    #[tokio::test]
    async fn small_parquet_files_are_read_whole_once_on_a_remote_store() {
        let inner = Arc::new(InMemory::new());
        let store = LogCache::new(inner.clone()).keeping_small_files();
        let file = Path::from("lake/t/d=1/part-00000-1.parquet");
        let data = numbered(1000);
        inner.put(&file, data.clone().into()).await.expect("put");

        // A first read of part of it goes to the store as asked (its size
        // is noted); the next one takes the whole file and keeps it.
        let got = store.get_range(&file, 10..20).await.expect("range");
        assert_eq!(got, data.slice(10..20));
        assert_eq!(store.file_counts(), (0, 0));
        let got = store
            .get_ranges(&file, &[0..5, 990..1000])
            .await
            .expect("ranges");
        assert_eq!(got, [data.slice(0..5), data.slice(990..1000)]);
        assert_eq!(store.file_counts(), (0, 1));

        // Gone from the store, it is still answered: from memory, every
        // kind of read, each counted.
        inner.delete(&file).await.expect("delete");
        assert_eq!(
            store.get_range(&file, 500..600).await.expect("range"),
            data.slice(500..600)
        );
        let suffix = store
            .get_opts(
                &file,
                GetOptions {
                    range: Some(object_store::GetRange::Suffix(8)),
                    ..Default::default()
                },
            )
            .await
            .expect("suffix");
        assert_eq!(suffix.range, 992..1000);
        assert_eq!(suffix.meta.size, 1000);
        assert_eq!(suffix.bytes().await.expect("bytes"), data.slice(992..1000));
        let whole = store.get(&file).await.expect("get");
        assert_eq!(whole.bytes().await.expect("bytes"), data);
        assert_eq!(
            store
                .get_ranges(&file, &[1..2, 3..5])
                .await
                .expect("ranges"),
            [data.slice(1..2), data.slice(3..5)]
        );
        assert_eq!(store.file_counts(), (4, 1));
        // A range past the end is an error, as from the store (answered
        // from memory all the same).
        assert!(store.get_range(&file, 1001..1002).await.is_err());
        assert!(store.get_ranges(&file, &[0..1, 5..1001]).await.is_err());
        // A HEAD and a conditional read still ask the store.
        assert!(store.head(&file).await.is_err());

        // A first read that covers the whole file (DataFusion's footer
        // read of a small file) is the one kept.
        let other = Path::from("lake/t/_delta_log/00000000000000000010.checkpoint.parquet");
        inner.put(&other, data.clone().into()).await.expect("put");
        let got = store.get_range(&other, 0..1000).await.expect("range");
        assert_eq!(got, data);
        assert_eq!(store.file_counts(), (6, 2));
        assert_eq!(
            store.get_range(&other, 3..4).await.expect("range"),
            data.slice(3..4)
        );
        assert_eq!(store.file_counts(), (7, 2));

        // The checkpoint is written again for the same version (another
        // size): the listing before the next replay drops the kept copy.
        let again = numbered(1200);
        inner.put(&other, again.clone().into()).await.expect("put");
        let listed: Vec<_> = store
            .list(Some(&Path::from("lake/t/_delta_log")))
            .collect()
            .await;
        assert_eq!(listed.len(), 1);
        assert_eq!(
            store.get_range(&other, 1100..1200).await.expect("range"),
            again.slice(1100..1200)
        );
        // Written through the store: forgotten at once.
        store.put(&other, data.clone().into()).await.expect("put");
        assert_eq!(store.get_range(&other, 0..1000).await.expect("range"), data);
    }

    #[tokio::test]
    #[allow(clippy::single_range_in_vec_init)] // one range is a real read
    async fn a_first_read_by_ranges_learns_the_size_and_keeps_a_whole_file() {
        let inner = Arc::new(InMemory::new());
        let store = LogCache::new(inner.clone()).keeping_small_files();
        let data = numbered(1000);
        // DataFusion's footer read: one range, the last 512 KiB, which is
        // the whole of a small file: kept at once.
        let small = Path::from("lake/t/part-00000-a.parquet");
        inner.put(&small, data.clone().into()).await.expect("put");
        let got = store.get_ranges(&small, &[0..1000]).await.expect("ranges");
        assert_eq!(got, std::slice::from_ref(&data));
        assert_eq!(store.file_counts(), (0, 1));
        inner.delete(&small).await.expect("delete");
        assert_eq!(
            store
                .get_ranges(&small, &[10..20, 30..40])
                .await
                .expect("ranges"),
            [data.slice(10..20), data.slice(30..40)]
        );
        assert_eq!(store.file_counts(), (1, 1));

        // A footer read of the last 8 bytes, then more: the first range
        // tells the size, so the file is read whole for the rest.
        let other = Path::from("lake/t/part-00000-b.parquet");
        inner.put(&other, data.clone().into()).await.expect("put");
        let got = store
            .get_ranges(&other, &[992..1000, 0..4])
            .await
            .expect("ranges");
        assert_eq!(got, [data.slice(992..1000), data.slice(0..4)]);
        assert_eq!(store.file_counts(), (1, 2));
        inner.delete(&other).await.expect("delete");
        assert_eq!(
            store.get_ranges(&other, &[5..6]).await.expect("ranges"),
            [data.slice(5..6)]
        );

        // A large file: its ranges come from the store, as asked.
        let big = Path::from("lake/t/part-00000-c.parquet");
        let big_data = numbered(MAX_SMALL_FILE as usize + 10);
        inner.put(&big, big_data.clone().into()).await.expect("put");
        for _ in 0..2 {
            let got = store
                .get_ranges(&big, &[0..3, 100..200, 1_000_000..1_000_010])
                .await
                .expect("ranges");
            assert_eq!(
                got,
                [
                    big_data.slice(0..3),
                    big_data.slice(100..200),
                    big_data.slice(1_000_000..1_000_010)
                ]
            );
        }
        assert_eq!(store.file_counts(), (2, 2));
    }

    #[tokio::test]
    async fn large_files_and_local_stores_keep_no_parquet() {
        let inner = Arc::new(InMemory::new());
        let remote = LogCache::new(inner.clone()).keeping_small_files();
        let local = LogCache::new(inner.clone());
        let big = Path::from("lake/t/part-00000-big.parquet");
        let small = Path::from("lake/t/part-00000-small.parquet");
        let big_data = numbered(MAX_SMALL_FILE as usize + 1);
        inner.put(&big, big_data.clone().into()).await.expect("put");
        inner.put(&small, numbered(10).into()).await.expect("put");
        for _ in 0..3 {
            let got = remote.get(&big).await.expect("get");
            assert_eq!(got.bytes().await.expect("bytes"), big_data);
            assert_eq!(
                remote.get_range(&big, 7..9).await.expect("range"),
                big_data.slice(7..9)
            );
            local.get(&small).await.expect("get");
            local.get_range(&small, 1..3).await.expect("range");
        }
        assert_eq!(remote.file_counts(), (0, 0));
        assert_eq!(local.file_counts(), (0, 0));
        inner.delete(&big).await.expect("delete");
        inner.delete(&small).await.expect("delete");
        assert!(remote.get_range(&big, 7..9).await.is_err());
        assert!(local.get_range(&small, 1..3).await.is_err());
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
