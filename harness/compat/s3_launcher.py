"""S3 stand-in for the compat Kafka broker's durable storage.

tansu 0.6.0 (built with the `dynostore` feature, as ci/setup pins it) keeps
topics either in its own memory, which a restart loses, or in S3. For
`restart_kafka` the harness runs this: moto's S3 server (pinned in the
compat venv) in its own process, with one bucket, so the broker can be
killed and started again and find its topics, offsets and producer state.
moto keeps the objects in this process's memory; nothing touches AWS.

Usage: python s3_launcher.py --port PORT --bucket NAME --ready-file PATH
The ready file is written once the bucket exists.
"""

import argparse
import pathlib
import signal
import threading

import boto3
from moto.server import ThreadedMotoServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{args.port}",
        aws_access_key_id="chatbench",
        aws_secret_access_key="chatbench",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=args.bucket)
    pathlib.Path(args.ready_file).write_text("ready\n")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
