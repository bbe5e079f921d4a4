package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"gpu-worker/gpu"
	"gpu-worker/metrics"
	"gpu-worker/ops"
)

func writeQueueJSON(w io.Writer, rep metrics.QueueReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeQueueTable prints the queue for a person: one line per job, runnable
// ones first, then the counts a scaler reads.
func writeQueueTable(w io.Writer, rep metrics.QueueReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tJOB\tTYPE/MODE\tMODEL\tSIZE\tMEMORY\tSTATE\tAGE\tWORKER\tREASON")
	for _, j := range rep.Jobs {
		worker := j.WorkerID
		if worker == "" {
			worker = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%.1f GiB\t%s\t%s\t%s\t%s\n", j.Project, j.ID, j.Type, j.Mode, j.Model, j.Size,
			float64(j.MemoryEstimateBytes)/float64(gpu.GiB), j.State, ops.Age(time.Duration(j.AgeSeconds*float64(time.Second))),
			worker, oneLine(j.Reason, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nrunnable %d, running %d; oldest runnable %s; scan took %.2fs, %d requests\n",
		rep.Runnable, rep.Running, ops.Age(time.Duration(rep.OldestRunnableAgeSeconds*float64(time.Second))),
		rep.ScanSeconds, rep.ScanRequests)
	return err
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
