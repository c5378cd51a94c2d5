//! Checks of the test harness itself: nginx-rtmp starts, a publisher shows in the stat page,
//! ffprobe reads it, and everything is gone afterwards.

mod support;

use std::time::Duration;

#[test]
fn nginx_publisher_probe_and_stat() {
    let _heavy = relaycast_workers::test_peers::heavy_blocking(&[
        support::Peer::Ffmpeg,
        support::Peer::NginxRtmp,
        support::Peer::Procps,
    ]);
    let nginx = support::Nginx::start();
    let url = nginx.url("harness");
    let publisher = support::Publisher::start(&url);
    let st = nginx
        .wait_publishing("harness", Duration::from_secs(10))
        .expect("stream published");
    assert_eq!(st.video_size, Some((1280, 720)));
    let pubc = st.publisher.clone().expect("publisher");
    let (probe, took) = support::wait_playable(&url, Duration::from_secs(10)).expect("playable");
    eprintln!("probe {probe:?} in {took:?}");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert_eq!((probe.width, probe.height), (1280, 720));
    assert!((probe.fps - 25.0).abs() < 0.01);
    let later = nginx.stream("harness").expect("still there");
    let later_pub = later.publisher.expect("publisher");
    assert_eq!(later_pub.id, pubc.id);
    assert!(later_pub.time_ms > pubc.time_ms);
    assert!(later.bytes_in > st.bytes_in);
    drop(publisher);
    drop(nginx);
    assert!(support::leftover_children().is_empty());
}
