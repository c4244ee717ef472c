#!/usr/bin/env bash
# deploy/compose.yaml for real, on a machine without a Docker engine or an image registry:
# the steps a user takes with Docker, run with Debian's Podman serving the Docker API to
# Debian's docker-compose.
#
#   deploy/compose-test.sh            (as root: it installs packages and runs a rootful engine)
#
#  1. installs podman, runc, the CNI plugins (with dnsname, for container names), debootstrap,
#     docker-compose, ffmpeg; configures the engine in its own folder (runc, cgroupfs, vfs, no
#     default ulimits, CNI configs kept there) without touching /etc/containers;
#  2. makes the base images locally: a minimal Debian 12 (debootstrap, `podman import`) and
#     the same with this machine's Rust toolchain; the public images are used instead when
#     FERROCAST_BUILD_IMAGE / FERROCAST_BASE_IMAGE name them;
#  3. builds ferrocast from deploy/Dockerfile and the front from deploy/front.Dockerfile;
#  4. `docker-compose -f deploy/compose.yaml up --scale edge=3` through `podman system service`;
#  5. publishes an RTMP test stream (ffmpeg) to the origin container, plays it through the
#     front and through each edge (LL-HLS playlist, blocking reload, parts 200 and
#     byte-identical everywhere), with viewers on every edge;
#  6. checks the origin counts every edge (ferrocast_edges_reporting, /api/streams per edge),
#     scales to 1 edge and back to 3, checking the count and playback each time;
#  7. tears everything down and checks nothing of the project is left.
#
# Exit status 0 only when every step held; the last line is a one-line summary. Exit status 77
# (skipped) only when the engine cannot start a container on this machine at all. Images and the
# engine's storage stay in FERROCAST_COMPOSE_WORK (default /var/tmp/ferrocast-compose-test)
# so a second run reuses them (and the build's cargo cache); delete it to start clean.
set -euo pipefail
cd "$(dirname "$0")/.."

work="${FERROCAST_COMPOSE_WORK:-/var/tmp/ferrocast-compose-test}"
project=fctest
key="change-me-to-a-long-random-secret"   # deploy/origin.compose.toml's stream "main"
admin="change-me-admin-token"
t_start=$(date +%s)
summary=()
pub_pid=""
svc_pid=""

log() { echo "[compose-test $(date +%H:%M:%S)] $*"; }
fail() {
  log "FAILED: $*"
  local joined
  joined=$(printf '%s; ' "${summary[@]}")
  echo "compose-test: FAIL — $* (${joined%; })"
  exit 1
}
since() { echo $(( $(date +%s) - $1 )); }

if [ "$(id -u)" -ne 0 ]; then
  echo "compose-test: needs root (a rootful container engine, packages)" >&2
  echo "compose-test: FAIL — not root"
  exit 1
fi

# --- 1. the engine ----------------------------------------------------------------------------
need=()
for p in podman runc debootstrap docker-compose ffmpeg curl python3; do
  command -v "$p" >/dev/null 2>&1 || need+=("$p")
done
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$work/cni" "$work/run"
cat > "$work/containers.conf" <<EOF
[containers]
# The default ulimits make container init fail here (setrlimit: Operation not permitted).
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "cni"
network_config_dir = "$work/cni"
EOF
cat > "$work/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$work/run"
graphroot = "$work/storage"
EOF
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
sock="$work/podman.sock"
export DOCKER_HOST="unix://$sock"
compose=(docker-compose -p "$project" -f deploy/compose.yaml)

cleanup() {
  set +e
  [ -n "$pub_pid" ] && kill "$pub_pid" 2>/dev/null
  if [ -S "$sock" ]; then
    "${compose[@]}" down --remove-orphans -t 5 >/dev/null 2>&1
  fi
  podman ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r podman rm -f >/dev/null 2>&1
  [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
  rm -f "$sock"
}
trap cleanup EXIT

podman system service --time=0 "unix://$sock" >"$work/service.log" 2>&1 &
svc_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
[ -S "$sock" ] || fail "podman system service did not start ($work/service.log)"
docker-compose version --short >/dev/null || fail "docker-compose does not run"
curl -fsS --unix-socket "$sock" http://d/version >/dev/null || fail "the Docker API does not answer"
log "engine: $(podman --version), $(docker-compose version --short 2>/dev/null | head -1) via the Docker API"

# --- 2. base images ---------------------------------------------------------------------------
base="${FERROCAST_BASE_IMAGE:-}"
build_image="${FERROCAST_BUILD_IMAGE:-}"
t=$(date +%s)
if [ -z "$base" ]; then
  base=localhost/ferrocast-base:bookworm
  if ! podman image exists "$base"; then
    log "making $base (debootstrap --variant=minbase bookworm)"
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      fail "debootstrap ($work/debootstrap.log)"
    tar -C "$work/rootfs" -c . | podman import -q - "$base" >/dev/null
    rm -rf "$work/rootfs"
  fi
fi
if [ -z "$build_image" ]; then
  build_image=localhost/ferrocast-rust:bookworm
  sysroot=$(rustc --print sysroot)
  # A machine behind a TLS-inspecting proxy trusts extra CAs (Debian keeps them in
  # /usr/local/share/ca-certificates): the build image gets them too, or cargo cannot reach
  # crates.io from inside the build. The build stage's ca-certificates install adds them.
  cas=(/usr/local/share/ca-certificates/*.crt)
  [ -e "${cas[0]}" ] || cas=()
  stamp="$(rustc --version) $(cat "${cas[@]}" /dev/null | sha256sum | cut -c1-12)"
  if [ "$(podman image inspect -f '{{index .Labels "rustc"}}' "$build_image" 2>/dev/null)" != "$stamp" ]; then
    log "making $build_image ($stamp from this machine, on $base)"
    ctx="$work/toolchain"
    rm -rf "$ctx" && mkdir -p "$ctx"
    for d in bin lib libexec; do
      [ -d "$sysroot/$d" ] && { cp -al "$sysroot/$d" "$ctx/$d" 2>/dev/null || cp -a "$sysroot/$d" "$ctx/$d"; }
    done
    mkdir -p "$ctx/libexec" "$ctx/ca"
    [ "${#cas[@]}" -gt 0 ] && cp "${cas[@]}" "$ctx/ca/"
    cat > "$ctx/Dockerfile" <<EOF
FROM $base
COPY bin /usr/local/rust/bin
COPY lib /usr/local/rust/lib
COPY libexec /usr/local/rust/libexec
COPY ca /usr/local/share/ca-certificates
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
LABEL rustc="$stamp"
EOF
    podman build -q -t "$build_image" "$ctx" >/dev/null || fail "building $build_image"
    rm -rf "$ctx"
  fi
fi
summary+=("base images $(since "$t")s")
# A machine whose kernel or sandbox does not let a rootful engine start containers at all
# (no namespaces, no mounts) cannot run this: exit 77, "skipped", with the engine's reason.
# Anything that fails after this point fails the run.
if ! probe=$(podman run --rm --network none "$base" true 2>&1); then
  log "podman cannot start a container here: $probe"
  echo "compose-test: SKIPPED — this machine cannot run containers ($(echo "$probe" | tail -1))"
  exit 77
fi

# --- 3. images from deploy/ -------------------------------------------------------------------
export FERROCAST_IMAGE=localhost/ferrocast:latest FERROCAST_FRONT_IMAGE=localhost/ferrocast-front:latest
args=(--build-arg "BUILD_IMAGE=$build_image" --build-arg "BASE_IMAGE=$base")
t=$(date +%s)
log "building $FERROCAST_IMAGE from deploy/Dockerfile (a release build of ferrocast)"
podman build "${args[@]}" -f deploy/Dockerfile -t "$FERROCAST_IMAGE" . >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; fail "building deploy/Dockerfile ($work/build.log)"; }
build_s=$(since "$t")
t=$(date +%s)
podman build "${args[@]}" -f deploy/front.Dockerfile -t "$FERROCAST_FRONT_IMAGE" . >"$work/build-front.log" 2>&1 ||
  { tail -30 "$work/build-front.log"; fail "building deploy/front.Dockerfile"; }
front_s=$(since "$t")
size=$(podman image inspect -f '{{.Size}}' "$FERROCAST_IMAGE")
log "built in ${build_s}s (front ${front_s}s); ferrocast image $((size / 1048576)) MiB"
summary+=("build ${build_s}s + front ${front_s}s, image $((size / 1048576)) MiB")
podman run --rm "$FERROCAST_IMAGE" --version >/dev/null || fail "the image's ferrocast does not run"

# --- 4. up --scale edge=3 ---------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export FERROCAST_RTMP_PORT=$(free_port) FERROCAST_RTMPS_PORT=$(free_port) FERROCAST_SRT_PORT=$(free_port)
export FERROCAST_ORIGIN_PORT=$(free_port) FERROCAST_FRONT_PORT=$(free_port)
origin="127.0.0.1:$FERROCAST_ORIGIN_PORT"
front="127.0.0.1:$FERROCAST_FRONT_PORT"
"${compose[@]}" down --remove-orphans -t 5 >/dev/null 2>&1 || true
t=$(date +%s)
log "docker-compose -f deploy/compose.yaml up -d --scale edge=3"
"${compose[@]}" up -d --no-build --scale edge=3 >"$work/up.log" 2>&1 ||
  { cat "$work/up.log"; fail "docker-compose up"; }
for _ in $(seq 120); do curl -fsS -o /dev/null "http://$origin/healthz" 2>/dev/null && break; sleep 0.5; done
curl -fsS -o /dev/null "http://$origin/healthz" || { "${compose[@]}" logs --tail 20; fail "the origin container never answered /healthz"; }
up_s=$(since "$t")
log "up in ${up_s}s: $(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}}' | sort | tr '\n' ' ')"
summary+=("up ${up_s}s")

# --- 5. publish, play through the front and each edge -----------------------------------------
ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=640x360:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -c:v libx264 -preset veryfast \
  -tune zerolatency -g 30 -pix_fmt yuv420p -b:v 800k -c:a aac -b:a 96k -t 900 \
  -f flv "rtmp://127.0.0.1:$FERROCAST_RTMP_PORT/live/$key" </dev/null >"$work/publish.log" 2>&1 &
pub_pid=$!

edge_ips() {
  podman ps --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=edge" --format '{{.ID}}' |
    xargs -r podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' | sort
}

# Python does the HTTP checks: CHECK EDGES... prints one JSON line; exit 1 when a check failed.
check() {
  python3 - "$@" <<'EOF'
import hashlib, json, re, sys, threading, time, urllib.request
mode, origin, front, admin, want = sys.argv[1:6]
edges = sys.argv[6:]
want = int(want)
out = {"errors": []}
def get(url, timeout=15, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - t
    except OSError as e:
        return 0, str(e).encode(), time.monotonic() - t
def wait(what, fn, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.5)
    out["errors"].append(f"timed out waiting for {what}")
    return None
def metric(name):
    st, body, _ = get(f"http://{origin}/metrics")
    for line in body.decode(errors="replace").splitlines() if st == 200 else []:
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
hosts = {"front": front, **{f"edge{i + 1}": f"{ip}:8081" for i, ip in enumerate(edges)}}
media = lambda h: f"http://{h}/live/main/source/index.m3u8"
# Every host serves the stream (the front retried: its resolver may still hold a removed edge).
for name, h in hosts.items():
    if not wait(f"{name} playlist", lambda: get(media(h))[0] == 200 and b"#EXT-X-PART:" in get(media(h))[1]):
        print(json.dumps(out)); sys.exit(1)
st, body, _ = get(f"http://{front}/live/main/index.m3u8")
if st != 200 or b"#EXT-X-STREAM-INF" not in body:
    out["errors"].append(f"front multivariant playlist: {st}")
text = get(media(front))[1].decode()
for tag in ("#EXT-X-PART-INF", "CAN-BLOCK-RELOAD=YES", "#EXT-X-PRELOAD-HINT", "#EXT-X-PROGRAM-DATE-TIME", "#EXT-X-MAP"):
    if tag not in text:
        out["errors"].append(f"front playlist lacks {tag}")
# A complete part (not the last: it may still be growing), the init segment, and a blocking
# reload for the next part, from every host: all 200, the bytes identical everywhere.
parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', text)
init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)
msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
nsegs = len(re.findall(r"^#EXTINF", text, re.M))
digests = {}
block = {}
for name, h in hosts.items():
    for uri in (init, parts[-2]):
        st, body, _ = get(f"http://{h}/live/main/source/{uri}")
        if st != 200 or not body:
            out["errors"].append(f"{name} {uri}: {st}")
        digests.setdefault(uri, {})[name] = hashlib.sha256(body).hexdigest()[:16]
# Blocking reloads for the next segment's first part, from every host at once: each is held
# until that part exists, then answered 200.
def blocked(name, h):
    st, body, took = get(f"{media(h)}?_HLS_msn={msn + nsegs + 1}&_HLS_part=0", timeout=30)
    block[name] = round(took, 2)
    if st != 200 or b"#EXT-X-PART:" not in body:
        out["errors"].append(f"{name} blocking reload: {st}")
waiters = [threading.Thread(target=blocked, args=item) for item in hosts.items()]
for t in waiters: t.start()
for t in waiters: t.join()
for uri, d in digests.items():
    if len(set(d.values())) != 1:
        out["errors"].append(f"{uri} differs across hosts: {d}")
out["identical"] = {uri: len(d) for uri, d in digests.items() if len(set(d.values())) == 1}
out["blocking_reload_s"] = block
# Viewers: 4 on each edge and 4 through the front, each with its own session id, for 8 s.
stop = time.monotonic() + 8
served = {name: [0, 0] for name in hosts}  # host → [200, anything else]
def viewer(name, h, sid):
    while time.monotonic() < stop:
        st, body, _ = get(f"{media(h)}?fcsid={sid}", timeout=5)
        served[name][0 if st == 200 and b"#EXT-X-PART:" in body else 1] += 1
        time.sleep(0.5)
tag = re.sub(r"\W", "", mode)
threads = [threading.Thread(target=viewer, args=(name, h, f"{tag}-{name}-{i}"))
           for name, h in hosts.items() for i in range(4)]
for t in threads: t.start()
counted = wait(f"the origin to count {want} edges",
               lambda: metric("ferrocast_edges_reporting") == want, timeout=60)
time.sleep(3)
st, body, _ = get(f"http://{origin}/api/streams", headers={"Authorization": f"Bearer {admin}"})
per_edge = {}
try:
    def find(v):
        if isinstance(v, dict):
            if v.get("name") == "main" and isinstance(v.get("viewers"), dict):
                return v["viewers"].get("edges")
            for x in v.values():
                r = find(x)
                if r is not None: return r
        if isinstance(v, list):
            for x in v:
                r = find(x)
                if r is not None: return r
    per_edge = find(json.loads(body)) or {}
except ValueError:
    out["errors"].append(f"/api/streams: {st}")
for t in threads: t.join()
out["viewer_requests_ok_failed"] = served
for name, (ok, failed) in served.items():
    if failed or not ok:
        out["errors"].append(f"viewers on {name}: {failed} of {ok + failed} playlist requests failed")
out["edges_reporting"] = metric("ferrocast_edges_reporting")
out["viewers_per_edge"] = per_edge
# Each edge's entry counts viewers per rendition.
total = lambda v: sum(v.values()) if isinstance(v, dict) else v
counts = sorted(total(v) for k, v in per_edge.items() if k != "origin")
out["summary"] = f"{int(out['edges_reporting'] or 0)} edges counted, viewers per edge {counts}"
if len([k for k in per_edge if k != "origin"]) < want:
    out["errors"].append(f"viewers counted on {len(per_edge)} edges, not {want}: {per_edge}")
print(json.dumps(out))
sys.exit(1 if out["errors"] else 0)
EOF
}

run_check() {
  local label="$1" want="$2"
  mapfile -t ips < <(edge_ips)
  [ "${#ips[@]}" -eq "$want" ] || fail "$label: ${#ips[@]} edge containers running, not $want"
  local res
  res=$(check "$label" "$origin" "$front" "$admin" "$want" "${ips[@]}") ||
    { echo "$res"; "${compose[@]}" logs --tail 10 >&2 || true; fail "$label: checks did not hold: $res"; }
  log "$label: $res"
  summary+=("$label: $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["summary"])' "$res")")
}

run_check "3 edges" 3

# --- 6. scale 3 → 1 → 3 ------------------------------------------------------------------------
t=$(date +%s)
"${compose[@]}" up -d --no-build --scale edge=1 >>"$work/up.log" 2>&1 || fail "scale to 1"
run_check "scaled to 1" 1
t=$(date +%s)
"${compose[@]}" up -d --no-build --scale edge=3 >>"$work/up.log" 2>&1 || fail "scale back to 3"
run_check "back to 3" 3
kill -0 "$pub_pid" 2>/dev/null || fail "the publisher stopped: $(tail -3 "$work/publish.log")"

# --- 7. teardown ------------------------------------------------------------------------------
kill "$pub_pid" 2>/dev/null || true
pub_pid=""
"${compose[@]}" down --remove-orphans -t 10 >>"$work/up.log" 2>&1 || fail "docker-compose down"
left=$(podman ps -aq --filter "label=com.docker.compose.project=$project" | wc -l)
nets=$(podman network ls --format '{{.Name}}' | grep -c "^${project}_" || true)
[ "$left" -eq 0 ] && [ "$nets" -eq 0 ] || fail "after down: $left containers, $nets networks left"
summary+=("teardown clean")
joined=$(printf '%s; ' "${summary[@]}")
echo "compose-test: PASS in $(since "$t_start")s — ${joined%; }"
