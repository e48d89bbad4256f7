#!/usr/bin/env bash
# k8s-binaries.sh: builds etcd and kube-apiserver for `make test-k8s` from their Go
# modules at the pinned versions below, and prints `NAME=PATH` for each binary.
#
# `go install MODULE@VERSION` refuses both modules because their go.mod files carry
# replace directives, so each is built inside a tiny wrapper module generated here
# that requires the real module (and, for Kubernetes, pins the k8s.io/* staging modules
# to the matching v0.x releases with replace directives in the wrapper's go.mod).
# Wrappers and binaries live in a cache directory outside the repository; a binary
# that already exists for the pinned version is reused.
set -euo pipefail
shopt -s inherit_errexit

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"
CACHE="${GATEHOUSE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse-k8s}"
GO="${GO:-go}"

log() { echo "k8s-binaries: $*" >&2; }

mkdir -p "$CACHE/bin"
staging="v0.${KUBERNETES_VERSION#v1.}"

# The wrappers are built with the local toolchain; never let a dependency's
# go or toolchain line trigger a toolchain download.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION"
  if [ -x "$out" ]; then echo "$out"; return; fi
  local dir="$CACHE/wrap-etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module gatehouse.local/wrap/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  log "building etcd $ETCD_VERSION in $dir"
  (cd "$dir" && "$GO" mod download go.etcd.io/etcd/server/v3 >/dev/null &&
    "$GO" build -trimpath -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3) >&2
  mv "$out.tmp" "$out"
  echo "$out"
}

build_apiserver() {
  local out="$CACHE/bin/kube-apiserver-$KUBERNETES_VERSION"
  if [ -x "$out" ]; then echo "$out"; return; fi
  local dir="$CACHE/wrap-kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$dir"
  local gomod
  gomod="$(cd "$dir" && "$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    printf 'module gatehouse.local/wrap/kubernetes\n\ngo 1.26\n\n'
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
    # Every staging module Kubernetes replaces with ./staging/src/k8s.io/NAME is
    # published as k8s.io/NAME at the matching v0.x version.
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/[a-z0-9-]*$#\1#p' "$gomod" |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    printf ')\n'
  } >"$dir/go.mod"
  log "building kube-apiserver $KUBERNETES_VERSION in $dir"
  (cd "$dir" && "$GO" build -trimpath -ldflags "-s -w" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver) >&2
  mv "$out.tmp" "$out"
  echo "$out"
}

echo "ETCD=$(build_etcd)"
echo "KUBE_APISERVER=$(build_apiserver)"
