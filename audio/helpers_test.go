package audio

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ffmpegT runs ffmpeg to make a test input.
func ffmpegT(t testing.TB, args ...string) {
	t.Helper()
	base := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}
	out, err := exec.Command("ffmpeg", append(base, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// toneFile writes a 440 Hz tone (amplitude 1/8) of tone seconds between lead
// and tail seconds of digital silence, encoded by the extension of name.
func toneFile(t testing.TB, dir, name string, lead, tone, tail float64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	ffmpegT(t, "-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=48000:duration=%g", tone),
		"-af", fmt.Sprintf("adelay=%d:all=1,apad=pad_dur=%g", int(lead*1000), tail),
		"-ac", "1", path)
	return path
}

// speechWAV writes a sentence spoken by espeak-ng.
func speechWAV(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "speech.wav")
	out, err := exec.Command("espeak-ng", "-w", path,
		"In the beginning God created the heaven and the earth.").CombinedOutput()
	if err != nil {
		t.Fatalf("espeak-ng: %v\n%s", err, out)
	}
	return path
}

// transcode converts src to the format of dst's extension.
func transcode(t testing.TB, src, dst string, extra ...string) string {
	t.Helper()
	ffmpegT(t, append(append([]string{"-i", src}, extra...), dst)...)
	return dst
}

// span returns where the sound is in p: from the first to past the last
// sample whose magnitude exceeds frac of the peak, in seconds.
func span(p *PCM, frac float64) (start, end float64) {
	peak := 0
	for _, s := range p.Samples {
		peak = max(peak, abs(int(s)))
	}
	limit := int(frac * float64(peak))
	first, last := -1, -1
	for i, s := range p.Samples {
		if abs(int(s)) > limit {
			if first < 0 {
				first = i
			}
			last = i + 1
		}
	}
	return float64(first) / float64(p.Rate), float64(last) / float64(p.Rate)
}

// rmsDB is the RMS level of the samples in dBFS.
func rmsDB(s []int16) float64 {
	return 10 * math.Log10(meanSquare(s)/(32768*32768))
}

func writeBytes(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
