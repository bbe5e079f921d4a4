package deploy

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"gpu-worker/gitlab/gitlabtest"
	"gpu-worker/manifest"
)

// runnableOnMetrics reads gpu_worker_jobs_runnable summed over its series
// from the observer's /metrics.
func runnableOnMetrics(b *testing.B, addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "gpu_worker_jobs_runnable{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			b.Fatalf("bad line %q", line)
		}
		sum += v
	}
	return sum
}

// BenchmarkCommitToMetric: seconds from a manifest commit to the runnable
// count rising, on the observer's /metrics and in Prometheus (scraping
// every second), with `gpu-worker observe --loop-interval 1` watching 100
// projects. Even runs queue into projects idle for two hours, odd ones into
// one active within the hour; each commit comes at a random moment of the
// observer's interval.
func BenchmarkCommitToMetric(b *testing.B) {
	bin := buildBinary(b)
	srv := gitlabtest.New(b)
	for i := 0; i < 100; i++ {
		path := fmt.Sprintf("team/p%03d", i)
		srv.CreateProject(path)
		srv.UserCommit(b, path, "manifest", map[string][]byte{manifest.Path: []byte("version: 1\njobs: []\n")})
		if i < 99 {
			srv.Project(path).SetLastActivity(time.Now().Add(-2 * time.Hour))
		}
	}
	observer := startObserver(b, bin, srv)
	prom := startPrometheus(b, map[string]string{"observer": observer})
	query := "sum(max by (job_type, model) (gpu_worker_jobs_runnable))"
	prom.waitFor(b, query, 30*time.Second, func(s []sample) error { return equals(0)(s) })
	// Even commits add a job to an idle project of their own, odd ones
	// one more job to the active project: each raises the count by one.
	active := "version: 1\njobs:\n"
	var toMetric, toProm [2]time.Duration
	var worstMetric, worstProm time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(1500*time.Millisecond + time.Duration(i)*137*time.Millisecond%time.Second)
		id := fmt.Sprintf("bench%d", i)
		job := "  - {job_id: " + id + ", job_type: tts, mode: training, model: {type: StableTTS}}\n"
		proj, content := fmt.Sprintf("team/p%03d", i/2), "version: 1\njobs:\n"+job
		if i%2 == 1 {
			active += job
			proj, content = "team/p099", active
		}
		if i/2 >= 99 {
			b.Fatal("more runs than idle projects")
		}
		start := time.Now()
		srv.UserCommit(b, proj, "queue", map[string][]byte{manifest.Path: []byte(content)})
		var dm, dp time.Duration
		for deadline := time.Now().Add(30 * time.Second); dm == 0 || dp == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("job %s in %s not counted after 30s", id, proj)
			}
			if dm == 0 && runnableOnMetrics(b, observer) >= float64(i+1) {
				dm = time.Since(start)
			}
			if dp == 0 {
				if s, err := prom.query(query); err == nil && len(s) == 1 && s[0].value >= float64(i+1) {
					dp = time.Since(start)
				}
			}
		}
		toMetric[i%2] += dm
		toProm[i%2] += dp
		worstMetric, worstProm = max(worstMetric, dm), max(worstProm, dp)
	}
	b.StopTimer()
	halves := [2]float64{float64((b.N + 1) / 2), float64(b.N / 2)}
	b.ReportMetric(toMetric[0].Seconds()/max(halves[0], 1), "s/metric-idle-project")
	b.ReportMetric(toMetric[1].Seconds()/max(halves[1], 1), "s/metric-active-project")
	b.ReportMetric(worstMetric.Seconds(), "s/worst-metric")
	b.ReportMetric(toProm[0].Seconds()/max(halves[0], 1), "s/prometheus-idle-project")
	b.ReportMetric(toProm[1].Seconds()/max(halves[1], 1), "s/prometheus-active-project")
	b.ReportMetric(worstProm.Seconds(), "s/worst-prometheus")
}
