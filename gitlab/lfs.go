package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"gpu-worker/project"
)

const lfsMediaType = "application/vnd.git-lfs+json"

type lfsAction struct {
	Href   string            `json:"href"`
	Header map[string]string `json:"header"`
}

type lfsObject struct {
	OID     string               `json:"oid"`
	Size    int64                `json:"size"`
	Actions map[string]lfsAction `json:"actions"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// batch asks the LFS server what to do with one object.
func (p *Project) batch(ctx context.Context, op string, ptr project.Pointer) (*lfsObject, error) {
	body, _ := json.Marshal(map[string]any{
		"operation": op,
		"transfers": []string{"basic"},
		"objects":   []map[string]any{{"oid": ptr.OID, "size": ptr.Size}},
	})
	url := strings.TrimSuffix(p.repoURL, "/") + "/info/lfs/objects/batch"
	var obj *lfsObject
	err := p.c.retry(ctx, "lfs batch", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Accept", lfsMediaType)
		req.Header.Set("Content-Type", lfsMediaType)
		req.SetBasicAuth("oauth2", p.c.cfg.Token)
		resp, err := p.c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return httpFailure("lfs batch", resp)
		}
		var out struct {
			Objects []lfsObject `json:"objects"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return fmt.Errorf("lfs batch answer: %w", err)
		}
		if len(out.Objects) != 1 || out.Objects[0].OID != ptr.OID {
			return errors.New("lfs batch answer: object missing")
		}
		obj = &out.Objects[0]
		return nil
	})
	if err != nil {
		return nil, p.c.clean(err)
	}
	if obj.Error != nil {
		if obj.Error.Code == http.StatusNotFound || obj.Error.Code == http.StatusGone {
			return nil, fmt.Errorf("lfs object %s: %w", short(ptr.OID), project.ErrNotFound)
		}
		return nil, fmt.Errorf("lfs object %s: %d %s", short(ptr.OID), obj.Error.Code, obj.Error.Message)
	}
	return obj, nil
}

// httpFailure turns a non-2xx answer into a statusError (body trimmed).
func httpFailure(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	var msg struct {
		Message string `json:"message"`
	}
	json.Unmarshal(b, &msg)
	return &statusError{op: op, status: resp.StatusCode, retryAfter: retryAfter(resp.Header), msg: msg.Message}
}

func short(oid string) string {
	if len(oid) > 12 {
		return oid[:12]
	}
	return oid
}

// PutLFS uploads the file at src unless the server already has it.
func (p *Project) PutLFS(ctx context.Context, src string) (project.Pointer, error) {
	ptr, err := project.HashFile(src)
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put lfs: %w", err)
	}
	obj, err := p.batch(ctx, "upload", ptr)
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put lfs: %w", err)
	}
	up, ok := obj.Actions["upload"]
	if !ok {
		p.c.log.Debug("lfs object already stored", "project", p.path, "oid", short(ptr.OID))
		return ptr, nil
	}
	err = p.c.retry(ctx, "lfs upload", func(ctx context.Context) error {
		return p.upload(ctx, up, src, ptr)
	})
	if err != nil {
		return project.Pointer{}, fmt.Errorf("put lfs %s: %w", short(ptr.OID), p.c.clean(err))
	}
	if v, ok := obj.Actions["verify"]; ok {
		if err := p.verify(ctx, v, ptr); err != nil {
			return project.Pointer{}, fmt.Errorf("verify lfs %s: %w", short(ptr.OID), p.c.clean(err))
		}
	}
	return ptr, nil
}

// upload streams the file with a Content-Length: GitLab's header asks for
// chunked encoding, which some proxies refuse.
func (p *Project) upload(ctx context.Context, a lfsAction, src string, ptr project.Pointer) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, a.Href, f)
	if err != nil {
		return err
	}
	for k, v := range a.Header {
		if !strings.EqualFold(k, "Transfer-Encoding") && !strings.EqualFold(k, "Content-Length") {
			req.Header.Set(k, v)
		}
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.ContentLength = ptr.Size
	if ptr.Size == 0 {
		req.Body = http.NoBody
	}
	resp, err := p.c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return httpFailure("lfs upload", resp)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

func (p *Project) verify(ctx context.Context, a lfsAction, ptr project.Pointer) error {
	body, _ := json.Marshal(map[string]any{"oid": ptr.OID, "size": ptr.Size})
	return p.c.retry(ctx, "lfs verify", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Href, bytes.NewReader(body))
		if err != nil {
			return err
		}
		for k, v := range a.Header {
			req.Header.Set(k, v)
		}
		req.Header.Set("Content-Type", lfsMediaType)
		req.Header.Set("Accept", lfsMediaType)
		resp, err := p.c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return httpFailure("lfs verify", resp)
		}
		return nil
	})
}

// GetLFS downloads the object behind ptr into dst, verified, atomically.
// A connection lost mid-body resumes with a Range request.
func (p *Project) GetLFS(ctx context.Context, ptr project.Pointer, dst string) error {
	obj, err := p.batch(ctx, "download", ptr)
	if err != nil {
		return fmt.Errorf("get lfs: %w", err)
	}
	dl, ok := obj.Actions["download"]
	if !ok {
		return fmt.Errorf("get lfs %s: no download action", short(ptr.OID))
	}
	body := &resumingBody{ctx: ctx, p: p, action: dl}
	defer body.Close()
	if err := project.WriteVerified(body, ptr, dst); err != nil {
		return fmt.Errorf("get lfs: %w", p.c.clean(err))
	}
	return nil
}

// resumingBody reads an object, reopening at the current offset after a
// transient failure, within the client's retry budget.
type resumingBody struct {
	ctx     context.Context
	p       *Project
	action  lfsAction
	off     int64
	body    io.ReadCloser
	retries int
}

func (r *resumingBody) Read(b []byte) (int, error) {
	for {
		if r.body == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(b)
		r.off += int64(n)
		if err == nil || err == io.EOF || n > 0 {
			if err != nil && err != io.EOF {
				r.drop()
				err = nil
			}
			return n, err
		}
		r.drop()
		if ok, _ := transient(err); !ok || r.ctx.Err() != nil || r.retries >= r.p.c.cfg.MaxRetries {
			return 0, err
		}
		r.p.c.log.Debug("lfs download resumes", "offset", r.off, "err", r.p.c.clean(err).Error())
		if err := sleep(r.ctx, r.p.c.backoff(r.retries, 0)); err != nil {
			return 0, err
		}
		r.retries++
	}
}

func (r *resumingBody) drop() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

func (r *resumingBody) Close() error {
	r.drop()
	return nil
}

// open issues the GET (from r.off) under the client's retry policy.
func (r *resumingBody) open() error {
	return r.p.c.retry(r.ctx, "lfs download", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.action.Href, nil)
		if err != nil {
			return err
		}
		for k, v := range r.action.Header {
			req.Header.Set(k, v)
		}
		if r.off > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-")
		}
		resp, err := r.p.c.http.Do(req)
		if err != nil {
			return err
		}
		switch {
		case resp.StatusCode == http.StatusPartialContent && r.off > 0:
			if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(r.off, 10)+"-") {
				resp.Body.Close()
				return errors.New("lfs download: server resumed at the wrong offset")
			}
		case resp.StatusCode == http.StatusOK:
			// The server ignored Range: skip what we already have.
			if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
				resp.Body.Close()
				return err
			}
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			return project.ErrNotFound
		default:
			defer resp.Body.Close()
			return httpFailure("lfs download", resp)
		}
		r.body = resp.Body
		return nil
	})
}
