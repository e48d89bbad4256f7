package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs an HTTP server behind a Listener of max connections; /block
// waits until release is closed.
func serve(t *testing.T, max int, grace time.Duration, release chan struct{}) (*Listener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, Options{Max: max, ActiveGrace: grace})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				<-release
			}
			_, _ = io.WriteString(w, "ok")
		}),
		ConnState:         l.ConnState,
		ReadHeaderTimeout: time.Minute, // the listener, not a timeout, must make room
		IdleTimeout:       time.Minute,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l, inner.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a GET for path on c and reads the answer.
func roundTrip(c net.Conn, path string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// closedByServer reports whether the server has closed c.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset"))
}

func waitOpen(t *testing.T, l *Listener, want int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); l.Stats().Open != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open = %d, want %d", l.Stats().Open, want)
		}
	}
}

func TestIdleConnectionsMakeRoom(t *testing.T) {
	l, addr := serve(t, 4, time.Minute, nil)
	var idle []net.Conn
	for range 4 {
		c := dial(t, addr)
		if body, err := roundTrip(c, "/"); err != nil || body != "ok" {
			t.Fatalf("%q %v", body, err)
		}
		idle = append(idle, c)
	}
	waitOpen(t, l, 4)
	for i := range 3 {
		if body, err := roundTrip(dial(t, addr), "/probe"); err != nil || body != "ok" {
			t.Fatalf("probe %d at the cap: %q %v", i, body, err)
		}
	}
	if st := l.Stats(); st.Evicted != 3 || st.Refused != 0 || st.Open > 4 {
		t.Fatalf("stats %+v, want 3 evicted, none refused, at most 4 open", st)
	}
	if !closedByServer(idle[0]) {
		t.Error("the longest-idle connection is still open")
	}
	if closedByServer(idle[3]) {
		t.Error("the most recently idle connection was closed before older ones")
	}
}

func TestStalledHeadersMakeRoom(t *testing.T) {
	l, addr := serve(t, 4, time.Minute, nil)
	var stalled []net.Conn
	for range 10 {
		c := dial(t, addr)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Half: "); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
		time.Sleep(2 * time.Millisecond) // distinct arrival times
	}
	if body, err := roundTrip(dial(t, addr), "/probe"); err != nil || body != "ok" {
		t.Fatalf("probe behind 10 stalled headers: %q %v", body, err)
	}
	if st := l.Stats(); st.Evicted < 7 || st.Open > 4 {
		t.Fatalf("stats %+v, want at least 7 evicted and at most 4 open", st)
	}
	if !closedByServer(stalled[0]) {
		t.Error("the oldest stalled connection is still open")
	}
}

func TestBusyConnectionsRefuseThenYieldAfterGrace(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	const grace = 300 * time.Millisecond
	l, addr := serve(t, 2, grace, release)
	for range 2 {
		c := dial(t, addr)
		if _, err := io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitOpen(t, l, 2)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// Both requests are being served once the handler runs.
		l.mu.Lock()
		active := 0
		for c := range l.conns {
			if c.state == http.StateActive {
				active++
			}
		}
		l.mu.Unlock()
		if active == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the blocked requests never became active")
		}
	}
	if _, err := roundTrip(dial(t, addr), "/probe"); err == nil {
		t.Fatal("a connection was served while every slot held a fresh request")
	}
	if st := l.Stats(); st.Refused == 0 {
		t.Fatalf("stats %+v, want a refusal", st)
	}
	time.Sleep(grace + 50*time.Millisecond)
	if body, err := roundTrip(dial(t, addr), "/probe"); err != nil || body != "ok" {
		t.Fatalf("probe after the grace: %q %v", body, err)
	}
}
