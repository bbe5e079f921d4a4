package gitlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// errStalled is the cause of a request cancelled for making no progress.
var errStalled = errors.New("request stalled")

// stallGuard cancels a request when neither its body nor its answer moves
// for idle: a total deadline would cut large LFS transfers, no deadline
// would let a silent server hold a caller (and the lease lock) forever.
type stallGuard struct {
	base http.RoundTripper
	idle time.Duration
}

func (g *stallGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	base := g.base
	if base == nil {
		base = http.DefaultTransport
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &watchdog{idle: g.idle}
	w.t = time.AfterFunc(g.idle, func() { cancel(fmt.Errorf("%w: nothing sent or received for %s", errStalled, g.idle)) })
	out := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &progressReader{rc: req.Body, w: w, ctx: ctx}
	}
	resp, err := base.RoundTrip(out)
	if err != nil {
		w.stop()
		err = stallCause(ctx, err)
		cancel(nil)
		return nil, err
	}
	w.poke()
	resp.Body = &progressReader{rc: resp.Body, w: w, ctx: ctx, done: func() { w.stop(); cancel(nil) }}
	return resp, nil
}

// stallCause names the stall when it is why err happened.
func stallCause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errStalled) {
		return fmt.Errorf("%w (%w)", c, err)
	}
	return err
}

type watchdog struct {
	mu   sync.Mutex
	t    *time.Timer
	idle time.Duration
	done bool
}

func (w *watchdog) poke() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Reset(w.idle)
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.t.Stop()
}

// progressReader pokes the watchdog on every read.
type progressReader struct {
	rc   io.ReadCloser
	w    *watchdog
	ctx  context.Context
	done func()
	once sync.Once
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.rc.Read(b)
	if n > 0 {
		p.w.poke()
	}
	if err != nil && err != io.EOF {
		err = stallCause(p.ctx, err)
	}
	return n, err
}

func (p *progressReader) Close() error {
	err := p.rc.Close()
	if p.done != nil {
		p.once.Do(p.done)
	}
	return err
}
