"""A real RTSP server for tests: serves an H.264 MP4 on loopback, looping, via gst-rtsp-server.
Run it with Debian's /usr/bin/python3 (python3-gi lives there, not in the project venv).

    /usr/bin/python3 rtsp_server.py VIDEO.mp4 --port 8554 --path /stream

Prints "ready" once the port is listening. Needs (Debian 12):
    apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good python3-gi
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # after require_version: it picks the versions


def loop_forever(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    """Turn the end of the file into a seek back to its start, so the stream never ends."""
    payloader = media.get_element().get_by_name("pay0")

    def rewind() -> bool:
        # The launch bin sits inside the media's pipeline; seeking the pipeline restarts the file.
        pipeline = media.get_element().get_parent()
        pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        return False  # run once

    def on_event(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.get_event().type == Gst.EventType.EOS:
            # Seeking from inside a streaming thread can deadlock: do it on the main loop.
            GLib.idle_add(rewind)
            return Gst.PadProbeReturn.DROP  # clients never see the end of the stream
        return Gst.PadProbeReturn.OK

    payloader.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="an H.264 MP4 (feedback.scenes.write_video makes one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/stream", help="mount point, e.g. /stream")
    parser.add_argument("--once", action="store_true", help="end the stream at the end of the file")
    args = parser.parse_args()
    if not args.video.is_file():
        parser.error(f"{args.video} is not a file")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # H.264 is sent as stored: no decoding or encoding, so the server costs almost no CPU.
    # config-interval=-1 repeats SPS/PPS with every keyframe so a client joining mid-stream can decode.
    location = str(args.video.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! queue ! rtph264pay name=pay0 pt=96 config-interval=-1 )'
    )
    factory.set_shared(True)  # every client sees the same live stream, as with a camera
    if not args.once:
        factory.connect("media-configure", loop_forever)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:  # 0 is GLib's "no source": the port could not be bound
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1

    main_loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: main_loop.quit() or False)
    print(f"ready rtsp://{args.host}:{args.port}{args.path}", flush=True)
    main_loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
