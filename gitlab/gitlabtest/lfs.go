package gitlabtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"gpu-worker/project"
)

const lfsMediaType = "application/vnd.git-lfs+json"

func validOID(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// storeObject writes content to the object store and returns its pointer.
func (s *Server) storeObject(content []byte) project.Pointer {
	sum := sha256.Sum256(content)
	p := project.Pointer{OID: hex.EncodeToString(sum[:]), Size: int64(len(content))}
	if err := os.WriteFile(s.objectPath(p.OID), content, 0o644); err != nil {
		panic(err)
	}
	return p
}

func (s *Server) objectSize(oid string) (int64, bool) {
	if !validOID(oid) {
		return 0, false
	}
	st, err := os.Stat(s.objectPath(oid))
	if err != nil {
		return 0, false
	}
	return st.Size(), true
}

type batchObject struct {
	OID     string                 `json:"oid"`
	Size    int64                  `json:"size"`
	Actions map[string]batchAction `json:"actions,omitempty"`
	Error   *batchError            `json:"error,omitempty"`
}

type batchAction struct {
	Href      string            `json:"href"`
	Header    map[string]string `json:"header,omitempty"`
	ExpiresIn int               `json:"expires_in,omitempty"`
}

type batchError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func lfsError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", lfsMediaType)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// handleBatch answers POST <project>.git/info/lfs/objects/batch.
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request, p *Project) {
	var req struct {
		Operation string        `json:"operation"`
		Transfers []string      `json:"transfers"`
		Objects   []batchObject `json:"objects"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		lfsError(w, http.StatusUnprocessableEntity, "Unprocessable Entity")
		return
	}
	need := lfsRead
	if req.Operation == "upload" {
		need = lfsWrite
	} else if req.Operation != "download" {
		lfsError(w, http.StatusUnprocessableEntity, "Unprocessable Entity")
		return
	}
	if !s.authorize(w, r, need) {
		return
	}
	_, pass, _ := r.BasicAuth()
	base := s.URL() + "/" + p.path + ".git/gitlab-lfs/objects/"
	out := make([]batchObject, 0, len(req.Objects))
	for _, o := range req.Objects {
		res := batchObject{OID: o.OID, Size: o.Size}
		size, have := s.objectSize(o.OID)
		href := fmt.Sprintf("%s%s/%d", base, o.OID, o.Size)
		switch {
		case !validOID(o.OID) || o.Size < 0:
			res.Error = &batchError{Code: 422, Message: "Validation error"}
		case req.Operation == "upload" && have && size == o.Size:
			// Already stored: no actions.
		case req.Operation == "upload":
			res.Actions = map[string]batchAction{"upload": {
				Href: href,
				Header: map[string]string{
					"Authorization":     basicHeader(pass),
					"Content-Type":      "application/octet-stream",
					"Transfer-Encoding": "chunked",
				},
				ExpiresIn: 3600,
			}}
		case !have:
			res.Error = &batchError{Code: 404, Message: "Object does not exist on the server or you don't have permissions to access it"}
		default:
			res.Actions = map[string]batchAction{"download": {
				Href:      href,
				Header:    map[string]string{"Authorization": basicHeader(pass)},
				ExpiresIn: 3600,
			}}
		}
		out = append(out, res)
	}
	w.Header().Set("Content-Type", lfsMediaType)
	json.NewEncoder(w).Encode(map[string]any{"transfer": "basic", "objects": out})
}

// handleObject answers PUT/GET <project>.git/gitlab-lfs/objects/<oid>/<size>.
func (s *Server) handleObject(w http.ResponseWriter, r *http.Request, oid, sizeText string) {
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || !validOID(oid) {
		lfsError(w, http.StatusNotFound, "Not found")
		return
	}
	if r.Method == http.MethodGet {
		if !s.authorize(w, r, lfsRead) {
			return
		}
		f, err := os.Open(s.objectPath(oid))
		if err != nil {
			lfsError(w, http.StatusNotFound, "Not found")
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Type", "application/octet-stream")
		// ServeContent gives Range support, which clients use to resume.
		http.ServeContent(w, r, "", st.ModTime(), f)
		return
	}
	if !s.authorize(w, r, lfsWrite) {
		return
	}
	tmp, err := os.CreateTemp(s.lfsDir, ".upload-*")
	if err != nil {
		lfsError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r.Body)
	if err != nil {
		return // the client went away
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != oid {
		lfsError(w, http.StatusUnprocessableEntity, "Unprocessable Entity")
		return
	}
	if err := tmp.Close(); err != nil {
		lfsError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if err := os.Rename(tmp.Name(), s.objectPath(oid)); err != nil {
		lfsError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}
