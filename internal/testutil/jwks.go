package testutil

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// JWKSServer is an httptest server on loopback that serves a key set and
// whose faults a test switches on and off while a server under test fetches
// from it: an error status, a delay, any body (garbage, oversize, empty set).
type JWKSServer struct {
	*httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
	delay  time.Duration
	hangUp bool
}

// NewJWKSServer starts a JWKSServer serving body, closed when the test ends.
func NewJWKSServer(t testing.TB, body []byte) *JWKSServer {
	t.Helper()
	s := &JWKSServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *JWKSServer) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	body, status, delay, hangUp := s.body, s.status, s.delay, s.hangUp
	s.mu.Unlock()
	if hangUp {
		// Close the connection without an answer: to the client the key
		// server is unreachable.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if status != http.StatusOK {
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// SetBody changes what the server answers with status 200 from now on.
func (s *JWKSServer) SetBody(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
}

// SetStatus makes the server answer status (with a text body) instead of the
// key set; http.StatusOK restores the key set.
func (s *JWKSServer) SetStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// SetDelay makes every answer wait d first (0: answer at once).
func (s *JWKSServer) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetHangUp makes the server close every connection without answering, as
// an unreachable key server looks to a client (false: answer again).
func (s *JWKSServer) SetHangUp(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangUp = on
}

// Reset serves body with status 200 at once again, ending every fault.
func (s *JWKSServer) Reset(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status, s.delay, s.hangUp = body, http.StatusOK, 0, false
}

// Hits is the number of requests received so far.
func (s *JWKSServer) Hits() int64 { return s.hits.Load() }
