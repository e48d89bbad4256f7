package oci

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"path"
	"sort"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The image's fixed layout. The binaries sit together in BinDir, so that the
// entrypoint and gatehousectl are one directory listing apart.
const (
	// BinDir is where both binaries are installed.
	BinDir = "/usr/local/bin"
	// CABundlePath is where Go's crypto/x509 looks first on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// NonrootUID is the user and group the image runs as (distroless' nonroot).
	NonrootUID = 65532
)

// file is one entry of a layer: a directory when body is nil and !regular.
type file struct {
	name     string // absolute path inside the image
	mode     int64  // permission bits (and sticky) without the type
	uid, gid int
	body     []byte // nil for a directory
}

// baseFiles is the layer every platform shares: the user database, the CA
// bundle, /tmp and the directories the binaries go in. It holds no binary, so
// both platforms' manifests point at the same blob.
func baseFiles() ([]file, error) {
	ca, err := caBundle()
	if err != nil {
		return nil, err
	}
	return []file{
		{name: "/etc", mode: 0o755},
		{name: "/etc/passwd", mode: 0o644, body: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonrootUID, NonrootUID))},
		{name: "/etc/group", mode: 0o644, body: []byte(
			"root:x:0:\n" +
				"nogroup:x:65534:\n" +
				fmt.Sprintf("nonroot:x:%d:\n", NonrootUID))},
		// Go's resolver reads it: files before DNS, as glibc does by default.
		{name: "/etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "/etc/ssl", mode: 0o755},
		{name: "/etc/ssl/certs", mode: 0o755},
		{name: CABundlePath, mode: 0o644, body: ca},
		{name: "/home", mode: 0o755},
		{name: "/home/nonroot", mode: 0o700, uid: NonrootUID, gid: NonrootUID},
		{name: "/root", mode: 0o700},
		{name: "/tmp", mode: 0o1777},
		{name: "/usr", mode: 0o755},
		{name: "/usr/local", mode: 0o755},
		{name: BinDir, mode: 0o755},
	}, nil
}

// caBundle is Mozilla's root store as Go's x509roots/fallback module carries
// it (pinned in go.mod), as PEM. A root with a constraint that X.509 cannot
// express (a distrust-after date) is left out: a PEM bundle would trust it
// without the constraint, and leaving it out fails closed.
func caBundle() ([]byte, error) {
	var buf bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, fmt.Errorf("ca bundle: %w", err)
		}
	}
	if buf.Len() == 0 {
		return nil, fmt.Errorf("ca bundle: no roots")
	}
	return buf.Bytes(), nil
}

// writeTar writes files as an uncompressed tar with everything that could
// differ between two builds fixed: entries sorted by name, one modification
// time, numeric owners without names, USTAR headers.
func writeTar(w io.Writer, files []file, mtime time.Time) error {
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	tw := tar.NewWriter(w)
	for _, f := range sorted {
		hdr := &tar.Header{
			Name:    path.Clean(f.name)[1:], // relative, as layers are
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		if f.body == nil {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	return tw.Close()
}
