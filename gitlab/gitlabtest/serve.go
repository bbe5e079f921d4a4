package gitlabtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"time"
)

// serve counts the request, applies what a LandLate fault held back, and
// answers with the fault that hits it, if any.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rt, ok := parseRoute(r)
	s.mu.Lock()
	s.total++
	if ok {
		s.counts[rt.endpoint]++
	}
	held := s.late[rt.endpoint]
	delete(s.late, rt.endpoint)
	s.mu.Unlock()
	if !ok {
		writeMessage(w, http.StatusNotFound, "404 Not Found")
		return
	}
	for _, hr := range held {
		s.handle(httptest.NewRecorder(), hr, rt)
	}
	f := s.pickFault(rt.endpoint)
	if f == nil {
		s.handle(w, r, rt)
		return
	}
	switch {
	case f.LandLate:
		if hr, err := detach(r); err == nil {
			s.mu.Lock()
			s.late[rt.endpoint] = append(s.late[rt.endpoint], hr)
			s.mu.Unlock()
		}
		if !f.Drop && f.Status == 0 {
			f.Status = http.StatusBadGateway
		}
		failNow(w, f, rt.endpoint)
	case f.ApplyThenFail:
		// Applied, then the answer is slow (Latency) and lost.
		s.handle(httptest.NewRecorder(), r, rt)
		if !s.wait(r.Context(), f.Latency) {
			return
		}
		if !f.Drop && f.Status == 0 {
			f.Status = http.StatusBadGateway
		}
		failNow(w, f, rt.endpoint)
	default:
		if f.Latency > 0 {
			hr, err := detach(r)
			if err != nil {
				return
			}
			// The request goes on when the client gives up; only the end
			// of the test stops it.
			if !s.wait(context.Background(), f.Latency) {
				return
			}
			if r.Context().Err() != nil {
				s.handle(httptest.NewRecorder(), hr, rt)
				return
			}
			r = hr
		}
		switch {
		case f.CutAfter > 0:
			s.handle(&cutWriter{ResponseWriter: w, left: f.CutAfter}, r, rt)
		case f.Drop || f.Status != 0:
			failNow(w, f, rt.endpoint)
		default:
			s.handle(w, r, rt)
		}
	}
}

// detach copies a request so that it can be handled after its client left.
func detach(r *http.Request) (*http.Request, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	c := r.Clone(context.WithoutCancel(r.Context()))
	c.Body = io.NopCloser(bytes.NewReader(body))
	return c, nil
}

// wait sleeps d unless ctx ends or the server shuts down first.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.quit:
		return false
	}
}
