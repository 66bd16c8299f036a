# shellcheck shell=bash
# What scripts/up, scripts/down and scripts/image share: one line per step with its time, one
# clear line when something is missing, and the pinned, checksum-verified tools in .tools/.
# Sourced, never run. Written for bash 3.2 too (macOS's /bin/bash): no associative arrays,
# no ${var,,}, whole seconds from `date +%s`.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="$root/.tools"          # git-ignored: every download and record stays in the checkout
tools_bin="$tools_dir/bin"
state_dir="$tools_dir/state"      # what `make up` did that `make down` must undo
# shellcheck source=scripts/tools.env
. "$root/scripts/tools.env"
export PATH="$tools_bin:$PATH"    # tools an earlier run installed here come first

prog="make"
log=/dev/null
in_step=0
step_started=0

# begin NAME: the command's name in messages and its log, .tools/logs/NAME.log (one run's worth).
begin() {
    prog="make $1"
    mkdir -p "$tools_bin" "$state_dir" "$tools_dir/logs" "$tools_dir/downloads"
    log="$tools_dir/logs/$1.log"
    : >"$log"
}

duration() {
    local s=$1
    if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# step "what it is doing": the line's start; ok "what it found" ends it with the time taken.
step() {
    step_started=$(date +%s)
    in_step=1
    printf '==> %s ... ' "$1"
    printf '\n==> %s\n' "$1" >>"$log"
}

ok() {
    local took=$(($(date +%s) - step_started))
    in_step=0
    printf '%s (%s)\n' "${1:-ok}" "$(duration "$took")"
}

# A step whose command talks to the user itself (pulumi up, the smoke): its line, the command's
# own output, then the line again with the time.
loud_step() {
    step_started=$(date +%s)
    printf '==> %s\n' "$1"
}

loud_done() {
    printf '==> %s (%s)\n' "$1" "$(duration $(($(date +%s) - step_started)))"
}

# die "what is missing, and how to fix it": the one line a failure ends with.
die() {
    if ((in_step)); then printf 'FAILED\n'; fi
    in_step=0
    printf '%s: %s\n' "$prog" "$1" >&2
    exit 1
}

# A command's output goes to the log; when it fails its last lines are shown before the one line.
quietly() {
    "$@" >>"$log" 2>&1
}

die_with_log() {
    if ((in_step)); then printf 'FAILED\n'; fi
    in_step=0
    printf '    %s\n' "--- last lines of ${log#"$root"/} ---" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
    die "$1"
}

# The machine, in the two spellings release archives use.
platform() {
    case "$(uname -s)" in
        Linux) os=linux ;;
        Darwin) os=darwin ;;
        *) die "this machine's OS, $(uname -s), has no pinned tool downloads: install pulumi, kind and kubectl yourself" ;;
    esac
    case "$(uname -m)" in
        x86_64 | amd64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) die "this machine's architecture, $(uname -m), has no pinned tool downloads: install pulumi, kind and kubectl yourself" ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is installed, so downloads cannot be verified: install coreutils"
    fi
}

# download URL FILE WHAT HOW-ELSE: curl's exit status names the failure
# (curl(1), EXIT CODES: 6 host not resolved, 7 no connection, 28 timeout, 35 TLS, 22 HTTP >= 400).
download() {
    local url=$1 file=$2 what=$3 fallback=$4 host status=0
    host="${url#*://}"
    host="${host%%/*}"
    command -v curl >/dev/null || die "cannot download $what: curl is not installed. Install curl (apt-get install curl), or $fallback"
    printf 'GET %s\n' "$url" >>"$log"
    curl -fsSL --retry 2 --connect-timeout 20 -o "$file.part" "$url" >>"$log" 2>&1 || status=$?
    case $status in
        0) mv "$file.part" "$file" ;;
        6 | 7 | 28 | 35 | 56)
            rm -f "$file.part"
            die "cannot download $what: no network (curl could not reach $host). Connect to the internet and run $prog again, or $fallback" ;;
        22)
            rm -f "$file.part"
            die "cannot download $what: $url answered with an HTTP error (see ${log#"$root"/}); check the version in scripts/tools.env, or $fallback" ;;
        *)
            rm -f "$file.part"
            die "cannot download $what from $url (curl exit $status, see ${log#"$root"/}); $fallback" ;;
    esac
}

# verify FILE PUBLISHED PINNED-VARIABLE WHAT: the file's SHA-256 must equal the published value,
# and the value pinned in scripts/tools.env when there is one. A file that fails is deleted.
verify() {
    local file=$1 published=$2 pinned_name=$3 what=$4 actual pinned
    pinned="${!pinned_name-}"
    actual="$(sha256_of "$file")"
    printf 'sha256 %s = %s (published %s, pinned %s)\n' "${file##*/}" "$actual" "${published:-none}" "${pinned:-none}" >>"$log"
    if [[ -z "$published" ]]; then
        rm -f "$file"
        die "refusing $what: its published checksum file lists no entry for ${file##*/}; report it, or install it yourself"
    fi
    if [[ "$actual" != "$published" ]]; then
        rm -f "$file"
        die "refusing $what: checksum mismatch (downloaded $actual, published $published). Run $prog again; if it repeats, something between you and the release rewrites downloads"
    fi
    if [[ -n "$pinned" && "$actual" != "$pinned" ]]; then
        rm -f "$file"
        die "refusing $what: checksum mismatch with $pinned_name in scripts/tools.env (downloaded $actual, pinned $pinned)"
    fi
}

# version_at_least HAVE WANT: HAVE has WANT's major version and is not older. A pre-release of
# WANT itself is older (semver), as Pulumi's own check treats it.
version_at_least() {
    local have=${1#v} want=${2#v} h1 h2 h3 w1 w2 w3 pre=""
    [[ "$have" == *-* ]] && pre=${have#*-}
    have=${have%%[-+]*}
    IFS=. read -r h1 h2 h3 <<<"$have"
    IFS=. read -r w1 w2 w3 <<<"$want"
    [[ "$h1$h2$h3" =~ ^[0-9]+$ ]] || return 1
    ((h1 == w1)) || return 1
    ((h2 > w2)) && return 0
    ((h2 < w2)) && return 1
    ((h3 > w3)) && return 0
    ((h3 < w3)) && return 1
    [[ -z "$pre" ]]
}

# --- the Pulumi CLI ---------------------------------------------------------------------------

ensure_pulumi() {
    local found have
    step "Pulumi CLI (${PULUMI_VERSION} or a later 3.x)"
    if found="$(command -v pulumi)"; then
        have="$(pulumi version 2>>"$log" || true)"
        if version_at_least "$have" "$PULUMI_VERSION"; then
            ok "using $found $have"
            return
        fi
        printf '%s is %s: not supported, installing %s into .tools\n' "$found" "${have:-unknown}" "$PULUMI_VERSION" >>"$log"
    fi
    install_pulumi
    have="$("$tools_bin/pulumi" version 2>>"$log" || true)"
    ok "installed ${have:-pulumi $PULUMI_VERSION} into .tools/bin${found:+ (the one on PATH, $found, is too old)}"
}

install_pulumi() {
    local pulumi_arch archive checksums published dest
    platform
    pulumi_arch=$arch
    [[ $arch == amd64 ]] && pulumi_arch=x64
    archive="pulumi-v${PULUMI_VERSION}-${os}-${pulumi_arch}.tar.gz"
    checksums="pulumi-${PULUMI_VERSION}-checksums.txt"
    local fallback="install Pulumi ${PULUMI_VERSION} or later yourself (https://www.pulumi.com/docs/install/)"
    download "$PULUMI_BASE_URL/$checksums" "$tools_dir/downloads/$checksums" "Pulumi ${PULUMI_VERSION}" "$fallback"
    download "$PULUMI_BASE_URL/$archive" "$tools_dir/downloads/$archive" "Pulumi ${PULUMI_VERSION}" "$fallback"
    published="$(awk -v name="$archive" '$2 == name { print $1 }' "$tools_dir/downloads/$checksums")"
    verify "$tools_dir/downloads/$archive" "$published" "PULUMI_SHA256_${os}_${arch}" "the Pulumi CLI download"
    dest="$tools_dir/pulumi-${PULUMI_VERSION}"
    rm -rf "$dest.part" && mkdir -p "$dest.part"
    tar -xzf "$tools_dir/downloads/$archive" -C "$dest.part" || die "the Pulumi archive $archive does not unpack (see ${log#"$root"/})"
    [[ -x "$dest.part/pulumi/pulumi" ]] || die "the Pulumi archive $archive has no pulumi/pulumi inside"
    rm -rf "$dest" && mv "$dest.part" "$dest"
    # Every binary of the release (the CLI and its language hosts) next to each other on PATH.
    local binary
    for binary in "$dest"/pulumi/*; do
        ln -sf "$binary" "$tools_bin/${binary##*/}"
    done
    rm -f "$tools_dir/downloads/$archive"
}

# --- kubectl and kind: single binaries with a published checksum beside them -----------------

ensure_kubectl() {
    local found
    [[ -z "${kubectl_ready-}" ]] || return 0
    kubectl_ready=1
    step "kubectl"
    if found="$(command -v kubectl)"; then
        ok "using $found"
        return
    fi
    platform
    local url="$KUBECTL_BASE_URL/v${KUBECTL_VERSION}/bin/$os/$arch/kubectl"
    install_binary kubectl "$url" "$url.sha256" "KUBECTL_SHA256_${os}_${arch}" \
        "install kubectl yourself (https://kubernetes.io/docs/tasks/tools/)"
    ok "installed kubectl v${KUBECTL_VERSION} into .tools/bin"
}

ensure_kind() {
    local found
    [[ -z "${kind_ready-}" ]] || return 0
    kind_ready=1
    step "kind"
    if found="$(command -v kind)"; then
        ok "using $found"
        return
    fi
    platform
    local url="$KIND_BASE_URL/v${KIND_VERSION}/kind-$os-$arch"
    install_binary kind "$url" "$url.sha256sum" "KIND_SHA256_${os}_${arch}" \
        "install kind yourself (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    ok "installed kind v${KIND_VERSION} into .tools/bin"
}

# install_binary NAME URL CHECKSUM-URL PINNED-VARIABLE HOW-ELSE
install_binary() {
    local name=$1 url=$2 sum_url=$3 pinned_name=$4 fallback=$5 file published
    file="$tools_dir/downloads/$name"
    download "$sum_url" "$file.sha256" "$name" "$fallback"
    download "$url" "$file" "$name" "$fallback"
    published="$(cut -d' ' -f1 <"$file.sha256" | head -n 1 | tr -d '\r\n')"
    verify "$file" "$published" "$pinned_name" "the $name download"
    chmod 0755 "$file"
    mv "$file" "$tools_bin/$name"
}

# --- Docker -----------------------------------------------------------------------------------

# need_docker_engine WHY: the Docker CLI is there and reaches an engine.
need_docker_engine() {
    local why=$1 answer
    command -v docker >/dev/null ||
        die "no Docker: the docker command is not installed ($why). Install Docker (https://docs.docker.com/get-docker/) and run $prog again"
    if ! answer="$(docker info --format '{{.ServerVersion}}' 2>&1)"; then
        printf 'docker info: %s\n' "$answer" >>"$log"
        die "no Docker engine ($why): docker info says \"$(printf '%s' "$answer" | grep -v '^$' | tail -n 1)\". Start Docker (Docker Desktop, or: sudo systemctl start docker) and run $prog again"
    fi
}

# build_wrapper_image IMAGE: wrapper/Dockerfile, as the release workflow builds it.
build_wrapper_image() {
    quietly docker build -f "$root/wrapper/Dockerfile" -t "$1" "$root" ||
        die_with_log "docker build of $1 failed (above; whole log in ${log#"$root"/})"
}

# --- sizes ------------------------------------------------------------------------------------

# bytes QUANTITY: a Kubernetes memory quantity (16314052Ki, 6Gi, 8G, 512M, 1073741824) in bytes.
bytes() {
    local q=$1
    case $q in
        *Ki) echo $((${q%Ki} * 1024)) ;;
        *Mi) echo $((${q%Mi} * 1024 * 1024)) ;;
        *Gi) echo $((${q%Gi} * 1024 * 1024 * 1024)) ;;
        *Ti) echo $((${q%Ti} * 1024 * 1024 * 1024 * 1024)) ;;
        *k) echo $((${q%k} * 1000)) ;;
        *M) echo $((${q%M} * 1000 * 1000)) ;;
        *G) echo $((${q%G} * 1000 * 1000 * 1000)) ;;
        *) echo $((q)) ;;
    esac
}

gib() {
    awk -v b="$1" 'BEGIN { printf "%.1f GiB", b / 1073741824 }'
}
