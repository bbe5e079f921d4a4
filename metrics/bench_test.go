package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkTransport measures what counting adds to a GitLab request.
func BenchmarkTransport(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
	defer srv.Close()
	for _, counted := range []bool{false, true} {
		name := "plain"
		c := &http.Client{}
		if counted {
			name = "counted"
			c.Transport = New(Options{}).Transport(nil)
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				resp, err := c.Get(srv.URL + "/api/v4/projects/7/repository/files/gpu_jobs%2Fmanifest.yaml?ref=main")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
