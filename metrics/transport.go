package metrics

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryWindow: a request repeating one that failed this recently is
// counted as a retry.
const retryWindow = 10 * time.Minute

// Transport wraps next (nil: http.DefaultTransport) to count GitLab API
// requests by endpoint and status, retries, and LFS object bytes. Use it as
// the Transport of the http.Client given to the GitLab client.
func (m *Metrics) Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{m: m, next: next}
}

type transport struct {
	m    *Metrics
	next http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ep := Endpoint(req)
	key := req.Method + " " + req.URL.String()
	now := t.m.now()
	t.m.mu.Lock()
	if at, ok := t.m.failed[key]; ok {
		delete(t.m.failed, key)
		if now.Sub(at) < retryWindow {
			t.m.apiRetries.WithLabelValues(ep).Inc()
		}
	}
	t.m.mu.Unlock()

	upload := ep == "lfs object" && req.Method == http.MethodPut
	if upload && req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, add: t.m.lfsBytes.WithLabelValues("up").Add}
	}
	t.m.sent.Add(1)
	resp, err := t.next.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.m.apiRequests.WithLabelValues(ep, status).Inc()
	if err != nil || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500 {
		t.m.apiErrors.WithLabelValues(ep).Inc()
		t.m.mu.Lock()
		if len(t.m.failed) > 1000 { // bound memory if nobody ever retries
			clear(t.m.failed)
		}
		t.m.failed[key] = now
		t.m.mu.Unlock()
	}
	if err == nil && req.Method == http.MethodGet && resp.StatusCode/100 == 2 &&
		(ep == "lfs object" || (ep == "raw" && req.URL.Query().Get("lfs") == "true")) {
		resp.Body = &countingBody{ReadCloser: resp.Body, add: t.m.lfsBytes.WithLabelValues("down").Add}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	add func(float64)
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.add(float64(n))
	}
	return n, err
}

// Endpoint names a GitLab request by what it does, never by project or
// file, so the label stays small: "projects", "project", "files", "raw",
// "commits", "tree", "lfs batch", "lfs object", or the first path word of
// other API calls.
func Endpoint(req *http.Request) string {
	p := req.URL.EscapedPath()
	if strings.HasSuffix(p, "/info/lfs/objects/batch") {
		return "lfs batch"
	}
	i := strings.Index(p, "/api/v4/")
	if i < 0 {
		// Transfers go to the hrefs the batch answer names: GitLab's own
		// object routes or object storage.
		return "lfs object"
	}
	parts := strings.Split(strings.Trim(p[i+len("/api/v4/"):], "/"), "/")
	if parts[0] != "projects" {
		return parts[0]
	}
	switch {
	case len(parts) == 1:
		return "projects"
	case len(parts) == 2:
		return "project"
	case len(parts) >= 4 && parts[2] == "repository" && parts[3] == "files":
		if parts[len(parts)-1] == "raw" {
			return "raw"
		}
		return "files"
	case len(parts) >= 4 && parts[2] == "repository":
		return parts[3]
	}
	return parts[2]
}
