//! The object store contract suite against [`S3ObjectStore`] on moto's S3 (a fresh bucket per
//! case), plus what only S3 makes a question: a multipart upload read back intact and leaving
//! no upload open, and presigned playback URLs and their expiry.

use std::sync::Arc;
use std::time::Duration;

use relaycast_aws::moto::{unique, MotoServer};
use relaycast_aws::objects::{create_bucket, s3_client, S3ObjectStore, MAX_URL_TTL};
use relaycast_core::ports::contract::{run_object_contract, ObjectFixture};
use relaycast_core::ports::{ManualClock, ObjectStore};
use tokio::io::AsyncReadExt;

/// A store on a new bucket of `server`.
async fn fresh_store(server: &MotoServer) -> S3ObjectStore {
    let settings = server.settings(&unique("objects"));
    let store = S3ObjectStore::open(&settings).await.unwrap();
    create_bucket(&s3_client(&settings).await, &settings.bucket)
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_contract() {
    let server = MotoServer::shared();
    run_object_contract(|| {
        let server = Arc::clone(&server);
        async move {
            let store = fresh_store(&server).await;
            let scratch = tempfile::tempdir().unwrap();
            ObjectFixture {
                objects: Arc::new(store),
                clock: ManualClock::starting_now(),
                scratch: scratch.path().to_path_buf(),
                fetch_urls: true,
                guard: Box::new((server, scratch)),
            }
        }
    })
    .await;
}

/// A file above the part size goes up in parts (5 MiB, 5 MiB and 1 MiB here) and reads back
/// byte for byte, whole and by range; no multipart upload is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_reads_back_intact() {
    let server = MotoServer::shared();
    let store = fresh_store(&server).await.with_part_size(5 * 1024 * 1024);
    let data: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("recording.mp4");
    tokio::fs::write(&src, &data).await.unwrap();
    let meta = store
        .put_file("rec/ns/acc/r1/mp4/big.mp4", &src, "video/mp4")
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);

    let mut reader = store
        .get("rec/ns/acc/r1/mp4/big.mp4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.meta.size, data.len() as u64);
    let mut back = Vec::new();
    reader.body.read_to_end(&mut back).await.unwrap();
    assert!(back == data, "the object differs from the file");

    // Across the first part boundary.
    let boundary = 5 * 1024 * 1024u64;
    let mut range = store
        .get_range("rec/ns/acc/r1/mp4/big.mp4", boundary - 10, Some(20))
        .await
        .unwrap()
        .unwrap();
    let mut bytes = Vec::new();
    range.body.read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes, &data[boundary as usize - 10..boundary as usize + 10]);

    let open = store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());
}

/// A playback URL is a presigned GET that a player fetches without credentials; it says it
/// expires after the `ttl` asked for, at most S3's 7 days. (moto serves presigned URLs without
/// checking their expiry, so the expiry is read from the URL's signed parameters.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_expires_after_its_ttl() {
    let server = MotoServer::shared();
    let store = fresh_store(&server).await;
    store
        .put_bytes(
            "snap/a.jpg",
            bytes::Bytes::from_static(b"jpeg"),
            "image/jpeg",
        )
        .await
        .unwrap();
    let param = |url: &str, name: &str| -> String {
        let query = url.split_once('?').unwrap().1;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {url}"))
            .to_string()
    };
    let url = store
        .playback_url("snap/a.jpg", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        url.starts_with(&format!(
            "{}/{}/snap/a.jpg?",
            server.endpoint(),
            store.bucket()
        )),
        "path-style on an endpoint override: {url}"
    );
    assert_eq!(param(&url, "X-Amz-Expires"), "600");
    assert!(param(&url, "X-Amz-Signature").len() == 64);
    assert!(!param(&url, "X-Amz-Date").is_empty());
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(&got.bytes().await.unwrap()[..], b"jpeg");

    let capped = store
        .playback_url("snap/a.jpg", Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(
        param(&capped, "X-Amz-Expires"),
        MAX_URL_TTL.as_secs().to_string()
    );
}
