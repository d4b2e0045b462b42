#!/usr/bin/env python3
"""server_load.py - how the server answers while it works.

Starts `upres serve` on a free loopback port with a temporary data folder,
submits a long job (a photo with realesrgan-x4plus, small tiles), and while
it runs measures with wrk (Debian package `wrk`, installed by
scripts/setup.sh):
  GET /api/v1/health and GET /api/v1/status/{id}: requests/s, p50, p99
Then, on the idle server, the time from POST /upscale returning to the job
being seen as processing (median of 10 small jobs, polling every 2 ms).

usage: bench/server_load.py [PATH/TO/upres] [IMAGE]
Loopback only; every loop is bounded in count and time.
"""
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
import uuid

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
upres = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "build", "upres")
photo = sys.argv[2] if len(sys.argv) > 2 else os.path.join(repo, "samples", "astronaut_128.png")
small = os.path.join(repo, "samples", "astronaut_128.png")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def multipart(fields, file_path):
    boundary = uuid.uuid4().hex
    body = b""
    for k, v in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    with open(file_path, "rb") as f:
        data = f.read()
    name = os.path.basename(file_path)
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def submit(base, path, **fields):
    body, ctype = multipart({k: str(v) for k, v in fields.items()}, path)
    req = urllib.request.Request(base + "/upscale", data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["job_id"]


def status(base, job):
    with urllib.request.urlopen(f"{base}/status/{job}", timeout=10) as r:
        return json.load(r)


def wrk(url):
    out = subprocess.run(["wrk", "-t2", "-c16", "-d5s", "--latency", url], capture_output=True, text=True,
                         timeout=60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return rps, pct(50), pct(99)


def main():
    if not shutil.which("wrk"):
        sys.exit("server_load: wrk is not installed (scripts/setup.sh installs it)")
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    data = tempfile.mkdtemp(prefix="upres-load-")
    server = subprocess.Popen([upres, "serve", "--port", str(port), "--data", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        job = submit(base, photo, scale=4, model_name="realesrgan-x4plus", tile_size=32)
        for _ in range(500):
            if status(base, job)["status"] == "processing":
                break
            time.sleep(0.01)
        print(f"while a job runs ({os.path.basename(photo)}, realesrgan-x4plus, 32-px tiles), wrk -t2 -c16 -d5s:")
        print(f"{'endpoint':28} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        for name, url in (("GET /api/v1/health", base + "/health"), ("GET /api/v1/status/{id}", f"{base}/status/{job}")):
            rps, p50, p99 = wrk(url)
            print(f"{name:28} {rps:10.0f} {p50:9.2f} {p99:9.2f}")
        still = status(base, job)["status"]
        print(f"(the job was {still} when the load ended)")
        urllib.request.urlopen(urllib.request.Request(f"{base}/cancel/{job}", method="POST"), timeout=10)
        for _ in range(1000):
            if status(base, job)["status"] not in ("queued", "processing"):
                break
            time.sleep(0.05)
        waits = []
        for _ in range(10):
            t0 = time.monotonic()
            j = submit(base, small, scale=2, model_name="realesr-animevideov3")
            t1 = time.monotonic()
            seen = None
            for _ in range(2500):
                s = status(base, j)["status"]
                if s != "queued":
                    seen = time.monotonic()
                    break
                time.sleep(0.002)
            if seen:
                waits.append((seen - t1) * 1000)
            for _ in range(500):
                if status(base, j)["status"] not in ("queued", "processing"):
                    break
                time.sleep(0.02)
        print(f"idle server, POST /upscale returned -> job seen processing: median {statistics.median(waits):.1f} ms, "
              f"max {max(waits):.1f} ms over {len(waits)} jobs (status polled every 2 ms)")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
