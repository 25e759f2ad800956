//! The S3 operations: each translates one request onto the store and the
//! client library, and its answer or error back into S3's terms.
//!
//! Decisions live in the pure modules ([`crate::keys`], [`crate::listing`],
//! [`crate::rules`], [`crate::multipart`]); IO in [`crate::store`]. This
//! module only wires them to s3s's types.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use shoal_client::{ClientError, Stat};
use shoal_core::FsError;

use crate::errors::{Subject, from_client, from_name, from_put};
use crate::keys::{self, UPLOADS_DIR};
use crate::listing::{self, Item, MAX_KEYS_DEFAULT, Pager, Query};
use crate::multipart::{self, CompleteError, PartRef};
use crate::rules::{self, ATTR_UPLOAD_KEY, ByteRange, Conditions, EtagCondition, Verdict};
use crate::store::{ObjectInfo, Store};

/// The S3 service over one cluster.
///
/// Each request runs as the identity its access key maps to (README, S3
/// keys and identities): the gateway's own by default, or a key's own
/// credentials folder, whose client [`Gateway::caller`] picks.
#[derive(Clone)]
pub struct Gateway {
    store: Store,
    /// The stores of keys with credentials of their own, by access key.
    by_key: std::sync::Arc<std::collections::HashMap<String, Store>>,
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn etag_out(e: &str) -> ETag {
    ETag::Strong(e.to_string())
}

fn cond(c: &ETagCondition) -> EtagCondition {
    match c {
        ETagCondition::Any => EtagCondition::Any,
        ETagCondition::ETag(e) => EtagCondition::Etag(e.value().to_string()),
    }
}

fn client_err(subject: Subject) -> impl Fn(ClientError) -> S3Error {
    move |e| from_client(&e, subject)
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Fs(FsError::NotFound { .. } | FsError::NotADirectory { .. }))
}

fn content_md5(v: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = v else { return Ok(None) };
    match rules::base64_decode(v).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        Some(d) => Ok(Some(d)),
        None => Err(s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes")),
    }
}

fn meta_map(m: Option<&Metadata>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()).unwrap_or_default()
}

fn meta_out(xattrs: &BTreeMap<String, Vec<u8>>) -> (Option<String>, Option<Metadata>) {
    let (ct, meta) = rules::metadata_of(xattrs);
    (ct, (!meta.is_empty()).then(|| meta.into_iter().collect()))
}

/// The empty body of a request without one.
fn empty_body() -> futures::stream::Iter<std::vec::IntoIter<Result<bytes::Bytes, std::io::Error>>> {
    futures::stream::iter(Vec::new())
}

impl Gateway {
    pub fn new(store: Store) -> Self {
        Gateway { store, by_key: Default::default() }
    }

    /// The gateway over `store`, where the access keys of `by_key` reach
    /// the cluster through their own stores (their own identities).
    pub fn with_keys(store: Store, by_key: std::collections::HashMap<String, Store>) -> Self {
        Gateway { store, by_key: std::sync::Arc::new(by_key) }
    }

    /// The gateway as `req`'s caller: over its access key's own store, if
    /// that key has one.
    fn caller<T>(&self, req: &S3Request<T>) -> Gateway {
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        match key.and_then(|k| self.by_key.get(k)) {
            Some(store) => Gateway { store: store.clone(), by_key: self.by_key.clone() },
            None => self.clone(),
        }
    }

    /// The bucket's directory, which must exist.
    async fn bucket(&self, bucket: &str) -> S3Result<String> {
        let dir = keys::bucket_path(bucket).map_err(|e| from_name(&e))?;
        match self.store.client.stat(&dir).await {
            Ok(st) if st.is_dir => Ok(dir),
            Ok(_) => Err(s3_error!(NoSuchBucket)),
            Err(e) => Err(from_client(&e, Subject::Bucket)),
        }
    }

    /// The object's path and attributes (with its xattrs); NoSuchKey or NoSuchBucket when absent.
    async fn object(&self, bucket: &str, key: &str) -> S3Result<(String, String, Stat)> {
        let path = keys::object_path(bucket, key).map_err(|e| from_name(&e))?;
        match self.store.client.stat_xattrs(&path).await {
            Ok(st) if !st.is_dir => {
                let dir = keys::bucket_path(bucket).map_err(|e| from_name(&e))?;
                Ok((dir, path, st))
            }
            Ok(_) => Err(s3_error!(NoSuchKey)),
            Err(e) if is_not_found(&e) => {
                self.bucket(bucket).await?;
                Err(s3_error!(NoSuchKey))
            }
            Err(e) => Err(from_client(&e, Subject::Object)),
        }
    }

    /// Writes a body as the object `bucket/key`.
    async fn put_body<S, E>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        len: Option<u64>,
        md5: Option<[u8; 16]>,
        attrs: BTreeMap<String, Vec<u8>>,
    ) -> S3Result<crate::store::Written>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = keys::object_path(bucket, key).map_err(|e| from_name(&e))?;
        let dir = self.bucket(bucket).await?;
        let (tmp, written) = self.store.write_tmp(body, len, md5, attrs, None).await.map_err(|e| from_put(&e))?;
        if let Err(e) = self.store.place(&tmp, &dir, &path).await {
            if matches!(e, ClientError::Fs(FsError::NotFound { .. })) {
                self.bucket(bucket).await?; // NoSuchBucket when it went meanwhile.
            }
            return Err(from_client(&e, Subject::Object));
        }
        Ok(written)
    }

    async fn list(&self, bucket: &str, q: Query) -> S3Result<listing::Page<ObjectInfo>> {
        let dir = self.bucket(bucket).await?;
        let mut pager = Pager::new(q);
        self.store.walk(&dir, &mut pager).await.map_err(client_err(Subject::Bucket))?;
        Ok(pager.finish())
    }

    /// Splits a page into S3's contents and common prefixes.
    fn split(page: listing::Page<ObjectInfo>) -> (Vec<Object>, Vec<CommonPrefix>) {
        let mut contents = Vec::new();
        let mut prefixes = Vec::new();
        for item in page.items {
            match item {
                Item::Object { key, info } => contents.push(Object {
                    key: Some(key),
                    size: Some(info.size as i64),
                    e_tag: Some(etag_out(&info.etag)),
                    last_modified: Some(ts(info.mtime_ms)),
                    storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                    ..Default::default()
                }),
                Item::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
            }
        }
        (contents, prefixes)
    }

    /// The upload's directory and its attributes; NoSuchUpload when absent.
    async fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<(String, Stat)> {
        let dir = multipart::upload_dir(id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let st = match self.store.client.stat_xattrs(&dir).await {
            Ok(st) => st,
            Err(e) if is_not_found(&e) => return Err(s3_error!(NoSuchUpload)),
            Err(e) => return Err(from_client(&e, Subject::Object)),
        };
        if st.xattrs.get(ATTR_UPLOAD_KEY).map(Vec::as_slice) != Some(format!("{bucket}/{key}").as_bytes()) {
            return Err(s3_error!(NoSuchUpload, "no such upload for this key"));
        }
        Ok((dir, st))
    }

    /// Staged parts: number → (etag, size).
    async fn parts(&self, dir: &str) -> S3Result<BTreeMap<i32, (String, u64, u64)>> {
        let entries = self.store.client.list_xattrs(dir).await.map_err(client_err(Subject::Object))?;
        let mut out = BTreeMap::new();
        for e in entries {
            let Some(n) = multipart::part_number(&e.name) else { continue };
            let stamp = rules::stamp(e.stat.inode, e.stat.size, e.stat.mtime_ms);
            if let Some(etag) = rules::stored_etag(&e.stat.xattrs, &stamp) {
                out.insert(n, (etag, e.stat.size, e.stat.mtime_ms));
            }
        }
        Ok(out)
    }

    /// Reads a copy source, checking its conditions: (stat, etag, path).
    async fn copy_source(&self, src: &CopySource, c: Conditions) -> S3Result<(String, Stat, String)> {
        let CopySource::Bucket { bucket, key, .. } = src else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources"));
        };
        self.checked_object(bucket, key, &c, false).await
    }

    /// Opens an object for a GET, with its xattrs, in one meta call; the
    /// answers are those of [`Gateway::object`].
    async fn open_object(&self, bucket: &str, key: &str) -> S3Result<(String, shoal_client::File)> {
        let path = keys::object_path(bucket, key).map_err(|e| from_name(&e))?;
        match self.store.client.open_xattrs(&path).await {
            Ok(f) => Ok((path, f)),
            Err(ClientError::Fs(FsError::IsADirectory { .. })) => Err(s3_error!(NoSuchKey)),
            Err(e) if is_not_found(&e) => {
                self.bucket(bucket).await?;
                Err(s3_error!(NoSuchKey))
            }
            Err(e) => Err(from_client(&e, Subject::Object)),
        }
    }

    /// Looks an object up and checks the request's conditions on it: (path,
    /// stat, ETag). An object that has not changed is 304 for a GET or HEAD
    /// (`not_modified_is_304`), and 412 for a copy source, as S3 answers.
    async fn checked_object(
        &self,
        bucket: &str,
        key: &str,
        c: &Conditions,
        not_modified_is_304: bool,
    ) -> S3Result<(String, Stat, String)> {
        let (_, path, st) = self.object(bucket, key).await?;
        let etag = self.store.etag(&path, &st).await.map_err(client_err(Subject::Object))?;
        match rules::evaluate(c, &etag, (st.mtime_ms / 1000) as i64) {
            Verdict::Proceed => Ok((path, st, etag)),
            Verdict::NotModified if not_modified_is_304 => Err(s3_error!(NotModified)),
            Verdict::NotModified | Verdict::PreconditionFailed => Err(s3_error!(PreconditionFailed)),
        }
    }
}

fn copy_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    modified: Option<&Timestamp>,
    unmodified: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(cond),
        if_none_match: if_none_match.map(cond),
        if_modified_since: modified.map(secs),
        if_unmodified_since: unmodified.map(secs),
    }
}

fn range_of(r: &Range) -> ByteRange {
    match *r {
        Range::Int { first, last } => ByteRange::From { first, last },
        Range::Suffix { length } => ByteRange::Suffix { len: length },
    }
}

/// Parses `bytes=first-last` of UploadPartCopy.
fn copy_range(s: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last");
    let (a, b) = s.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    rules::resolve_range(ByteRange::From { first, last: Some(last) }, size)
        .filter(|r| r.end == last + 1)
        .ok_or_else(|| s3_error!(InvalidRange))
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let g = self.caller(&req);
        let entries = g.store.client.list("/").await.map_err(client_err(Subject::Bucket))?;
        let buckets = entries
            .into_iter()
            .filter(|e| e.stat.is_dir && keys::is_bucket_name(&e.name))
            .map(|e| Bucket { name: Some(e.name), creation_date: Some(ts(e.stat.mtime_ms)), ..Default::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let g = self.caller(&req);
        let dir = keys::bucket_path(&req.input.bucket).map_err(|e| from_name(&e))?;
        g.store.client.mkdir(&dir, false).await.map_err(client_err(Subject::Bucket))?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(dir) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let g = self.caller(&req);
        g.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let g = self.caller(&req);
        g.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let g = self.caller(&req);
        let dir = g.bucket(&req.input.bucket).await?;
        g.store.client.remove(&dir, false).await.map_err(client_err(Subject::Bucket))?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let md5 = content_md5(input.content_md5.as_ref())?;
        let attrs = rules::metadata_attrs(input.content_type.as_deref(), &meta_map(input.metadata.as_ref()));
        let len = input.content_length.map(|l| l.max(0) as u64);
        let w = match input.body {
            Some(body) => g.put_body(&input.bucket, &input.key, body, len, md5, attrs).await?,
            None => g.put_body(&input.bucket, &input.key, empty_body(), len, md5, attrs).await?,
        };
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag_out(&w.etag)), ..Default::default() }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let c = copy_conditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        );
        let (path, file) = g.open_object(&input.bucket, &input.key).await?;
        let st = file.cached_stat().clone();
        let etag = g.store.etag(&path, &st).await.map_err(client_err(Subject::Object))?;
        match rules::evaluate(&c, &etag, (st.mtime_ms / 1000) as i64) {
            Verdict::Proceed => {}
            Verdict::NotModified => return Err(s3_error!(NotModified)),
            Verdict::PreconditionFailed => return Err(s3_error!(PreconditionFailed)),
        }
        let (span, content_range) = match input.range.as_ref() {
            None => (0..st.size, None),
            Some(r) => {
                let span = rules::resolve_range(range_of(r), st.size).ok_or_else(|| {
                    s3_error!(InvalidRange, "the range is not satisfiable for an object of {} bytes", st.size)
                })?;
                let cr = format!("bytes {}-{}/{}", span.start, span.end - 1, st.size);
                (span, Some(cr))
            }
        };
        let (content_type, metadata) = meta_out(&st.xattrs);
        let len = span.end - span.start;
        let body = g.store.stream_file(&path, file, span);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(len as i64),
            content_range,
            content_type,
            metadata,
            e_tag: Some(etag_out(&etag)),
            last_modified: Some(ts(st.mtime_ms)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let c = copy_conditions(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        );
        let (_, st, etag) = g.checked_object(&input.bucket, &input.key, &c, true).await?;
        let (content_type, metadata) = meta_out(&st.xattrs);
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(st.size as i64),
            content_type,
            metadata,
            e_tag: Some(etag_out(&etag)),
            last_modified: Some(ts(st.mtime_ms)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let path = keys::object_path(&input.bucket, &input.key).map_err(|e| from_name(&e))?;
        let dir = g.bucket(&input.bucket).await?;
        g.store.delete(&dir, &path).await.map_err(client_err(Subject::Object))?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let dir = g.bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            let result = match keys::object_path(&input.bucket, &obj.key) {
                Ok(path) => g.store.delete(&dir, &path).await.map_err(|e| from_client(&e, Subject::Object)),
                Err(e) => Err(from_name(&e)),
            };
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(obj.key), ..Default::default() }),
                Err(e) => errors.push(Error {
                    key: Some(obj.key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let c = copy_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        let (src_path, st, etag) = g.copy_source(&input.copy_source, c).await?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let dst_path = keys::object_path(&input.bucket, &input.key).map_err(|e| from_name(&e))?;
        let attrs = if replace {
            rules::metadata_attrs(input.content_type.as_deref(), &meta_map(input.metadata.as_ref()))
        } else {
            st.xattrs
                .iter()
                .filter(|(n, _)| rules::metadata_names(&st.xattrs).contains(n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect()
        };
        if dst_path == src_path {
            if !replace {
                return Err(s3_error!(
                    InvalidRequest,
                    "copying an object onto itself needs a change: use the metadata directive REPLACE"
                ));
            }
            // Only the metadata changes; the bytes and the ETag stay.
            let remove = rules::metadata_names(&st.xattrs);
            g.store.client.set_xattrs(&dst_path, &remove, &attrs).await.map_err(client_err(Subject::Object))?;
            let now = g.store.client.stat(&dst_path).await.map_err(client_err(Subject::Object))?;
            return Ok(S3Response::new(CopyObjectOutput {
                copy_object_result: Some(CopyObjectResult {
                    e_tag: Some(etag_out(&etag)),
                    last_modified: Some(ts(now.mtime_ms)),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        let body = Box::pin(g.store.read_stream(&src_path, st.inode, 0..st.size));
        let w = g.put_body(&input.bucket, &input.key, body, Some(st.size), None, attrs).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag_out(&w.etag)),
                last_modified: Some(ts(SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let max_keys = input.max_keys.map_or(MAX_KEYS_DEFAULT, |m| m.clamp(0, MAX_KEYS_DEFAULT as i32) as usize);
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys,
        };
        let page = g.list(&input.bucket, q).await?;
        let (truncated, next) = (page.truncated, page.next_marker.clone());
        let (contents, prefixes) = Self::split(page);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(truncated),
            next_marker: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let g = self.caller(&req);
        let input = req.input;
        let max_keys = input.max_keys.map_or(MAX_KEYS_DEFAULT, |m| m.clamp(0, MAX_KEYS_DEFAULT as i32) as usize);
        let after = match input.continuation_token.as_deref() {
            Some(t) => Some(
                listing::marker_of(t)
                    .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
            ),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after,
            max_keys,
        };
        let page = g.list(&input.bucket, q).await?;
        let (truncated, next) = (page.truncated, page.next_marker.as_deref().map(listing::token_of));
        let (contents, prefixes) = Self::split(page);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let g = self.caller(&req);
        // Buckets are not versioned: every object is its own only, latest, version "null".
        let input = req.input;
        let max_keys = input.max_keys.map_or(MAX_KEYS_DEFAULT, |m| m.clamp(0, MAX_KEYS_DEFAULT as i32) as usize);
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.key_marker.clone().filter(|m| !m.is_empty()),
            max_keys,
        };
        let page = g.list(&input.bucket, q).await?;
        let (truncated, next) = (page.truncated, page.next_marker.clone());
        let (contents, prefixes) = Self::split(page);
        let versions = contents
            .into_iter()
            .map(|o| ObjectVersion {
                key: o.key,
                size: o.size,
                e_tag: o.e_tag,
                last_modified: o.last_modified,
                is_latest: Some(true),
                version_id: Some("null".into()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            key_marker: input.key_marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(truncated),
            next_key_marker: next,
            next_version_id_marker: truncated.then(|| "null".to_string()),
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        keys::object_path(&input.bucket, &input.key).map_err(|e| from_name(&e))?;
        g.bucket(&input.bucket).await?;
        let id = multipart::new_upload_id();
        let dir = format!("{UPLOADS_DIR}/{id}");
        let client = &g.store.client;
        client.mkdir(&dir, true).await.map_err(client_err(Subject::Object))?;
        let mut attrs = rules::metadata_attrs(input.content_type.as_deref(), &meta_map(input.metadata.as_ref()));
        attrs.insert(ATTR_UPLOAD_KEY.to_string(), format!("{}/{}", input.bucket, input.key).into_bytes());
        if let Err(e) = client.set_xattrs(&dir, &[], &attrs).await {
            let _ = client.remove(&dir, true).await;
            return Err(from_client(&e, Subject::Object));
        }
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        if !(1..=multipart::PART_NUMBER_MAX).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to {}", multipart::PART_NUMBER_MAX));
        }
        let (dir, _) = g.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let md5 = content_md5(input.content_md5.as_ref())?;
        let len = input.content_length.map(|l| l.max(0) as u64);
        let result = match input.body {
            Some(body) => g.store.write_tmp(body, len, md5, BTreeMap::new(), None).await,
            None => g.store.write_tmp(empty_body(), len, md5, BTreeMap::new(), None).await,
        };
        let (tmp, w) = result.map_err(|e| from_put(&e))?;
        g.store.place(&tmp, &dir, &multipart::part_path(&dir, input.part_number)).await.map_err(|e| match e {
            e if is_not_found(&e) => s3_error!(NoSuchUpload),
            e => from_client(&e, Subject::Object),
        })?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag_out(&w.etag)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        if !(1..=multipart::PART_NUMBER_MAX).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to {}", multipart::PART_NUMBER_MAX));
        }
        let (dir, _) = g.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let c = copy_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        let (src_path, st, _) = g.copy_source(&input.copy_source, c).await?;
        let span = match input.copy_source_range.as_deref() {
            Some(r) => copy_range(r, st.size)?,
            None => 0..st.size,
        };
        let len = span.end - span.start;
        let body = Box::pin(g.store.read_stream(&src_path, st.inode, span));
        let (tmp, w) =
            g.store.write_tmp(body, Some(len), None, BTreeMap::new(), None).await.map_err(|e| from_put(&e))?;
        g.store
            .place(&tmp, &dir, &multipart::part_path(&dir, input.part_number))
            .await
            .map_err(client_err(Subject::Object))?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag_out(&w.etag)),
                last_modified: Some(ts(SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let (dir, upload) = g.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let asked: Vec<PartRef> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| PartRef {
                number: p.part_number.unwrap_or(0),
                etag: p.e_tag.map(|e| e.value().to_string()).unwrap_or_default(),
            })
            .collect();
        let staged = g.parts(&dir).await?;
        let sizes: BTreeMap<i32, (String, u64)> = staged.iter().map(|(n, (e, s, _))| (*n, (e.clone(), *s))).collect();
        multipart::check_complete(&asked, &sizes).map_err(|e| match e {
            CompleteError::NoParts => s3_error!(MalformedXML, "a Complete names at least one part"),
            CompleteError::Order => s3_error!(InvalidPartOrder),
            CompleteError::Part { number } => s3_error!(InvalidPart, "part {number} is not staged with that ETag"),
            CompleteError::TooSmall { number, size } => {
                s3_error!(EntityTooSmall, "part {number} is {size} bytes; all but the last must be at least 5 MiB")
            }
        })?;
        let etags: Vec<String> = asked.iter().map(|p| sizes[&p.number].0.clone()).collect();
        let etag = rules::multipart_etag(&etags).ok_or_else(|| s3_error!(InvalidPart))?;
        // The parts, one after another, as one body.
        let total: u64 = asked.iter().map(|p| sizes[&p.number].1).sum();
        let store = g.store.clone();
        let parts: Vec<(String, u64)> =
            asked.iter().map(|p| (multipart::part_path(&dir, p.number), sizes[&p.number].1)).collect();
        let mut streams = Vec::new();
        for (path, size) in parts {
            let st = store.client.stat(&path).await.map_err(client_err(Subject::Object))?;
            streams.push(store.read_stream(&path, st.inode, 0..size));
        }
        let body = Box::pin(futures::stream::iter(streams).flatten());
        let mut attrs: BTreeMap<String, Vec<u8>> = upload
            .xattrs
            .iter()
            .filter(|(n, _)| rules::metadata_names(&upload.xattrs).contains(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        attrs.remove(ATTR_UPLOAD_KEY);
        let path = keys::object_path(&input.bucket, &input.key).map_err(|e| from_name(&e))?;
        let bucket_dir = g.bucket(&input.bucket).await?;
        let (tmp, _) =
            g.store.write_tmp(body, Some(total), None, attrs, Some(etag.clone())).await.map_err(|e| from_put(&e))?;
        g.store.place(&tmp, &bucket_dir, &path).await.map_err(client_err(Subject::Object))?;
        if let Err(e) = g.store.client.remove(&dir, true).await {
            tracing::warn!(%dir, "cannot remove a completed upload's parts (the janitor will): {e}");
        }
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag_out(&etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let (dir, _) = g.upload(&input.upload_id, &input.bucket, &input.key).await?;
        g.store.client.remove(&dir, true).await.map_err(client_err(Subject::Object))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        let (dir, _) = g.upload(&input.upload_id, &input.bucket, &input.key).await?;
        let max = input.max_parts.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let after = input.part_number_marker.unwrap_or(0);
        let staged = g.parts(&dir).await?;
        let mut parts: Vec<Part> = staged
            .range(after + 1..)
            .map(|(n, (etag, size, mtime))| Part {
                part_number: Some(*n),
                e_tag: Some(etag_out(etag)),
                size: Some(*size as i64),
                last_modified: Some(ts(*mtime)),
                ..Default::default()
            })
            .take(max + 1)
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().and_then(|p| p.part_number).filter(|_| truncated);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let g = self.caller(&req);
        let input = req.input;
        g.bucket(&input.bucket).await?;
        let entries = g.store.client.list_xattrs(UPLOADS_DIR).await.map_err(client_err(Subject::Bucket))?;
        let prefix = format!("{}/{}", input.bucket, input.prefix.as_deref().unwrap_or(""));
        let mut uploads: Vec<(String, String, u64)> = entries
            .into_iter()
            .filter_map(|e| {
                let k = String::from_utf8(e.stat.xattrs.get(ATTR_UPLOAD_KEY)?.clone()).ok()?;
                k.starts_with(&prefix).then(|| (k[input.bucket.len() + 1..].to_string(), e.name, e.stat.mtime_ms))
            })
            .collect();
        uploads.sort();
        let max = input.max_uploads.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|(key, id, mtime)| MultipartUpload {
                        key: Some(key),
                        upload_id: Some(id),
                        initiated: Some(ts(mtime)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use s3s::S3ErrorCode;

    use super::*;

    #[test]
    fn copy_ranges() {
        assert_eq!(copy_range("bytes=0-9", 100).unwrap(), 0..10);
        assert_eq!(*copy_range("bytes=90-109", 100).unwrap_err().code(), S3ErrorCode::InvalidRange);
        assert_eq!(*copy_range("bytes=5", 100).unwrap_err().code(), S3ErrorCode::InvalidArgument);
    }
}
