#!/usr/bin/env python3
"""Control-plane scale measurement with the real binaries (release build).

Starts weft-control-plane with SERVICES services in its files and PROXIES
weft-proxy sidecars in mesh mode (each with its own bootstrap token), has
every sidecar call one shared service (so each holds a scoped snapshot),
then edits the files EDITS times and reports the time from each edit to
every proxy having applied (ACKed) it, the control plane's RSS, and one
proxy's RSS with the SERVICES services in the mesh versus with none.

    python3 tests/bench/mesh_scale.py            # 100 proxies, 1000 services
    PROXIES=20 SERVICES=200 EDITS=5 python3 tests/bench/mesh_scale.py
"""
import json, os, signal, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROXIES = int(os.environ.get("PROXIES", "100"))
SERVICES = int(os.environ.get("SERVICES", "1000"))
EDITS = int(os.environ.get("EDITS", "20"))
BIN = os.path.join(ROOT, "target", "release")
procs = []


def log(msg):
    print(f"[mesh-scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(cmd, marker):
    """Starts cmd (JSON logs on stderr); returns (process, the marker line)."""
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    procs.append(p)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        if marker in line:
            # Keep draining stderr so the process never blocks on a full pipe.
            subprocess.Popen(["cat"], stdin=p.stderr, stdout=subprocess.DEVNULL)
            return p, json.loads(line)
    sys.exit(f"{cmd[0]} did not start")


def get(url, host=None, timeout=10):
    req = urllib.request.Request(url, headers={"host": host} if host else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def services(n, common_port, version):
    docs = [
        f"apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: common}}\n"
        f"spec:\n  endpoints: [{{address: \"127.0.0.1:{common_port}\"}}]\n"
        f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: common}}\n"
        f"spec:\n  parentRefs: [{{kind: Service, name: common}}]\n  rules:\n    - backendRefs: [{{name: common}}]\n"
        f"      timeouts: {{request: {1000 + version}ms}}\n"
    ]
    for i in range(n):
        docs.append(
            f"apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc-{i}}}\n"
            f"spec:\n  endpoints: [{{address: \"127.9.{i // 250}.{i % 250 + 1}:9\"}}]\n"
            f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc-{i}}}\n"
            f"spec:\n  parentRefs: [{{kind: Service, name: svc-{i}}}]\n  rules:\n    - backendRefs: [{{name: svc-{i}}}]\n"
        )
    return "---\n".join(docs)


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def control_plane(work, yaml_text):
    cfg = os.path.join(work, "mesh.yaml")
    write(cfg, yaml_text)
    p, line = start([os.path.join(BIN, "weft-control-plane"), "serve", "--config", cfg,
                     "--ca-dir", os.path.join(work, "ca"), "--listen", "127.0.0.1:0",
                     "--admin", "127.0.0.1:0", "--log-format", "json", "--log-level", "warn,weft_control_plane=info"],
                    "weft-control-plane serving")
    return p, cfg, line["listen"], line["admin"]


def sidecar(work, listen, name):
    token = subprocess.check_output([os.path.join(BIN, "weft-control-plane"), "token", "--ca-dir",
                                     os.path.join(work, "ca"), "--service-account", name], text=True).strip()
    p, line = start([os.path.join(BIN, "weft-proxy"), "run", "--control-plane", f"https://{listen}",
                     "--control-plane-ca", os.path.join(work, "ca", "ca.pem"), "--bootstrap-token", token,
                     "--service-account", name, "--proxy-name", name, "--outbound", "127.0.0.1:0",
                     "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json",
                     "--log-level", "info"], "weft-proxy serving")
    return p, line["outbound"], line["admin"]


def wait_ready(admin):
    for _ in range(600):
        try:
            if get(f"http://{admin}/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"sidecar {admin} never ready")


def proxies(admin):
    return json.loads(get(f"http://{admin}/proxies")[1])


def config_version(admin):
    return json.loads(get(f"http://{admin}/config")[1])["version"]


def all_applied(admin, version, n):
    ps = proxies(admin)
    return len(ps) == n and all(p.get("resources") == version and p.get("acked") == p.get("current") for p in ps)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    log("building release binaries")
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft-proxy", "-p", "weft-control-plane"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="weft-mesh-scale.")
    # The one service every sidecar calls: a tiny HTTP server.
    app = subprocess.Popen([sys.executable, "-c",
                            "import http.server as h\n"
                            "class H(h.BaseHTTPRequestHandler):\n"
                            "  def do_GET(s):\n"
                            "    s.send_response(200); s.send_header('content-length','2'); s.end_headers(); s.wfile.write(b'ok')\n"
                            "  def log_message(s,*a): pass\n"
                            "srv=h.ThreadingHTTPServer(('127.0.0.1',0),H); print(srv.server_address[1],flush=True); srv.serve_forever()"],
                           stdout=subprocess.PIPE, text=True)
    procs.append(app)
    port = int(app.stdout.readline())

    cp, cfg, listen, admin = control_plane(work, services(SERVICES, port, 0))
    log(f"control plane up with {SERVICES} services; starting {PROXIES} sidecars")
    sidecars = [sidecar(work, listen, f"client-{i}") for i in range(PROXIES)]
    for _, outbound, padmin in sidecars:
        wait_ready(padmin)
        status, _ = get(f"http://{outbound}/", host="common")
        if status != 200:
            sys.exit(f"a sidecar could not call common: {status}")
    v = config_version(admin)
    deadline = time.time() + 30
    while not all_applied(admin, v, PROXIES):
        if time.time() > deadline:
            sys.exit("sidecars never converged")
        time.sleep(0.05)
    cp_start = rss_kib(cp.pid)
    log(f"{PROXIES} sidecars connected and converged; control plane RSS {cp_start / 1024:.1f} MiB")

    times = []
    for e in range(1, EDITS + 1):
        old = config_version(admin)
        t0 = time.time()
        write(cfg, services(SERVICES, port, e))
        while True:
            try:
                now = config_version(admin)
                if now != old and all_applied(admin, now, PROXIES):
                    break
            except OSError:
                pass
            if time.time() - t0 > 30:
                sys.exit("an edit never reached every sidecar")
            time.sleep(0.005)
        times.append(time.time() - t0)
    cp_peak = rss_kib(cp.pid)
    time.sleep(3)  # the control plane returns freed memory 2 s after an edit
    cp_rss = rss_kib(cp.pid)
    side_rss = sorted(rss_kib(p.pid) for p, _, _ in sidecars)

    # One sidecar, the same calls, with no other services in the mesh.
    work2 = tempfile.mkdtemp(prefix="weft-mesh-scale-empty.")
    cp2, _, listen2, _ = control_plane(work2, services(0, port, 0))
    p2, out2, admin2 = sidecar(work2, listen2, "client-alone")
    wait_ready(admin2)
    get(f"http://{out2}/", host="common")
    time.sleep(0.5)
    alone = rss_kib(p2.pid)
    crowded = sidecars[0]
    get(f"http://{crowded[1]}/", host="common")

    print()
    print(f"mesh scale ({PROXIES} sidecars, {SERVICES} services, {EDITS} edits; release build, one machine)")
    print(f"  edit -> all {PROXIES} sidecars applied: p50 {pct(times, 0.5) * 1000:.0f} ms, "
          f"p99 {pct(times, 0.99) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"(includes the control plane's 200 ms file poll)")
    print(f"  control plane RSS: {cp_start / 1024:.1f} MiB converged, {cp_peak / 1024:.1f} MiB right after the last edit, "
          f"{cp_rss / 1024:.1f} MiB 3 s later")
    print(f"  sidecar RSS: median {side_rss[len(side_rss) // 2] / 1024:.1f} MiB with {SERVICES} other services "
          f"in the mesh; {alone / 1024:.1f} MiB with none (each calls one service)")


try:
    main()
finally:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except Exception:
            p.kill()
