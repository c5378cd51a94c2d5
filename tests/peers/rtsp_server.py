#!/usr/bin/python3
"""A live RTSP test source on 127.0.0.1, for the end-to-end tests of RTSP sources.

    rtsp_server.py PORT PATH [WIDTHxHEIGHT]   serves rtsp://127.0.0.1:PORT/PATH until killed
    rtsp_server.py --check                    exits 0 when everything the server needs is here

The stream is what an IP camera sends: a live test pattern in H.264 (x264, 1 s GOP) and a sine
tone in AAC, 25 fps, one pipeline shared by every client. GStreamer's RTSP server with
Debian's python3-gi (run it with /usr/bin/python3: a pyenv or virtualenv python3 lacks gi).
`scripts/install-deps.sh test` installs it all.
"""
import sys

ELEMENTS = ["videotestsrc", "x264enc", "h264parse", "rtph264pay", "audiotestsrc", "audioconvert",
            "audioresample", "voaacenc", "rtpmp4gpay"]


def load():
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer, GLib
    Gst.init(None)
    return Gst, GstRtspServer, GLib


def check():
    try:
        Gst, _, _ = load()
    except (ImportError, ValueError) as e:
        print(f"GStreamer's RTSP server for {sys.executable} is missing: {e}", file=sys.stderr)
        return 1
    missing = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def serve(port, path, size):
    Gst, GstRtspServer, GLib = load()
    width, height = size.split("x")
    launch = (
        f"( videotestsrc is-live=true pattern=smpte ! video/x-raw,width={width},height={height},framerate=25/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=800 "
        "! video/x-h264,profile=constrained-baseline ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 "
        "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample "
        "! audio/x-raw,rate=44100,channels=2 ! voaacenc bitrate=96000 ! rtpmp4gpay name=pay1 pt=97 )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    # One encoder for every client, like a camera: the relay and a probe see the same stream.
    factory.set_shared(True)
    server.get_mount_points().add_factory("/" + path.lstrip("/"), factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print(f"serving rtsp://127.0.0.1:{port}/{path.lstrip('/')}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "640x360"))
