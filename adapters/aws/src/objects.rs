//! [`S3ObjectStore`]: the [`ObjectStore`] port on one S3 bucket (the stack's recordings bucket).
//!
//! Objects are stored under their keys as they are. S3 never shows an object before its upload
//! completes, which gives the port's "never visible half-written": a file above the part size
//! goes by multipart upload, read from the file part by part (never whole into memory), and an
//! upload that fails is aborted, so no parts are left behind to pay for. Reads stream the
//! response body. Playback URLs are presigned GETs, which need no credentials of the player and
//! expire with their `ttl` (S3 signs for at most 7 days, so longer ones are cut to that).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use relaycast_core::config::AwsSettings;
use relaycast_core::ports::{
    validate_object_key, Clock, ObjectMeta, ObjectReader, ObjectStore, ObjectStoreError,
    SystemClock,
};

use crate::AwsError;

/// Files above this go by multipart upload, in parts of this size.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's smallest part (but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// The longest a presigned URL is valid (SigV4's limit).
pub const MAX_URL_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The [`ObjectStore`] on one S3 bucket. Cheap to share behind an `Arc`; the client pools its
/// connections.
#[derive(Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    part_size: u64,
}

impl std::fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("bucket", &self.bucket)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// An S3 client on `settings`: path-style addressing (`{endpoint}/{bucket}/{key}`) when an
/// endpoint override is set, since a local endpoint such as moto on 127.0.0.1 has no per-bucket
/// host names.
pub async fn s3_client(settings: &AwsSettings) -> Client {
    s3_client_from(&crate::sdk_config(settings).await, settings)
}

/// [`s3_client`] on an SDK configuration already loaded.
pub fn s3_client_from(sdk: &aws_config::SdkConfig, settings: &AwsSettings) -> Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(settings.endpoint_url.is_some())
        .build();
    Client::from_conf(config)
}

impl S3ObjectStore {
    /// The store on `bucket` through `client`, with the [`DEFAULT_PART_SIZE`].
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// The store on the bucket `settings` name, with a client from [`s3_client`]. Makes no
    /// request: a missing bucket shows at the first operation, named.
    pub async fn open(settings: &AwsSettings) -> Result<Self, AwsError> {
        if settings.bucket.is_empty() {
            return Err(AwsError::Open {
                what: "S3 bucket",
                reason: "no bucket name in the [aws] settings".into(),
            });
        }
        Ok(Self::new(
            s3_client(settings).await,
            settings.bucket.clone(),
        ))
    }

    /// Multipart uploads above `bytes` (at least S3's [`MIN_PART_SIZE`]; smaller is raised to
    /// it), in parts of that size. For tests, so that a multipart upload runs on a small file.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks that the bucket exists and can be reached.
    pub async fn check_bucket(&self) -> Result<(), AwsError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| AwsError::Open {
                what: "S3 bucket",
                reason: match e.as_service_error() {
                    Some(HeadBucketError::NotFound(_)) => format!(
                        "{} does not exist (made by infra/relaycast.yaml)",
                        self.bucket
                    ),
                    _ => format!("{}: {}", self.bucket, DisplayErrorContext(&e)),
                },
            })?;
        Ok(())
    }

    fn backend<E, R>(&self, op: &str, key: &str, e: SdkError<E, R>) -> ObjectStoreError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        ObjectStoreError::Backend(format!(
            "S3 {op} of {}/{key}: {}",
            self.bucket,
            DisplayErrorContext(&e)
        ))
    }

    /// The whole object's metadata, or `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified_ms: millis(out.last_modified()),
            })),
            Err(e) if matches!(e.as_service_error(), Some(HeadObjectError::NotFound(_))) => {
                Ok(None)
            }
            Err(e) => Err(self.backend("HeadObject", key, e)),
        }
    }

    /// The object, or the bytes of `range` (`bytes=a-b`) of it, streamed; `None` when there is
    /// no object. `meta` is the whole object's.
    async fn fetch(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<ObjectReader>, ObjectStoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
        {
            Ok(out) => {
                let size = match out.content_range().and_then(range_total) {
                    Some(total) => total,
                    None => out.content_length().unwrap_or(0).max(0) as u64,
                };
                Ok(Some(ObjectReader {
                    meta: ObjectMeta {
                        key: key.to_string(),
                        size,
                        modified_ms: millis(out.last_modified()),
                    },
                    body: Box::pin(out.body.into_async_read()),
                }))
            }
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => {
                Ok(None)
            }
            // A range starting at or past the end: nothing to read, but the object is there.
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("InvalidRange") => {
                self.nothing_of(key).await
            }
            Err(e) => Err(self.backend("GetObject", key, e)),
        }
    }

    /// An empty read of the object, with its metadata; `None` when there is no object.
    async fn nothing_of(&self, key: &str) -> Result<Option<ObjectReader>, ObjectStoreError> {
        Ok(self.head(key).await?.map(|meta| ObjectReader {
            meta,
            body: Box::pin(tokio::io::empty()),
        }))
    }

    /// Uploads `path` (of `size` bytes) in parts; aborts the upload when any step fails.
    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), ObjectStoreError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| self.backend("CreateMultipartUpload", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(key, path, size, &upload_id).await;
        if result.is_err() {
            // Parts of an upload never completed are invisible but kept (and billed) until
            // aborted.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(bucket = %self.bucket, key, error = %DisplayErrorContext(&e), "cannot abort a failed multipart upload; the bucket's lifecycle rule removes it");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), ObjectStoreError> {
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let len = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| ObjectStoreError::Io(std::io::Error::other(e)))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.backend("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.backend("CompleteMultipartUpload", key, e))?;
        Ok(())
    }
}

/// An S3 time in Unix ms (0 when S3 gave none).
fn millis(t: Option<&DateTime>) -> i64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or(0)
}

/// The total size in a `Content-Range: bytes a-b/total` header.
fn range_total(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.parse().ok()
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        validate_object_key(key)?;
        let size = tokio::fs::metadata(path).await?.len();
        if size > self.part_size {
            self.put_multipart(key, path, size, content_type).await?;
        } else {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| ObjectStoreError::Io(std::io::Error::other(e)))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .content_length(size as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.backend("PutObject", key, e))?;
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            // S3 answers a put without its time; ours is within a second of it.
            modified_ms: SystemClock.now_ms(),
        })
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        validate_object_key(key)?;
        let size = bytes.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.backend("PutObject", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            modified_ms: SystemClock.now_ms(),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectStoreError> {
        validate_object_key(key)?;
        self.fetch(key, None).await
    }

    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ObjectReader>, ObjectStoreError> {
        validate_object_key(key)?;
        // S3 would ignore an empty range and send the whole object.
        if len == Some(0) {
            return self.nothing_of(key).await;
        }
        let range = match len {
            Some(len) => format!("bytes={offset}-{}", offset.saturating_add(len - 1)),
            None => format!("bytes={offset}-"),
        };
        self.fetch(key, Some(range)).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        validate_object_key(key)?;
        // S3 answers a delete of a missing key with success too.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.backend("DeleteObject", key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.backend("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                out.push(ObjectMeta {
                    key: object.key().unwrap_or_default().to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified_ms: millis(object.last_modified()),
                });
            }
        }
        // S3 lists in UTF-8 byte order, which is key order for the port's ASCII keys; sorting
        // keeps the promise whatever a compatible server does.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn playback_url(&self, key: &str, ttl: Duration) -> Result<String, ObjectStoreError> {
        validate_object_key(key)?;
        let ttl = ttl.clamp(Duration::from_secs(1), MAX_URL_TTL);
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| ObjectStoreError::Backend(format!("presigning {key}: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| self.backend("presigned GetObject", key, e))?;
        Ok(request.uri().to_string())
    }
}

/// Makes `bucket` in the client's region (for tests and local development; deployments use the
/// stack's bucket). A bucket that is ours already is fine.
pub async fn create_bucket(client: &Client, bucket: &str) -> Result<(), AwsError> {
    let mut create = client.create_bucket().bucket(bucket);
    // us-east-1 is the one region S3 refuses to be named as a location constraint.
    if let Some(region) = client.config().region().map(|r| r.as_ref().to_string()) {
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
    }
    match create.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().and_then(|s| s.code()) == Some("BucketAlreadyOwnedByYou") =>
        {
            Ok(())
        }
        Err(e) => Err(AwsError::Provision {
            what: "S3 bucket",
            reason: format!("{bucket}: {}", DisplayErrorContext(&e)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_size_comes_from_content_range() {
        assert_eq!(range_total("bytes 0-99/10000"), Some(10_000));
        assert_eq!(range_total("bytes */10000"), Some(10_000));
        assert_eq!(range_total("bytes 0-99/*"), None);
        assert_eq!(range_total("nonsense"), None);
    }
}
