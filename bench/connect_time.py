#!/usr/bin/env python3
"""TCP connection setup time: `connect_time.py HOST PORT COUNT` -> JSON on stdout.

Each round opens a TCP connection to HOST:PORT (connect() returns once the handshake is
done), closes it and records how long the connect took. Run it inside a network namespace
(`nsenter --net=...`) to measure that namespace's path, its nftables rules included.
"""
import json
import socket
import statistics
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    times = []
    for i in range(count + 50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        t0 = time.perf_counter()
        s.connect((host, port))
        dt = time.perf_counter() - t0
        s.close()
        if i >= 50:  # warm-up rounds are not counted
            times.append(dt * 1e6)
    times.sort()
    json.dump({
        "count": count,
        "median_us": round(statistics.median(times), 1),
        "mean_us": round(statistics.fmean(times), 1),
        "p90_us": round(times[int(len(times) * 0.90)], 1),
        "p99_us": round(times[int(len(times) * 0.99)], 1),
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
