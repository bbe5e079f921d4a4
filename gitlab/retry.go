package gitlab

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"gpu-worker/project"
)

// statusError is a non-2xx answer from an endpoint the official client
// does not cover (LFS).
type statusError struct {
	op         string
	status     int
	retryAfter time.Duration
	msg        string
}

func (e *statusError) Error() string {
	if e.msg == "" {
		return e.op + ": " + strconv.Itoa(e.status) + " " + http.StatusText(e.status)
	}
	return e.op + ": " + strconv.Itoa(e.status) + " " + e.msg
}

// transient reports whether err is worth another try, and the server's
// requested wait (0 when it named none).
func transient(err error) (bool, time.Duration) {
	if err == nil || errors.Is(err, gl.ErrNotFound) || errors.Is(err, project.ErrNotFound) {
		return false, 0
	}
	var er *gl.ErrorResponse
	if errors.As(err, &er) {
		if er.Response == nil {
			return false, 0
		}
		return retryableStatus(er.Response.StatusCode), retryAfter(er.Response.Header)
	}
	var se *statusError
	if errors.As(err, &se) {
		return retryableStatus(se.status), se.retryAfter
	}
	// Anything else is the connection: refused, reset, dropped, EOF.
	return true, 0
}

func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// backoff is the wait before retry number attempt (0-based): exponential
// with full jitter in its upper half, or the server's Retry-After if longer.
func (c *Client) backoff(attempt int, server time.Duration) time.Duration {
	d := c.cfg.MinBackoff << min(attempt, 20)
	if d <= 0 || d > c.cfg.MaxBackoff {
		d = c.cfg.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	const maxServerWait = 10 * time.Minute
	return max(d, min(server, maxServerWait))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry runs an idempotent call until it succeeds, fails for good, or
// runs out of tries.
func (c *Client) retry(ctx context.Context, op string, call func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := call(ctx)
		ok, wait := transient(err)
		if !ok || attempt >= c.cfg.MaxRetries || ctx.Err() != nil {
			return err
		}
		d := c.backoff(attempt, wait)
		c.log.Debug("gitlab retry", "op", op, "attempt", attempt+1, "wait", d, "err", c.clean(err).Error())
		if serr := sleep(ctx, d); serr != nil {
			return err
		}
	}
}

// clean hides the token in err's text while keeping errors.Is/As working.
func (c *Client) clean(err error) error { return redact(err, c.cfg.Token) }

func redact(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return &redacted{err: err, token: token}
}

type redacted struct {
	err   error
	token string
}

func (r *redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.token, "[REDACTED]") }
func (r *redacted) Unwrap() error { return r.err }
